"""The training loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error of the noise prediction, over the masked pixels only when a loss mask
    is given (``(B, 1, h, w)`` at latent scale, 1 = counts): a region can be learnt alone."""
    if mask is None:
        return F.mse_loss(pred, target)
    err = (pred - target) ** 2 * mask  # (B, 4, h, w) * (B, 1, h, w)
    return err.sum() / (mask.sum() * pred.shape[1]).clamp(min=1e-8)
