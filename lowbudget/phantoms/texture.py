"""Drawing helpers shared by the phantom generators and detectors: grids, blur, smooth noise."""

from __future__ import annotations

import numpy as np


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)`` as image fractions in (0, 1), each (size, size)."""
    axis = (np.arange(size) + 0.5) / size
    return np.meshgrid(axis, axis)


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with reflected edges; ``sigma`` in pixels."""
    if sigma <= 0:
        return img
    half = max(1, int(np.ceil(3 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(img, half, mode="reflect")
    # Convolve along each axis as a sum of shifted copies: fast for the small kernels used here.
    rows = sum(k * padded[:, i : i + img.shape[1]] for i, k in enumerate(kernel))
    return sum(k * rows[i : i + img.shape[0], :] for i, k in enumerate(kernel))


def smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian noise blurred at ``sigma`` pixels (of a 64-px image)."""
    noise = blur(rng.normal(size=(size, size)), sigma * size / 64)
    return (noise - noise.mean()) / (noise.std() + 1e-8)
