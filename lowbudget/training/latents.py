"""Encode training images once; sample latents from the cached distribution every step.

The VAE is a third to a half of a naive SD training step. Its output for an image never
changes, so it is computed once per image: the posterior mean and standard deviation are
kept, and each step draws ``mean + std * eps`` -- the same distribution the VAE would have
sampled, at the cost of one multiply-add. Optionally the pair is cached on disk, keyed by
(VAE weights, resolution, image content), so a second run with the same data skips the VAE.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from lowbudget.data.dataset import TrainingImage
from lowbudget.io import atomic_write


@dataclass
class LatentSet:
    mean: torch.Tensor  # (N, 4, h, w) fp32
    std: torch.Tensor  # (N, 4, h, w) fp32
    masks: torch.Tensor | None  # (N, 1, h, w) fp32 loss weights, or None
    encoded: int = 0  # how many images needed the VAE (the rest came from the disk cache)

    def sample(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mean, std = self.mean[idx], self.std[idx]
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + std * eps.to(mean.device)


def vae_key(vae) -> str:
    """Hash of the VAE encoder weights: latents are valid exactly as long as these are."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        if name.startswith(("encoder.", "quant_conv.")):
            digest.update(name.encode())
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def encode_images(vae, images: list[TrainingImage], *, device: torch.device, dtype: torch.dtype,
                  cache_dir: Path | None = None, batch_size: int = 1) -> LatentSet:
    """Posterior (mean, std) of every image, from the disk cache where possible.

    One image at a time by default: the VAE encoder's activations at 512 px are several
    hundred MB per image, and this is where a training run's peak memory would otherwise be.
    """
    key = vae_key(vae) if cache_dir else ""
    resolution = images[0].pixels.shape[0]
    names = [_entry_name(key, resolution, im) for im in images] if cache_dir else [None] * len(images)
    results: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(images)
    for i, name in enumerate(names):
        if cache_dir and name and (cache_dir / name).is_file():
            cached = load_file(str(cache_dir / name))
            results[i] = (cached["mean"], cached["std"])

    todo = [i for i, r in enumerate(results) if r is None]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        pixels = torch.from_numpy(np.stack([images[i].pixels for i in chunk]))  # (b, R, R, 3) in [0, 1]
        pixels = (pixels.permute(0, 3, 1, 2) * 2 - 1).to(device=device, dtype=dtype)  # (b, 3, R, R) in [-1, 1]
        dist = vae.encode(pixels).latent_dist
        for j, i in enumerate(chunk):
            mean, std = dist.mean[j].float().cpu().contiguous(), dist.std[j].float().cpu().contiguous()
            results[i] = (mean, std)
            if cache_dir:
                atomic_write(cache_dir / names[i], lambda tmp, m=mean, s=std: save_file({"mean": m, "std": s}, str(tmp)))
    mean = torch.stack([r[0] for r in results])  # (N, 4, h, w)
    std = torch.stack([r[1] for r in results])
    return LatentSet(mean=mean, std=std, masks=_latent_masks(images, mean.shape[-2:]), encoded=len(todo))


def _entry_name(key: str, resolution: int, image: TrainingImage) -> str:
    return hashlib.sha256(f"{key}:{resolution}:{image.digest}".encode()).hexdigest()[:40] + ".safetensors"


def _latent_masks(images: list[TrainingImage], size: torch.Size) -> torch.Tensor | None:
    """Pixel masks averaged down to the latent grid: a latent cell counts by its masked area."""
    if all(im.mask is None for im in images):
        return None
    full = [im.mask if im.mask is not None else np.ones(im.pixels.shape[:2], np.float32) for im in images]
    masks = torch.from_numpy(np.stack(full))[:, None]  # (N, 1, R, R)
    return torch.nn.functional.adaptive_avg_pool2d(masks, tuple(size))  # (N, 1, h, w)
