"""The embedded base models: what every command uses when no ``--base`` is given, and its SDXL twin.

``embedded`` (the default) is the phantom base -- Stable Diffusion's architecture at 64 px,
pretrained by ``lowbudget phantom pretrain-base`` on phantoms whose captions never name a
finding. ``embedded-xl`` is the same pretraining at SDXL's architecture (two text encoders,
pooled embedding and time ids; ``--set shape=phantom-xl``), for trying the SDXL code path
without SDXL weights. Each ships inside the package as one fp16 safetensors file
(``assets/``); on first use it is expanded once into an fp32 diffusers folder in the user cache
and loaded from there through the same code path as a user's own checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lowbudget.errors import ModelError
from lowbudget.io import sha256_file
from lowbudget.models.packed import unpack_base

EMBEDDED = "embedded"  # what --base, a library index and a recipe call the embedded base
EMBEDDED_XL = "embedded-xl"  # and its SDXL-architecture twin
_ASSETS = Path(__file__).resolve().parent.parent / "assets"
PACKED = _ASSETS / "phantom-base-v1.safetensors"
PACKED_XL = _ASSETS / "phantom-xl-base-v1.safetensors"
# name users give -> (name of the unpacked folder, packed file)
EMBEDDED_BASES = {EMBEDDED: ("phantom-v1", PACKED), EMBEDDED_XL: ("phantom-xl-v1", PACKED_XL)}


def is_embedded(base: str | os.PathLike | None) -> bool:
    """Whether ``base`` names an embedded base ("" and None mean the default one)."""
    return not base or str(base) in EMBEDDED_BASES


def cache_dir() -> Path:
    """``$LOWBUDGET_CACHE``, else ``$XDG_CACHE_HOME/lowbudget``, else ``~/.cache/lowbudget``."""
    if env := os.environ.get("LOWBUDGET_CACHE"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "lowbudget"


def embedded_base_path(name: str = EMBEDDED) -> Path:
    """Path of the embedded base ``name``'s diffusers folder, expanding the packed weights on first use."""
    if name not in EMBEDDED_BASES:
        raise ModelError(f"'{name}' is not an embedded base; expected one of {', '.join(EMBEDDED_BASES)}")
    folder_name, packed = EMBEDDED_BASES[name]
    if not packed.is_file():
        raise ModelError(f"the embedded base '{packed}' is missing from this installation; reinstall lowbudget")
    # The folder name carries the packed file's hash, so a new release never reuses a stale copy.
    path = cache_dir() / "bases" / f"{folder_name}-{sha256_file(packed)[:12]}"
    if not (path / "model_index.json").is_file():
        # Written beside the final name and renamed, so a crash never leaves half a model.
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        unpack_base(packed, tmp)
        try:
            tmp.rename(path)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return path
