"""The embedded default base model: what every command uses when no ``--base`` is given.

Until the pretrained phantom base ships inside the package, the embedded base is the tiny
model of :data:`lowbudget.models.architectures.TINY` with fixed random weights, written once
as a diffusers folder into the user cache and loaded from there through the same code path
as a user's own checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

EMBEDDED_NAME = "tiny-random-v1"


def cache_dir() -> Path:
    """``$LOWBUDGET_CACHE``, else ``$XDG_CACHE_HOME/lowbudget``, else ``~/.cache/lowbudget``."""
    if env := os.environ.get("LOWBUDGET_CACHE"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "lowbudget"


def embedded_base_path() -> Path:
    """Path of the embedded base's diffusers folder, writing it on first use."""
    from lowbudget.models.architectures import write_base_folder

    path = cache_dir() / "bases" / EMBEDDED_NAME
    if not (path / "model_index.json").is_file():
        # Written beside the final name and renamed, so a crash never leaves half a model.
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        write_base_folder(tmp, "tiny", seed=0)
        try:
            tmp.rename(path)
        except OSError:  # another process won the race; its copy is identical
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return path
