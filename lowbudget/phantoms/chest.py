"""Chest radiograph phantoms: body, lungs, mediastinum, heart, ribs, diaphragm, effusion.

Deterministic from a seed. Intensities follow radiograph convention (air dark, bone and soft
tissue bright). A pleural effusion fills the lung base of one side with fluid density up to
a meniscus, blunting the costophrenic angle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lowbudget.errors import LowbudgetError
from lowbudget.io import atomic_write_text

FINDINGS = ("effusion", "none")


def chest_phantom(size: int, rng: np.random.Generator, *, effusion_side: str | None = None) -> np.ndarray:
    """One (size, size) float32 image in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size] / size  # (size, size) each, in [0, 1)
    jitter = lambda s: rng.normal(0, s)  # noqa: E731
    img = np.full((size, size), 0.05)
    body = ((x - 0.5) / (0.46 + jitter(0.01))) ** 2 + ((y - 0.58) / 0.55) ** 2 < 1
    img[body] = 0.55
    lungs = np.zeros_like(body)
    for side, cx in (("right", 0.31), ("left", 0.69)):  # patient's right is image left
        cx += jitter(0.01)
        lung = ((x - cx) / (0.15 + jitter(0.008))) ** 2 + ((y - 0.47) / (0.3 + jitter(0.01))) ** 2 < 1
        lung &= y < 0.74 + 0.05 * np.cos((x - cx) * 9)  # domed diaphragm
        lungs |= lung
        if side == effusion_side:
            level = 0.62 + rng.uniform(-0.05, 0.04)
            lateral = (cx - x) if side == "right" else (x - cx)
            meniscus = level - 0.08 * np.clip(lateral / 0.15, 0, 1)  # fluid climbs the lateral wall
            lung_fluid = lung & (y > meniscus)
            img[lung_fluid] = 0.6
            lung &= ~lung_fluid
        img[lung] = 0.18
    ribs = 0.07 * (np.sin((y + 0.15 * np.abs(x - 0.5)) * 2 * np.pi * 9) > 0.6)
    img += ribs * lungs
    heart_r = 0.13 + jitter(0.01)
    heart = ((x - 0.55) / (heart_r * 1.2)) ** 2 + ((y - 0.62) / heart_r) ** 2 < 1
    img[heart] = 0.68
    img[(np.abs(x - 0.5) < 0.045) & body] = 0.78  # spine and mediastinum
    img = _blur(img, size / 96) + rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (soft anatomical edges), edges padded by reflection."""
    half = max(1, int(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(img, half, mode="reflect")
    rows = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="valid"), 0, rows)


def write_chest_phantoms(output: Path, *, n: int, finding: str = "effusion", size: int = 64, fmt: str = "png",
                         seed: int = 0) -> list[Path]:
    """Write ``n`` phantoms plus ``metadata.jsonl`` (captions never name the finding)."""
    from lowbudget.data.writers import write_dicom, write_png

    if finding not in FINDINGS:
        raise LowbudgetError(f"--finding {finding!r} is not known; expected one of {', '.join(FINDINGS)}")
    formats = {"png": ["png"], "png16": ["png16"], "dicom": ["dicom"], "mixed": ["png", "png16", "dicom"]}
    if fmt not in formats:
        raise LowbudgetError(f"--format {fmt!r} is not known; expected one of {', '.join(formats)}")
    if n < 1 or size < 16:
        raise LowbudgetError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
    output = Path(output)
    rng = np.random.default_rng(seed)
    paths, rows = [], []
    for i in range(n):
        side = rng.choice(["left", "right"]) if finding == "effusion" else None
        pixels = chest_phantom(size, rng, effusion_side=side)
        kind = formats[fmt][i % len(formats[fmt])]
        name = f"chest-{i:04d}." + ("dcm" if kind == "dicom" else "png")
        if kind == "dicom":
            paths.append(write_dicom(output / name, pixels, monochrome1=bool(i % 2)))
        else:
            paths.append(write_png(output / name, pixels, bits=16 if kind == "png16" else 8))
        rows.append({"file_name": name, "text": "a chest x-ray", "effusion": side or "none"})
    atomic_write_text(output / "metadata.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return paths
