"""A folder of training images, read once, checked before any model is loaded.

:func:`load_image_folder` walks the folder, reads every supported file (see
:mod:`lowbudget.data.readers`), attaches captions and optional loss masks, resizes to the
recipe's resolution, and reports unreadable files by path. An empty or all-broken folder is a
:class:`DataError` -- raised here, before minutes are spent loading a base model.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from lowbudget.data.captions import METADATA_FILE, caption_for, read_patient_ids, resolve_caption_source
from lowbudget.data.readers import ImageNote, UnreadableImage, image_kind, read_image_scaled, read_mask
from lowbudget.errors import DataError
from lowbudget.progress import plural
from lowbudget.recipe import DataConfig


@dataclass
class TrainingImage:
    path: Path
    pixels: np.ndarray  # (R, R, 3) float32 in [0, 1], R = data.resolution
    caption: str | None  # from metadata/CSV; None = drawn from the templates
    mask: np.ndarray | None = None  # (R, R) float32 in [0, 1]; 1 = the loss counts here
    patient: str | None = None  # from a patient_id / study_id column; None = a patient of its own

    @property
    def patient_key(self) -> str:
        """Who the image belongs to: its patient, else itself (a key no patient id can equal)."""
        return self.patient if self.patient is not None else f"\0{self.path}"

    @property
    def digest(self) -> str:
        """Content hash of the preprocessed pixels (the latent cache key)."""
        return hashlib.sha256(self.pixels.tobytes()).hexdigest()


@dataclass
class ImageSet:
    folder: Path
    images: list[TrainingImage]
    caption_source: str
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    patient_column: str | None = None  # where TrainingImage.patient came from

    def __len__(self) -> int:
        return len(self.images)


def load_image_folder(cfg: DataConfig, *, warn: Callable[[str], None] = print) -> ImageSet:
    """Read the recipe's data folder; unreadable files are warned about and skipped."""
    if not cfg.path:
        raise DataError("no training data given; pass --data <folder>, or set data.path or data.phantoms in the recipe")
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        raise DataError(f"data folder '{folder}' does not exist or is not a folder")
    source, captions = resolve_caption_source(folder, cfg)
    patient_column, patients = read_patient_ids(folder, cfg)
    mask_dir = Path(cfg.mask_dir).expanduser() if cfg.mask_dir else None
    if mask_dir is not None and not mask_dir.is_dir():
        raise DataError(f"data.mask_dir '{mask_dir}' does not exist or is not a folder")

    candidates, skipped = image_files(folder, exclude=mask_dir)
    for path, reason in skipped:
        warn(f"skipping {path}: {reason}")
    if cfg.max_images:
        candidates = candidates[: cfg.max_images]
    images, stretched = [], 0
    for path in candidates:
        relative = path.relative_to(folder).as_posix()
        try:
            caption = None if captions is None else caption_for(relative, captions)
            if captions is not None and caption is None:
                raise UnreadableImage(f"no caption for it in the {source} captions")
            with warnings.catch_warnings(record=True) as notes:
                warnings.simplefilter("always", ImageNote)
                pixels, by_content = read_image_scaled(path, cfg)
            pixels = to_rgb(fit_square(pixels, cfg.resolution, cfg.center_crop))
            mask = _read_mask(mask_dir, path, cfg) if mask_dir else None
        except UnreadableImage as exc:
            skipped.append((path, str(exc)))
            warn(f"skipping {path}: {exc}")
            continue
        for note in notes:
            if issubclass(note.category, ImageNote):
                warn(f"{path}: {note.message}")
        images.append(TrainingImage(path=path, pixels=pixels, caption=caption, mask=mask,
                                    patient=caption_for(relative, patients) if patients else None))
        stretched += by_content

    if not images:
        tried = f"{plural(len(candidates), 'file')} tried, none readable" if candidates else "no PNG/JPEG/TIFF, DICOM or NIfTI files found"
        raise DataError(f"data folder '{folder}' has no usable training image ({tried})")
    if 0 < stretched < len(images):  # 8-bit files beside percentile-stretched 16-bit ones: two contrasts
        warn(f"data folder '{folder}': {stretched} of {len(images)} images are stretched by their own gray levels "
             f"(data.intensity = {cfg.intensity!r}), the other {len(images) - stretched} are read at a fixed scale "
             "(8-bit, or a DICOM window); if every file uses its full range, set data.intensity = \"dtype\"")
    return ImageSet(folder=folder, images=images, caption_source=source, skipped=skipped, patient_column=patient_column)


def image_files(folder: Path, exclude: Path | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files under ``folder`` (sorted; hidden files and folders and ``exclude`` left out),
    and those named like images that are not regular files (a FIFO, a socket, a dangling link or
    a link loop) with the reason: reported, never opened."""
    files, odd = [], []
    excluded = exclude.resolve() if exclude is not None else None
    for path in sorted(folder.rglob("*")):
        if path.name == METADATA_FILE or any(p.startswith(".") for p in path.relative_to(folder).parts):
            continue
        if path.is_dir() or image_kind(path) is None:
            continue
        if not path.is_file():
            odd.append((path, "not a regular file (a FIFO, a device, a broken link or a link loop)"))
            continue
        if excluded is not None and excluded in path.resolve().parents:
            continue
        files.append(path)
    return files, odd


def _read_mask(mask_dir: Path, image_path: Path, cfg: DataConfig) -> np.ndarray:
    stem = image_path.name.split(".")[0]
    mask_path = mask_dir / f"{stem}.png"
    if not mask_path.is_file():
        raise UnreadableImage(f"no loss mask {mask_path}")
    try:
        mask = read_mask(mask_path)
    except UnreadableImage as exc:
        raise UnreadableImage(f"loss mask {mask_path} {exc}") from None
    mask = fit_square(mask, cfg.resolution, cfg.center_crop)
    if not mask.any():  # the loss would be 0 at every step this image is drawn
        raise UnreadableImage(f"loss mask {mask_path} is all black: no pixel would train (white = train)")
    return mask


def fit_square(arr: np.ndarray, size: int, center_crop: bool = True) -> np.ndarray:
    """Resize so the short side is ``size`` and centre-crop (or squash) to ``size x size``.

    Works channel by channel in float ("F" mode), so 16-bit precision survives the resize.
    The channel layout is kept: (H, W) in, (size, size) out.
    """
    h, w = arr.shape[:2]
    if center_crop:
        scale = size / min(h, w)
        new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    else:
        new_w, new_h = size, size
    channels = [arr] if arr.ndim == 2 else [arr[..., c] for c in range(arr.shape[2])]
    resized = []
    for ch in channels:
        img = Image.fromarray(np.ascontiguousarray(ch, dtype=np.float32), mode="F")
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC if (new_w, new_h) != (w, h) else Image.Resampling.NEAREST)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        resized.append(np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32))
    out = np.clip(np.stack(resized, axis=-1), 0.0, 1.0)
    return out[..., 0] if arr.ndim == 2 else out


def to_rgb(arr: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W, 3): Stable Diffusion's VAE takes RGB."""
    return np.repeat(arr[..., None], 3, axis=-1) if arr.ndim == 2 else arr
