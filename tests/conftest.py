"""Shared fixtures: a tiny base model and small image folders, all built in-process.

Every test runs offline on the CPU. The user cache (embedded base, latents, configs) is
redirected into a temporary folder so tests never touch ~/.cache.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

os.environ["LOWBUDGET_CACHE"] = tempfile.mkdtemp(prefix="lowbudget-test-cache-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["FLWR_TELEMETRY_ENABLED"] = "0"  # before any test module imports flwr (lowbudget.federation sets it too)



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
