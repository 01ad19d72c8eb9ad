"""Image folders for evaluation, streamed in batches so memory does not grow with their size.

Files are read with the same readers as training data (PNG/JPEG/TIFF, DICOM, NIfTI), resized
and centre-cropped to a square, and delivered as float tensors in [0, 1].
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from lowbudget.data.dataset import fit_square, image_files, to_rgb
from lowbudget.data.readers import UnreadableImage, read_image
from lowbudget.errors import DataError
from lowbudget.progress import plural, track
from lowbudget.recipe import DataConfig


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder '{folder}' does not exist or is not a folder")
    paths, _ = image_files(folder)  # what is not a regular file is never opened
    if not paths:
        raise DataError(f"image folder '{folder}' has no PNG/JPEG/TIFF, DICOM or NIfTI files")
    return paths


def load_image(path: Path, size: int, *, grayscale: bool = False) -> torch.Tensor:
    """(C, size, size) float32 in [0, 1]; C = 1 for grayscale, else 3."""
    try:
        arr = fit_square(read_image(path, DataConfig()), size)
    except UnreadableImage as exc:
        raise DataError(f"cannot read '{path}': {exc}") from None
    if grayscale:
        arr = arr if arr.ndim == 2 else arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(arr))[None]
    return torch.from_numpy(np.ascontiguousarray(to_rgb(arr))).permute(2, 0, 1)


def iter_batches(paths: list[Path], size: int, batch_size: int = 32, *, grayscale: bool = False,
                 progress: str | None = None) -> Iterator[tuple[torch.Tensor, list[Path]]]:
    """Yield (B, C, size, size) batches and their paths, optionally with a progress bar."""
    chunks = [paths[start : start + batch_size] for start in range(0, len(paths), batch_size)]
    for chunk in track(chunks, progress, "image", total=len(paths), weight=len):
        yield torch.stack([load_image(p, size, grayscale=grayscale) for p in chunk]), chunk


@dataclass
class LabelledImages:
    paths: list[Path]
    labels: list[int]
    classes: list[str]


def labelled_images(folder: str | Path, labels_csv: str | Path | None = None, *,
                    file_column: str = "file_name", label_column: str = "label",
                    classes: list[str] | None = None) -> LabelledImages:
    """Labels from sub-folder names (``folder/<class>/img.png``) or from a CSV.

    ``classes`` fixes the class order (so real and synthetic sets agree); by default sorted.
    """
    folder = Path(folder)
    paths = list_images(folder)
    if labels_csv:
        with open(labels_csv, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {file_column, label_column} - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"labels CSV '{labels_csv}' lacks column(s) {', '.join(sorted(missing))}")
            by_name = {row[file_column]: row[label_column] for row in reader}
        names = [by_name.get(p.relative_to(folder).as_posix(), by_name.get(p.name)) for p in paths]
        unlabelled = [p for p, n in zip(paths, names) if n is None]
        if unlabelled:
            raise DataError(f"'{unlabelled[0]}' has no row in '{labels_csv}' ({plural(len(unlabelled), 'image')} unlabelled)")
    else:
        names = [p.relative_to(folder).parts[0] if len(p.relative_to(folder).parts) > 1 else None for p in paths]
        if None in names:
            raise DataError(f"'{folder}': put each image in a sub-folder named by its class, or give a labels CSV")
    classes = classes or sorted(set(names))
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DataError(f"'{folder}' has class(es) {', '.join(unknown)} not among {', '.join(classes)}")
    if len(classes) < 2:
        raise DataError(f"'{folder}' has only the class {classes[0]!r}; a classifier needs at least two")
    return LabelledImages(paths, [classes.index(n) for n in names], classes)
