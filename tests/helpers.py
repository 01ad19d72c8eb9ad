"""What several test modules share: running the CLI in-process, the one-line error check, a tiny
recipe, a noise image. Fixtures (built once per session) are in conftest.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from lowbudget.cli import main
from lowbudget.recipe import DataConfig, MethodConfig, ModelConfig, OptimConfig, OutputConfig, Recipe, TokenConfig

ROOT = Path(__file__).resolve().parents[1]


def run(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """``lowbudget ARGS`` through the real entry point (its error boundary included): (code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["lowbudget", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    """Exit code 1, no traceback, exactly one 'error:' line, and it matches ``pattern``."""
    lines = [line for line in err.strip().splitlines() if line.startswith("error:")]
    assert code == 1, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert re.search(pattern, lines[0]), lines[0]


def tiny_recipe(data: Path, out: Path, base: Path, kind: str = "ti", steps: int = 4, **optim) -> Recipe:
    """A recipe that trains the tiny base at 32 px in a few seconds."""
    tokens = [TokenConfig(name="<effusion>", init="fluid lung", n_vectors=3)] if kind != "lora" else []
    templates = ["a chest x-ray with {token}"] if kind != "lora" else ["a chest x-ray"]
    return Recipe(
        data=DataConfig(path=str(data), resolution=32, captions="templates", templates=templates),
        model=ModelConfig(base=str(base)),
        method=MethodConfig(kind=kind, tokens=tokens),
        optim=OptimConfig(max_steps=steps, batch_size=2, **optim),
        output=OutputConfig(dir=str(out), checkpoint_every=2),
    )


def noise_png(path: Path, shape=(40, 48), seed=0, mode="L") -> Path:
    arr = (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)
    return path
