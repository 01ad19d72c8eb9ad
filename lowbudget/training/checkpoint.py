"""Resumable checkpoints that hold only what training changes.

A checkpoint is the trainable tensors (token vectors, LoRA matrices), the optimizer state of
those tensors alone, the RNG state, the step and the loss history, and the early-stopping and
EMA state when those are on -- kilobytes to a few MB,
never the text encoder. It is written atomically (a crash leaves the previous checkpoint
intact) and read back with ``torch.load(weights_only=True)``, which cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lowbudget.errors import TrainingError
from lowbudget.io import atomic_write

CHECKPOINT = Path("checkpoints") / "latest.pt"


def checkpoint_path(output_dir: Path) -> Path:
    return output_dir / CHECKPOINT


def save_checkpoint(output_dir: Path, *, step: int, trainable: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, losses: list[float], recipe: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Path:
    """``extra``: what else a resumed run needs to go on as the unbroken one would (the stopping
    rule's state, the EMA tensors, the evaluations so far)."""
    state = {
        **(extra or {}),
        "step": step,
        "trainable": {k: v.detach().cpu().clone() for k, v in trainable.items()},
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state()},
        "losses": list(losses),
        "recipe": recipe,
    }
    return atomic_write(checkpoint_path(output_dir), lambda tmp: torch.save(state, tmp))


def load_checkpoint(output_dir: Path) -> dict[str, Any]:
    path = checkpoint_path(output_dir)
    if not path.is_file():
        raise TrainingError(f"--resume: no checkpoint at '{path}'; start without --resume or pick the run's --output")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"checkpoint '{path}' cannot be read ({type(exc).__name__}); it may be from another version") from exc


def restore(state: dict[str, Any], trainable: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
    """Copy saved tensors into the live ones and restore optimizer and RNG state."""
    saved = state["trainable"]
    if set(saved) != set(trainable):
        raise TrainingError("checkpoint holds different trainable tensors than this recipe creates; was the [method] table changed?")
    with torch.no_grad():
        for name, tensor in trainable.items():
            if saved[name].shape != tensor.shape:
                raise TrainingError(f"checkpoint tensor '{name}' has shape {tuple(saved[name].shape)}, recipe gives {tuple(tensor.shape)}")
            tensor.copy_(saved[name].to(tensor.device, tensor.dtype))
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
