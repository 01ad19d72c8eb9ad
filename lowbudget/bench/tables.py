"""The benchmark's figures: markdown tables and image strips, shared by every section and the
demo report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lowbudget.viz import image_grid, save_png, to_pil


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """Lines of a markdown table; floats with three decimals."""
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]


def save_pngs(images: np.ndarray, folder: Path) -> None:
    """One PNG per (H, W) image in [0, 1]: 0000.png, 0001.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        save_png(to_pil(im), folder / f"{i:04d}.png")


def save_strip(images: np.ndarray, path: Path) -> None:
    """The images side by side in one PNG."""
    save_png(image_grid([[to_pil(im) for im in images]]), path)
