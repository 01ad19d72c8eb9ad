"""The learning-rate schedule: linear warm-up, then constant, linear or cosine decay to zero.

One function for every optimiser lowbudget runs (adapters in the training loop, the embedded
base's pretraining), so that "cosine with 200 warm-up steps" means the same curve everywhere.
"""

from __future__ import annotations

import math

SHAPES = ("constant", "linear", "cosine")


def lr_factor(step: int, *, total: int, warmup: int = 0, shape: str = "cosine") -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total`` steps."""
    if warmup and step < warmup:
        return (step + 1) / warmup  # never 0: the first step already learns
    if shape == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 1.0 - progress if shape == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
