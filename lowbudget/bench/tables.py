"""The benchmark's figures: markdown tables, labelled image strips, the inpainting panel, and an
HTML page from a report's markdown. Shared by every section and the demo report."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import ImageDraw

from lowbudget.io import atomic_write_text
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


def write_html(markdown: str, path: Path, title: str) -> Path:
    """The report's markdown as one self-contained page (the PNGs beside it), for a browser:
    headings, paragraphs, tables, images and `code`, the subset the reports use."""
    body, table = [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                table.append(cells)
            continue
        if table:
            head, *rest = table
            body.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rest)
                        + "</table>")
            table = []
        heading = re.match(r"(#{1,4}) (.*)", line)
        if heading:
            level = len(heading.group(1))
            body.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    page = (f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.2em .6em;text-align:left}"
            "img{max-width:100%;image-rendering:pixelated}code{background:#f2f2f2}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
    return atomic_write_text(path, page)


def _inline(text: str) -> str:
    """Escape, then render ![alt](src) and `code`."""
    out = html.escape(text, quote=True)
    out = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r"<img alt='\1' src='\2'>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
