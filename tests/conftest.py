"""Shared fixtures: a tiny base model and small image folders, all built in-process.

Every test runs offline on the CPU. The user cache (embedded base, latents, configs) is
redirected into a temporary folder so tests never touch ~/.cache.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ["LOWBUDGET_CACHE"] = tempfile.mkdtemp(prefix="lowbudget-test-cache-")
os.environ["HF_HUB_OFFLINE"] = "1"

from lowbudget.recipe import DataConfig, MethodConfig, ModelConfig, OptimConfig, OutputConfig, Recipe, TokenConfig  # noqa: E402


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A diffusers folder of the tiny architecture with random weights (SD 1.x code path)."""
    from lowbudget.models.architectures import write_base_folder

    return write_base_folder(tmp_path_factory.mktemp("bases") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="session")
def mixed_folder(tmp_path_factory) -> Path:
    """8 chest phantoms cycling 8-bit PNG, 16-bit PNG and DICOM (MONOCHROME1 and 2)."""
    from lowbudget.phantoms import write_chest_phantoms

    folder = tmp_path_factory.mktemp("data") / "mixed"
    write_chest_phantoms(folder, n=8, size=48, fmt="mixed", seed=1)
    # Short captions, as a user's folder might have: the 64-vector recipes must fit in 77 tokens.
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    (folder / "metadata.jsonl").write_text("".join(json.dumps({**r, "text": "a chest x-ray"}) + "\n" for r in rows))
    return folder


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
    from PIL import Image

    arr = (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)
    return path
