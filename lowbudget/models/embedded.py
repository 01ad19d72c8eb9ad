"""The embedded default base model: what every command uses when no ``--base`` is given.

It is the phantom base -- Stable Diffusion's architecture at 64 px, pretrained by
``lowbudget phantom pretrain-base`` on phantoms whose captions never name a finding -- shipped inside
the package as one fp16 safetensors file (``assets/phantom-base-v1.safetensors``). On first use
it is expanded once into an fp32 diffusers folder in the user cache and loaded from there
through the same code path as a user's own checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lowbudget.errors import ModelError
from lowbudget.io import sha256_file
from lowbudget.models.packed import unpack_base

EMBEDDED_NAME = "phantom-v1"
EMBEDDED = "embedded"  # what --base, a library index and a recipe call the embedded base
PACKED = Path(__file__).resolve().parent.parent / "assets" / "phantom-base-v1.safetensors"


def cache_dir() -> Path:
    """``$LOWBUDGET_CACHE``, else ``$XDG_CACHE_HOME/lowbudget``, else ``~/.cache/lowbudget``."""
    if env := os.environ.get("LOWBUDGET_CACHE"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "lowbudget"


def embedded_base_path() -> Path:
    """Path of the embedded base's diffusers folder, expanding the packed weights on first use."""
    if not PACKED.is_file():
        raise ModelError(f"the embedded base '{PACKED}' is missing from this installation; reinstall lowbudget")
    # The folder name carries the packed file's hash, so a new release never reuses a stale copy.
    path = cache_dir() / "bases" / f"{EMBEDDED_NAME}-{sha256_file(PACKED)[:12]}"
    if not (path / "model_index.json").is_file():
        # Written beside the final name and renamed, so a crash never leaves half a model.
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        unpack_base(PACKED, tmp)
        try:
            tmp.rename(path)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return path
