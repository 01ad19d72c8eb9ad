"""The benchmark's figures: markdown tables, labelled image strips, the inpainting panel.
Shared by every section and the demo report."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import ImageDraw

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


def save_strip(images: np.ndarray, path: Path, labels: Sequence[str] = (), title: str = "") -> None:
    """(N, H, W) images side by side in one PNG, each under its label (a seed, a weight)."""
    save_png(image_grid([[to_pil(im) for im in images]], column_labels=labels, title=title), path)


def save_inpainting_panel(originals: np.ndarray, results: np.ndarray, box: Sequence[int], path: Path,
                          seeds: Sequence[int], title: str = "") -> None:
    """(N, H, W) inputs and outputs: a column per seed; rows input, mask (the box outlined in
    red on the input), output."""
    def outlined(gray: np.ndarray):
        im = to_pil(gray).convert("RGB")
        ImageDraw.Draw(im).rectangle(tuple(box), outline=(230, 30, 30))
        return im

    rows = [[to_pil(im) for im in originals], [outlined(im) for im in originals], [to_pil(im) for im in results]]
    grid = image_grid(rows, ["input", "mask (red box)", "output"], column_labels=[f"seed {s}" for s in seeds],
                      title=title)
    save_png(grid, path)


ATTRIBUTE_HEADER = ["finding", "adapter", "sides R / L / both: generated", "training set", "side TV",
                    "second real set: TV mean (95th pct)", "other findings flagged (generated)", "leakage",
                    "second real set: leakage mean (95th pct)"]


def attribute_row(finding: str, adapter: str, attr: dict) -> list:
    """A row of :data:`ATTRIBUTE_HEADER` from :func:`lowbudget.phantoms.attributes.compare`."""
    sides = lambda d: " / ".join(f"{d[k]:.2f}" for k in ("right", "left", "both"))  # noqa: E731
    floor = lambda d: f"{d['mean']:.2f} ({d['p95']:.2f})"  # noqa: E731
    sided = attr["side_tv"] is not None
    others = ", ".join(f"{f} {r:.2f}" for f, r in attr["others_generated"].items() if r > 0) or "none"
    side_columns = [sides(attr["sides_generated"]), sides(attr["sides_training"]), f"{attr['side_tv']:.2f}",
                    floor(attr["side_tv_floor"])] if sided else ["-"] * 4
    return [finding, adapter, *side_columns, others, f"{attr['leakage']:.2f}", floor(attr["leakage_floor"])]


ATTRIBUTE_NOTE = ("Sides: per-side detectors with thresholds calibrated on phantoms with the finding on one side, "
                  "the other or neither (share among images where a side was read); side TV: total variation "
                  "distance to the training set's sides. Leakage: share of images flagged with a finding the "
                  "training set does not have. Second real set: 20 fresh real sets of the same size against the "
                  "same training set, the spread a faithful generator stays within.")
