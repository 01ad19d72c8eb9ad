"""Pictures for people: labelled image grids and charts, drawn with Pillow only, and a report's
markdown as an HTML page."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from lowbudget.version import __version__
from lowbudget.io import atomic_write, atomic_write_text


def save_png(image: Image.Image, path: str | Path, *, text: dict[str, str] | None = None) -> Path:
    """The one PNG writer: atomic, and the file says it came from lowbudget (so that a later run
    may replace it); ``text`` adds chunks (a generated image's record, A1111's 'parameters')."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", f"lowbudget {__version__}")
    for key, value in (text or {}).items():
        info.add_text(key, value)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def image_grid(rows: Sequence[Sequence[Image.Image]], row_labels: Sequence[str] = (), *,
               column_labels: Sequence[str] = (), cell_labels: Sequence[Sequence[str]] = (), title: str = "",
               min_cell: int = 128, pad: int = 6) -> Image.Image:
    """Images in rows, labelled for a reader: a title on top, a header over each column (a
    weight, a prompt), a label left of each row (a seed, a prompt), a caption over each cell
    (lines split at '\n').

    Cells smaller than ``min_cell`` pixels are enlarged by a whole factor, pixel for pixel
    (nearest neighbour: no detail is invented), so that a 64-px phantom is not a thumbnail.
    """
    font = ImageFont.load_default(size=_FONT_SIZE)
    cell_w = max(im.width for row in rows for im in row)
    cell_h = max(im.height for row in rows for im in row)
    zoom = max(1, -(-min_cell // max(cell_w, cell_h)))  # a whole factor
    cell_w, cell_h = cell_w * zoom, cell_h * zoom
    n_cols = max(len(row) for row in rows)
    margin = min(220, max([_width(font, t) for t in row_labels] + [0])) + pad if row_labels else 0
    heads = [_wrap(font, t, cell_w, 2) for t in column_labels]
    head_h = max([len(h) for h in heads] + [0]) * _LINE
    captions = [[_caption_lines(font, t, cell_w) for t in r] for r in cell_labels]
    caption_h = max([len(c) for r in captions for c in r] + [0]) * _LINE
    width = margin + n_cols * (cell_w + pad) + pad
    titled = _wrap(font, title, width - 2 * pad, 3) if title else []
    top0 = pad + len(titled) * _LINE + (head_h + pad if heads else 0)
    row_h = caption_h + cell_h + pad
    grid = Image.new("RGB", (width, top0 + len(rows) * row_h), "white")
    draw = ImageDraw.Draw(grid)
    for i, line in enumerate(titled):
        draw.text((pad, pad + i * _LINE), line, fill="black", font=font)
    for c, head in enumerate(heads):
        for i, line in enumerate(head):
            draw.text((margin + pad + c * (cell_w + pad), top0 - head_h - pad + i * _LINE), line, fill="black", font=font)
    for r, row in enumerate(rows):
        top = top0 + r * row_h
        if r < len(row_labels):
            lines = _wrap(font, row_labels[r], margin - pad, max(1, (caption_h + cell_h) // _LINE))
            for i, line in enumerate(lines):
                draw.text((pad, top + caption_h + i * _LINE), line, fill="black", font=font)
        for c, im in enumerate(row):
            x = margin + pad + c * (cell_w + pad)
            if r < len(captions) and c < len(captions[r]):
                for i, line in enumerate(captions[r][c]):
                    draw.text((x, top + i * _LINE), line, fill="black", font=font)
            grid.paste(im.convert("RGB").resize((im.width * zoom, im.height * zoom), Image.NEAREST), (x, top + caption_h))
    return grid


_FONT_SIZE, _LINE = 13, 16  # points, and pixels per line of text


def _caption_lines(font, text: str, width: int) -> list[str]:
    """A cell's caption: a line per '\n'-separated part, each part wrapped to at most 2 lines."""
    return [line for part in text.split("\n") for line in _wrap(font, part, width, 2)]


def _width(font, text: str) -> int:
    return int(font.getlength(text)) + 2


def _wrap(font, text: str, width: int, max_lines: int) -> list[str]:
    """``text`` in lines of at most ``width`` pixels, broken at spaces; the last line ends in
    '…' when the text does not fit in ``max_lines``."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and _width(font, f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] += "…"
    return [_fit(font, line, width) for line in lines] or [""]


def _fit(font, text: str, width: int) -> str:
    if _width(font, text) <= width:
        return text
    while text and _width(font, text + "…") > width:
        text = text[:-1]
    return text + "…"


def _canvas(size: tuple[int, int], title: str, left: int):
    """A white chart canvas with its title; returns (image, draw, font)."""
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    draw.text((left, 8), title, fill="black", font=font)
    return img, draw, font


_SERIES_COLOURS = [(220, 110, 20), (20, 150, 60), (150, 40, 160)]


def line_chart(values: Sequence[float], title: str, size: tuple[int, int] = (640, 360), smooth: int = 0,
               series: dict[str, Sequence[tuple[int, float]]] | None = None) -> Image.Image:
    """A minimal line chart (raw values in grey, moving average in blue) with axis labels;
    ``series`` adds named (step, value) curves on the same axes, each in its colour with a legend."""
    w, h = size
    left, right, top, bottom = 60, 15, 30, 35
    img, draw, font = _canvas(size, title, left)
    y = np.asarray(values, dtype=np.float64)
    if y.size == 0:
        return img
    extra = {name: [(s, v) for s, v in points if np.isfinite(v)] for name, points in (series or {}).items()}
    every = np.concatenate([y] + [np.array([v for _, v in pts]) for pts in extra.values() if pts])
    lo, hi = float(every.min()), float(every.max())
    hi = hi if hi > lo else lo + 1.0

    def to_xy(i: int, v: float) -> tuple[float, float]:
        x = left + (w - left - right) * (i / max(1, y.size - 1))
        return x, top + (h - top - bottom) * (1 - (v - lo) / (hi - lo))

    draw.rectangle((left, top, w - right, h - bottom), outline="black")
    for frac in (0.0, 0.5, 1.0):
        v = lo + frac * (hi - lo)
        _, py = to_xy(0, v)
        draw.text((4, py - 6), f"{v:.4g}", fill="black", font=font)
    draw.text((left, h - bottom + 6), "1", fill="black", font=font)
    draw.text((w - right - 40, h - bottom + 6), f"{y.size}", fill="black", font=font)
    draw.text(((w - 30) // 2, h - 16), "step", fill="black", font=font)
    draw.line([to_xy(i, v) for i, v in enumerate(y)] if y.size > 1 else [to_xy(0, y[0])] * 2, fill=(170, 170, 170))
    window = smooth or max(1, y.size // 20)
    if window > 1 and y.size > window:
        avg = np.convolve(y, np.ones(window) / window, mode="valid")
        draw.line([to_xy(i + window - 1, v) for i, v in enumerate(avg)], fill=(30, 90, 200), width=2)
    for k, (name, points) in enumerate(p for p in extra.items() if p[1]):
        colour = _SERIES_COLOURS[k % len(_SERIES_COLOURS)]
        xy = [to_xy(step - 1, v) for step, v in points]  # step s is the s-th value of the x axis
        draw.line(xy if len(xy) > 1 else xy * 2, fill=colour, width=2)
        for x, yy in xy:
            draw.ellipse((x - 2, yy - 2, x + 2, yy + 2), fill=colour)
        draw.text((left + 8, top + 6 + 14 * k), name, fill=colour, font=font)
    return img


def bar_chart(labels: Sequence[str], values: Sequence[float], errors: Sequence[float] | None = None,
              title: str = "", size: tuple[int, int] = (640, 360)) -> Image.Image:
    """Vertical bars with optional +- error whiskers and the value printed above each bar."""
    w, h = size
    left, bottom, top = 50, 40, 40
    img, draw, font = _canvas(size, title, left)
    errs = list(errors) if errors is not None else [0.0] * len(values)
    hi = max([v + e for v, e in zip(values, errs)] + [1e-12]) * 1.15
    slot = (w - left - 20) / max(1, len(values))
    base_y = h - bottom
    draw.line((left, base_y, w - 20, base_y), fill="black")
    for i, (label, v, e) in enumerate(zip(labels, values, errs)):
        x0, x1 = left + i * slot + slot * 0.2, left + (i + 1) * slot - slot * 0.2
        y = base_y - (h - top - bottom) * max(v, 0) / hi
        draw.rectangle((x0, y, x1, base_y), fill=(30, 90, 200))
        if e:
            ye0, ye1 = base_y - (h - top - bottom) * (v - e) / hi, base_y - (h - top - bottom) * (v + e) / hi
            xm = (x0 + x1) / 2
            draw.line((xm, ye0, xm, ye1), fill="black", width=2)
        draw.text((x0, y - 14), f"{v:.4g}" + (f" ± {e:.2g}" if e else ""), fill="black", font=font)
        draw.text((x0, base_y + 6), _fit(font, label, int(slot)), fill="black", font=font)
    return img


def histogram_chart(series: dict[str, Sequence[float]], title: str = "", bins: int = 30,
                    size: tuple[int, int] = (640, 360), marker: float | None = None) -> Image.Image:
    """Overlaid histograms (as outlines, one colour per series), normalised to the same height."""
    w, h = size
    left, right, top, bottom = 50, 20, 40, 40
    img, draw, font = _canvas(size, title, left)
    everything = np.concatenate([np.asarray(v, dtype=np.float64) for v in series.values()])
    lo, hi = float(everything.min()), float(everything.max())
    hi = hi if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    colours = [(30, 90, 200), (220, 90, 30), (40, 160, 60)]
    to_x = lambda v: left + (w - left - right) * (v - lo) / (hi - lo)  # noqa: E731
    for k, (name, values) in enumerate(series.items()):
        counts, _ = np.histogram(np.asarray(values, dtype=np.float64), edges)
        peak = max(1, counts.max())
        points = []
        for i, c in enumerate(counts):
            y = h - bottom - (h - top - bottom) * c / peak
            points += [(to_x(edges[i]), y), (to_x(edges[i + 1]), y)]
        draw.line(points, fill=colours[k % 3], width=2)
        draw.text((w - 240, 20 + 16 * k), name, fill=colours[k % 3], font=font)
    if marker is not None:
        draw.line((to_x(marker), top, to_x(marker), h - bottom), fill="red")
    draw.line((left, h - bottom, w - right, h - bottom), fill="black")
    draw.text((left, h - bottom + 6), f"{lo:.3g}", fill="black", font=font)
    draw.text((w - right - 40, h - bottom + 6), f"{hi:.3g}", fill="black", font=font)
    return img


def to_pil(pixels: np.ndarray) -> Image.Image:
    """(H, W) or (H, W, 3) float in [0, 1] -> 8-bit PIL image."""
    return Image.fromarray((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8))


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
