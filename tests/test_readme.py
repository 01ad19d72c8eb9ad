"""The README is the user's manual: every `lowbudget` command and Python snippet in it runs here.

`make demo` and `make test` are run by CI (.ci/run). Paths to the user's model and data are
replaced by a tiny SD 1.x-shaped model (text width 768), a tiny SDXL-shaped one and a folder of
phantoms, and training commands are shortened to one step at 32 px.
"""

import json
import re
import shlex
from pathlib import Path

import pytest

from helpers import run

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SHORT_TRAINING = ["--max-steps", "1", "--set", "data.resolution=32", "--set", "output.validation_every=0", "--quiet"]
SHORT_CLASSIFIER = ["--steps", "3", "--size", "32", "--width", "8", "--seeds", "0"]  # the last flag given wins
SHORT_SAMPLING = ["--steps", "3"]
SHORT_REPORT = ["--steps", "3", "-n", "4"]
SHORT_BENCHMARK = ["--sections", "detectors"]  # the quick benchmark has its own test (test_benchmark.py)
SHORT_SHARE = ["--samples", "8", "--steps", "2"]
SHORT_FEDERATION = ["--set", "data.resolution=32", "--set", "optim.batch_size=2"]
SHORT_ROUNDS = ["--rounds", "2", "--local-steps", "1"]
TOGETHER = ("federate server", "federate site")  # they run at once, as processes: test_readme_federation_runs
SHORT_PRETRAINING = [f"--set={k}={v}" for k, v in
                     dict(n_images=12, vae_steps=1, unet_steps=1, vae_batch=4, unet_batch=4, warmup=1).items()]
# the README's example box is in pixels of a 512-px SD image; the small model works at 32 px
SCALED = {"100,300,250,450": "6,18,16,28"}


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def readme_commands() -> list[str]:
    seen = []
    for block in blocks("bash"):
        for line in block.splitlines():
            if line.startswith("lowbudget ") and line not in seen:
                seen.append(line)
    return seen


@pytest.fixture
def user_site(tmp_path, monkeypatch, mixed_folder):
    """What a user has: an SD 1.x-shaped model, images, class folders, a feature extractor."""
    import torch

    from lowbudget.models.architectures import write_base_folder
    from lowbudget.phantoms import write_chest_phantoms

    base = write_base_folder(tmp_path / "models" / "sd15", "tiny", text_width=768)  # named as the README's
    xl = write_base_folder(tmp_path / "models" / "sdxl", "tiny-xl")
    for name, seed in (("cxr-by-class", 1), ("synthetic-by-class", 2)):
        for k, finding in enumerate(("effusion", "none")):
            write_chest_phantoms(tmp_path / name / finding, n=6, finding=finding, size=48, seed=seed + 10 * k)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 9, 8), torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
    torch.jit.trace(net.eval(), torch.rand(1, 3, 64, 64)).save(str(tmp_path / "extractor.pt"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "recipes").symlink_to(ROOT / "recipes")
    (work / "embeddings").symlink_to(ROOT / "embeddings")
    monkeypatch.chdir(work)
    write_chest_phantoms(tmp_path / "site-b", n=6, size=48, seed=7)  # a second site, captioned as /data/cxr is
    rows = [json.loads(line) for line in (tmp_path / "site-b" / "metadata.jsonl").read_text().splitlines()]
    (tmp_path / "site-b" / "metadata.jsonl").write_text("".join(json.dumps({**r, "text": "a chest x-ray"}) + "\n" for r in rows))
    return {"/data/site-a": str(mixed_folder), "/data/site-b": str(tmp_path / "site-b"),
            "/models/sd15": str(base), "sd15=/models/sd15": f"sd15={base}", "/models/sdxl": str(xl), "/data/cxr": str(mixed_folder), "/models/inception-v3.pt": str(tmp_path / "extractor.pt"),
            "/data/cxr-by-class": str(tmp_path / "cxr-by-class"), "/data/synthetic-by-class": str(tmp_path / "synthetic-by-class")}


def test_readme_has_the_commands_we_promise():
    commands = " ".join(readme_commands())
    for verb in ("train", "inspect", "convert", "check-recipe", "phantom images", "make-base", "library add", "library verify",
                 "generate", "compose", "inpaint", "phantom report", "phantom benchmark", "phantom pretrain-base",
                 "evaluate diversity", "evaluate realism", "evaluate memorisation", "evaluate classifier", "doctor",
                 "keys new", "sign", "verify", "share", "library publish", "library pull", "preview", "recipes",
                 "federate server", "federate site", "federate simulate"):
        assert f"lowbudget {verb}" in commands
    assert "make demo" in README and "make test" in README


def test_every_readme_command_runs(user_site, monkeypatch, capsys):
    for line in readme_commands():
        args = [SCALED.get(a, user_site.get(a, a)) for a in shlex.split(line, comments=True)[1:]]
        if " ".join(args[:2]) in TOGETHER:
            continue
        if args[:2] == ["federate", "simulate"]:
            args += SHORT_FEDERATION + SHORT_ROUNDS
        if args[0] == "train":
            args += SHORT_TRAINING
        if args[0] in ("generate", "compose", "inpaint"):
            args += SHORT_SAMPLING
        if args[:2] == ["evaluate", "classifier"]:
            args += SHORT_CLASSIFIER
        verb = args[1] if args[0] == "phantom" else args[0]
        args += {"report": SHORT_REPORT, "benchmark": SHORT_BENCHMARK, "pretrain-base": SHORT_PRETRAINING,
                 "share": SHORT_SHARE}.get(verb, [])
        code, out, err = run(monkeypatch, capsys, *args)
        assert code == 0, f"{line}\n{err}"


def test_readme_federation_runs(user_site):
    """The README's server and site commands, at once, each a process, on a free loopback port."""
    import os
    import subprocess
    import sys

    from lowbudget.federation.simulate import free_port

    address = f"127.0.0.1:{free_port()}"
    lines = [line for line in readme_commands() if line.startswith(tuple(f"lowbudget {t}" for t in TOGETHER))]
    assert [line.split()[2] for line in lines] == ["server", "site", "site"]
    processes = []
    for line in lines:
        args = [user_site.get(a, a).replace("127.0.0.1:8080", address) for a in shlex.split(line, comments=True)[1:]]
        args += SHORT_FEDERATION + (SHORT_ROUNDS if args[1] == "server" else ["-q"])
        processes.append(subprocess.Popen([sys.executable, "-m", "lowbudget", *args], stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}))
    try:
        processes[0].wait(timeout=240)
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in processes[1:]:
            try:
                p.wait(timeout=30 if processes[0].returncode == 0 else 0)
            except subprocess.TimeoutExpired:
                pass
        for p in processes:
            p.kill()
    outputs = [p.communicate()[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    assert "round 2 of 2: aggregated 2 sites" in outputs[0] and "wrote runs/federated/prostate-mri.safetensors" in outputs[0]


def test_every_readme_python_snippet_runs(user_site, monkeypatch, capsys):
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    for output in ("runs/cxr", "runs/cxr-xl"):  # the snippets use the files the commands write
        line = next(line for line in readme_commands() if line.startswith("lowbudget train") and line.endswith(f"--output {output}"))
        args = [user_site.get(a, a) for a in shlex.split(line, comments=True)[1:]] + SHORT_TRAINING
        assert run(monkeypatch, capsys, *args)[0] == 0
    calls = []
    for cls in (StableDiffusionPipeline, StableDiffusionXLPipeline):
        def small_call(self, prompt, _real=cls.__call__, **kwargs):  # the same pipeline, 2 steps at 32 px
            calls.append(prompt)
            return _real(self, prompt, num_inference_steps=2, height=32, width=32)

        monkeypatch.setattr(cls, "__call__", small_call)
    snippets = blocks("python")
    assert len(snippets) >= 2
    for code in snippets:
        for placeholder, real in user_site.items():
            code = code.replace(placeholder, real)
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)
        image = namespace["image"]
        assert (image.size if hasattr(image, "size") and not callable(image.size) else tuple(image.shape[-2:])) == (32, 32)
        if "load_adapter" in code or "load_textual_inversion" in code:
            pipe = namespace["pipe"]
            assert "<chest-xray>_63" in pipe.tokenizer.get_vocab()
            if "tokenizer_2" in code:  # SDXL: the token in both encoders, as the file holds it
                assert "<chest-xray>_63" in pipe.tokenizer_2.get_vocab()
                parts = namespace["parts"]
                ids = pipe.tokenizer_2.convert_tokens_to_ids(["<chest-xray>", "<chest-xray>_63"])
                assert torch.equal(pipe.text_encoder_2.get_input_embeddings().weight[ids].detach(), parts["clip_g"][[0, 63]])
    assert len(calls) == sum("pipe(" in code for code in snippets)
