"""Speed and memory of `lowbudget train` itself at real Stable Diffusion scale.

Speed and memory do not depend on the weights' values, so SD-1.5- and SD-2.1-shaped models
with random weights (written once to the cache) stand in for real checkpoints. Each row runs
the real command twice in fresh processes, for 2 and for 7 steps (``--steps 2,7``), and reports

    seconds per step = (wall time of the 7-step run - wall time of the 2-step run) / 5

-- the method behind the published reference figure -- plus lowbudget's own median step
time, the peak memory of the 7-step process (peak RSS on a CPU; peak allocated CUDA memory on
a GPU) and the start-up time to the first step. The floor is the U-Net forward + backward
alone, measured in-process on the same shapes.

    python benchmarks/train_speed.py --rows like-for-like            # the comparison row + floor
    python benchmarks/train_speed.py --rows all --write              # every CPU row; writes RESULTS.md
    python benchmarks/train_speed.py --rows gpu --steps 5,45         # the CUDA rows (fp16 / bf16, 8 GB budget)
    python benchmarks/train_speed.py --rows sdxl-gpu --steps 3,13 --no-floor   # SDXL at 1024 px (12 GB goal)

Rows run one at a time; nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_RECIPE = "recipes/bench/sd15-ti-16.toml"


@dataclass
class Row:
    name: str
    shape: str = "sd15"
    overrides: dict = field(default_factory=dict)
    resolution: int = 512
    batch: int = 1
    groups: tuple[str, ...] = ("all",)


def _rows() -> list[Row]:
    lora_kv = {"method.kind": "lora", "method.tokens": [], "data.templates": ["a chest x-ray"]}
    lora_all = lora_kv | {"method.lora.preset": "attention"}
    pivotal = {"method.kind": "ti+lora"}
    rows = [
        Row("TI 16 vectors (like-for-like)", groups=("all", "like-for-like")),
        Row("TI 16, gradient checkpointing", overrides={"model.gradient_checkpointing": True}, groups=("all", "like-for-like")),
        Row("TI 64 vectors", overrides={"method.tokens": [{"name": "<chest-bench>", "init": "chest", "n_vectors": 64}]}),
        Row("LoRA r4 cross-attn K/V", overrides=lora_kv),
        Row("LoRA r4 all attention", overrides=lora_all),
        Row("TI 16 + LoRA r4 K/V", overrides=pivotal),
        Row("TI 16, bf16", overrides={"model.precision": "bf16"}),
        Row("TI 16 at 256 px", resolution=256, groups=("all", "growth")),
        Row("TI 16 at 768 px", resolution=768, groups=("all", "growth")),
        Row("TI 16, batch 2", batch=2, groups=("all", "growth")),
        Row("TI 16, batch 4", batch=4, groups=("all", "growth")),
        Row("TI 16 on SD 2.1 shape", shape="sd21", overrides={"model.family": "sd2"}),
    ]
    # A consumer card (8 GB): mixed precision, with and without gradient checkpointing.
    ti64 = {"method.tokens": [{"name": "<chest-bench>", "init": "chest", "n_vectors": 64}]}
    ckpt = {"model.gradient_checkpointing": True}
    gpu = [Row("TI 16 vectors, fp32 (like-for-like recipe)", groups=("gpu",))]
    for precision in ("fp16", "bf16"):
        mixed = {"model.precision": precision}
        gpu += [Row(f"TI 16, {precision}", overrides=mixed),
                Row(f"TI 64, {precision}", overrides=ti64 | mixed),
                Row(f"TI 64, {precision}, gradient checkpointing", overrides=ti64 | mixed | ckpt),
                Row(f"LoRA r4 cross-attn K/V, {precision}", overrides=lora_kv | mixed),
                Row(f"LoRA r4 cross-attn K/V, {precision}, gradient checkpointing", overrides=lora_kv | mixed | ckpt)]
    # SDXL at 1024 px: the goal is a 64-vector token in 12 GB with gradient checkpointing. The
    # random SDXL-shaped folder is ~14 GB in fp32 (written once).
    xl = {"model.family": "sdxl"}
    sdxl = [Row("SDXL TI 64, bf16, gradient checkpointing", overrides=xl | ti64 | {"model.precision": "bf16"} | ckpt),
            Row("SDXL TI 64, fp16, gradient checkpointing", overrides=xl | ti64 | {"model.precision": "fp16"} | ckpt),
            Row("SDXL TI 64, bf16", overrides=xl | ti64 | {"model.precision": "bf16"}),
            Row("SDXL LoRA r4 cross-attn K/V, bf16, gradient checkpointing",
                overrides=xl | lora_kv | {"model.precision": "bf16"} | ckpt)]
    return (rows + [replace(row, groups=("gpu",)) for row in gpu]
            + [replace(row, shape="sdxl", resolution=1024, groups=("sdxl-gpu",)) for row in sdxl])


def _cache() -> Path:
    from lowbudget.models.embedded import cache_dir

    return cache_dir() / "bench"


def build_base(shape: str) -> Path:
    """A random-weight diffusers folder of the given shape, written once."""
    from lowbudget.models.architectures import write_base_folder

    path = _cache() / f"{shape}-random"
    if not (path / "model_index.json").is_file():
        print(f"writing {shape}-shaped random model to {path} (once)", file=sys.stderr)
        tmp = path.with_name(path.name + ".tmp")
        write_base_folder(tmp, shape, seed=0)
        tmp.rename(path)
    return path


def make_data(n: int, resolution: int) -> Path:
    from lowbudget.phantoms import write_chest_phantoms

    folder = _cache() / f"data-{n}-{resolution}"
    if not (folder / "metadata.jsonl").is_file():
        write_chest_phantoms(folder, n=n, size=resolution, seed=0)  # metadata.jsonl last: the folder is complete
    return folder


def run_train(row: Row, steps: int, base: Path, data: Path) -> dict:
    """One whole `lowbudget train` process; returns wall time, its own figures and peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["train", BENCH_RECIPE, "--base", str(base), "--data", str(data), "--max-steps", str(steps),
                "--output", str(Path(tmp) / "out"), "--quiet", "--set", "data.captions=templates",
                "--set", f"data.resolution={row.resolution}", "--set", f"optim.batch_size={row.batch}"]
        for key, value in row.overrides.items():
            args += ["--set", f"{key}={_toml(value)}"]
        env = os.environ | {"LOWBUDGET_CACHE": str(Path(tmp) / "cache")}  # no latent cache from earlier runs
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{row.name}: lowbudget train failed:\n{proc.stderr[-2000:]}")
    figures = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("BENCH "))[6:])
    return {"wall": wall, **figures}


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return _toml_inline(value)
    return json.dumps(value) if isinstance(value, str) else str(value)


def _toml_inline(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_inline(v) if isinstance(v, (list, dict)) else _toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"


def child(argv: list[str]) -> None:
    """Run the CLI in this process, then report what it cost."""
    import torch

    import lowbudget.training as training
    from lowbudget.cli import main

    figures = {}
    real_train = training.train

    def timed(*a, **kw):
        result = real_train(*a, **kw)
        figures.update(median_step=result.seconds_per_step, startup=result.startup_seconds)
        return result

    training.train = timed  # what the CLI calls
    sys.argv = ["lowbudget", *argv]
    try:
        main()
    except SystemExit as exc:
        if exc.code:
            raise
    figures["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    if torch.cuda.is_available():
        figures["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print("BENCH " + json.dumps(figures))


def floor(shape: str, resolution: int, batch: int = 1, repeats: int = 3) -> float:
    """Median seconds of one U-Net forward + backward to the text conditioning (frozen weights),
    fp32, on the GPU when there is one."""
    import torch
    from diffusers import UNet2DConditionModel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    unet = UNet2DConditionModel.from_pretrained(build_base(shape) / "unet").requires_grad_(False).to(device)
    latent = resolution // 8
    width = unet.config.cross_attention_dim
    x = torch.randn(batch, 4, latent, latent, device=device)
    cond = torch.randn(batch, 77, width, device=device, requires_grad=True)
    t = torch.full((batch,), 500, device=device)
    times = []
    for _ in range(repeats + 1):  # the first is warm-up
        start = time.perf_counter()
        unet(x, t, cond).sample.pow(2).mean().backward()
        if device == "cuda":  # kernels run asynchronously: wait for them before reading the clock
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def measure(row: Row, steps: tuple[int, int] = (2, 7)) -> dict:
    base = build_base(row.shape)
    data = make_data(8, row.resolution)
    short, long = run_train(row, steps[0], base, data), run_train(row, steps[1], base, data)
    return {"row": row.name, "per_step": (long["wall"] - short["wall"]) / (steps[1] - steps[0]),
            "median_step": long["median_step"],
            "startup": long["startup"], "peak_rss_gib": long["peak_rss_gib"], "peak_cuda_gib": long.get("peak_cuda_gib")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="like-for-like", help="like-for-like | growth | all | gpu | sdxl-gpu")
    parser.add_argument("--only", default="", help="Run only the rows whose name contains this text")
    parser.add_argument("--steps", type=_step_pair, default=(2, 7), help="short,long step counts (default 2,7)")
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--write", action="store_true",
                        help="Write the table into benchmarks/RESULTS.md (RESULTS-gpu.md on a GPU)")
    args, rest = parser.parse_known_args()
    results = []
    for row in _rows():
        if args.rows in row.groups and args.only in row.name:
            result = measure(row, args.steps)
            results.append(result)
            print(json.dumps(result), flush=True)
    fl = None if args.no_floor else floor("sd15", 512)
    table = _table(results, fl, " ".join(["python", "benchmarks/train_speed.py", *sys.argv[1:]]), args.steps)
    print(table)
    if args.write:
        import torch

        (ROOT / "benchmarks" / ("RESULTS-gpu.md" if torch.cuda.is_available() else "RESULTS.md")).write_text(table)


def _step_pair(text: str) -> tuple[int, int]:
    try:
        short, long = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps {text!r}: expected two step counts, e.g. 2,7") from None
    if not 1 <= short < long:
        raise argparse.ArgumentTypeError(f"--steps {text!r}: expected 1 <= short < long")
    return short, long


def _table(results: list[dict], fl: float | None, command: str, steps: tuple[int, int] = (2, 7)) -> str:
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    memory = "peak CUDA GiB" if torch.cuda.is_available() else "peak RSS GiB"
    lines = [f"Machine: {platform.machine()}, {device}, torch {torch.__version__}.  ",
             f"Command: `{command}`", "",
             f"| row | s/step ({steps[1]}-{steps[0]} runs) | median s/step | start-up s | {memory} |",
             "| --- | --- | --- | --- | --- |"]
    for r in results:
        mem = r["peak_cuda_gib"] if r["peak_cuda_gib"] is not None else r["peak_rss_gib"]
        lines.append(f"| {r['row']} | {r['per_step']:.2f} | {r['median_step']:.2f} | {r['startup']:.1f} | {mem:.2f} |")
    if fl is not None:
        lines += ["", f"Floor: SD 1.5 U-Net forward + backward alone at 512 px, batch 1, fp32: {fl:.3f} s (median of 3)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
