"""The training loss: mean squared error of the prediction, with optional loss masks and
min-SNR-gamma weighting (Hang et al., ICCV 2023)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None,
               weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of the noise (or velocity) prediction.

    With a loss mask (``(B, 1, h, w)`` at latent scale, 1 = counts) only the masked pixels
    count, so a region can be learnt alone. With ``weights`` (``(B,)``) each sample's error is
    weighted before the mean (min-SNR); without, every pixel of the batch counts the same.
    """
    channels = pred.shape[1]
    if weights is None:  # every (masked) pixel of the batch counts the same
        if mask is None:
            return F.mse_loss(pred, target)
        return ((pred - target) ** 2 * mask).sum() / (mask.sum() * channels).clamp(min=1e-8)  # mask: (B, 1, h, w)
    err = (pred - target) ** 2  # (B, 4, h, w)
    if mask is None:
        per_sample = err.flatten(1).mean(1)  # (B,)
    else:
        per_sample = (err * mask).flatten(1).sum(1) / (mask.flatten(1).sum(1) * channels).clamp(min=1e-8)
    return (per_sample * weights).mean()


def min_snr_weights(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """(B,) weights min(SNR, gamma) / SNR for noise prediction, min(SNR, gamma) / (SNR + 1) for
    v-prediction: low-noise timesteps, whose huge SNR would dominate the gradient, count less."""
    abar = alphas_cumprod.to(t.device)[t].float()
    snr = abar / (1 - abar)  # (B,)
    clipped = snr.clamp(max=gamma)
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr
