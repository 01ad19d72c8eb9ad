"""Prompt composition cost: one batched U-Net call per step vs one call per branch.

With K sub-prompts each step needs the unconditional branch and K conditional ones. The
sampler sends all K + 1 through the U-Net in one call; the sequential way makes K + 1 calls.
Both give the same images (checked here); this prints the time per sampling step of each
and their ratio.

    python benchmarks/compose_speed.py                      # embedded base, its native size
    python benchmarks/compose_speed.py --shape sd15 --size 512 --steps 2
    python benchmarks/compose_speed.py --shape sd15 --size 512 --steps 10   # on a GPU: runs there
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch


class SequentialUNet(torch.nn.Module):
    """The same U-Net, called once per branch (chunks of ``branch`` rows) instead of once."""

    def __init__(self, unet: torch.nn.Module, branch: int) -> None:
        super().__init__()
        self.inner, self.branch = unet, branch

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, x, t, encoder_hidden_states):
        outs = [self.inner(x[i : i + self.branch], t, encoder_hidden_states=encoder_hidden_states[i : i + self.branch]).sample
                for i in range(0, x.shape[0], self.branch)]
        return SimpleNamespace(sample=torch.cat(outs))


def main() -> None:
    from lowbudget.models import load_base
    from lowbudget.sampling.sampler import SampleRequest, sample

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default=None, help="sd15 | sd21 random-weight model (default: the embedded base)")
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA GPU is visible to torch {torch.__version__}")
    base = None
    if args.shape:  # the random-weight SD-shaped folder train_speed.py builds
        sys.path.insert(0, str(Path(__file__).parent))
        from train_speed import build_base

        base = build_base(args.shape)
    pipe = load_base(base).pipeline()
    pipe.set_progress_bar_config(disable=True)
    pipe.to(args.device)
    print(f"device: {torch.cuda.get_device_name() if args.device.startswith('cuda') else args.device}, torch {torch.__version__}")
    batched_unet = pipe.unet
    if args.device.startswith("cuda"):  # full fp32 convolutions: TF32 would blur the agreement check
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    print("| sub-prompts K | U-Net rows per step | batched s/step | sequential s/step | sequential / batched "
          "| max pixel difference |")
    print("| --- | --- | --- | --- | --- | --- |")
    for k in (1, 2, 4):
        prompt = " AND ".join(f"part {i} :{1 / k:.3f}" for i in range(k))
        req = SampleRequest(prompt=prompt, seeds=[0], steps=args.steps, size=args.size)
        timings = {}
        images = {}
        for name, unet in (("batched", batched_unet), ("sequential", SequentialUNet(batched_unet, 1))):
            pipe.unet = unet
            sample(pipe, SampleRequest(prompt=prompt, seeds=[0], steps=1, size=args.size))  # warm-up
            runs = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                images[name] = sample(pipe, req)
                if args.device.startswith("cuda"):  # kernels run asynchronously: wait before reading the clock
                    torch.cuda.synchronize()
                runs.append((time.perf_counter() - start) / args.steps)
            timings[name] = statistics.median(runs)
        pipe.unet = batched_unet
        diff = (images["batched"] - images["sequential"]).abs().max().item()
        assert diff <= 1e-3, f"the two ways must agree: they differ by {diff:.2e}"
        b, s = timings["batched"], timings["sequential"]
        print(f"| {k} | {k + 1} | {b:.4f} | {s:.4f} | {s / b:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
