"""Inpainting inputs: the image, a mask (PNG or box), feathering and paste-back.

The feathered mask is the binary mask blurred by a Gaussian truncated at ``feather`` pixels,
so it is exactly 0 beyond that border: with paste-back, every pixel farther than ``feather``
from the mask is the input's own value, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lowbudget.data.dataset import fit_square, to_rgb
from lowbudget.data.readers import UnreadableImage, read_image, read_mask
from lowbudget.errors import LowbudgetError
from lowbudget.recipe import DataConfig


def load_input_image(path: str | Path, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(1, 3, size, size) in [0, 1] from PNG/JPEG/TIFF/DICOM, and the file's own (H, W)."""
    path = Path(path)
    if not path.is_file():
        raise LowbudgetError(f"input image '{path}' does not exist")
    try:
        arr = read_image(path, DataConfig())
    except UnreadableImage as exc:
        raise LowbudgetError(f"cannot read input image '{path}': {exc}") from None
    rgb = to_rgb(fit_square(arr, size))  # (size, size, 3)
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None], arr.shape[:2]


def box_mask(box: str, size: int) -> torch.Tensor:
    """'x0,y0,x1,y1' in pixels of the (size x size) working image -> (1, 1, size, size)."""
    try:
        x0, y0, x1, y1 = (int(v) for v in box.split(","))
    except ValueError:
        raise LowbudgetError(f"--box {box!r} must be four integers x0,y0,x1,y1") from None
    if not (0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size):
        raise LowbudgetError(f"--box {box!r} must satisfy 0 <= x0 < x1 <= {size} and 0 <= y0 < y1 <= {size}: it is in "
                             f"pixels of the {size}x{size} working image (the base's native size, or --size), "
                             "to which the input is resized")
    mask = torch.zeros(1, 1, size, size)
    mask[..., y0:y1, x0:x1] = 1.0
    return mask


def png_mask(path: str | Path, size: int, image_shape: tuple[int, int]) -> torch.Tensor:
    """(1, 1, size, size) from a mask image of the input's own size (or the working size).

    A mask of any other size would be stretched or cropped differently from the image, so
    that the region repainted is not the one drawn: it is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise LowbudgetError(f"mask '{path}' does not exist")
    try:
        arr = read_mask(path)  # (H, W)
    except UnreadableImage as exc:
        raise LowbudgetError(f"mask '{path}' {exc}; expected a PNG, white = repaint") from None
    h, w = image_shape
    if arr.shape not in ((h, w), (size, size)):
        raise LowbudgetError(f"mask '{path}' is {arr.shape[1]} x {arr.shape[0]} pixels; expected the input image's "
                             f"{w} x {h} (or the working {size} x {size})")
    mask = torch.from_numpy((fit_square(arr, size) >= 0.5).astype(np.float32))[None, None]
    if mask.sum() == 0:
        raise LowbudgetError(f"mask '{path}' is empty: white marks where to inpaint")
    return mask


def feather(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Soften the edge over ``pixels``; stays exactly 0 farther than ``pixels`` from the mask."""
    if pixels <= 0:
        return mask
    sigma = pixels / 3
    g = torch.exp(-((torch.arange(-pixels, pixels + 1, dtype=torch.float32)) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    soft = F.conv2d(F.pad(mask, (pixels,) * 4), g.view(1, 1, 1, -1))
    soft = F.conv2d(soft, g.view(1, 1, -1, 1))
    return torch.maximum(soft, mask).clamp(0, 1)  # never weaker than the mask itself


def to_latent_grid(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A latent cell takes the mean of the pixels it covers."""
    return F.adaptive_avg_pool2d(mask, size)


def paste_back(generated: torch.Tensor, original: torch.Tensor, soft_mask: torch.Tensor) -> torch.Tensor:
    """Generated pixels inside the (feathered) mask, the original's exactly outside."""
    return torch.where(soft_mask > 0, soft_mask * generated + (1 - soft_mask) * original, original)
