"""What training will see, before it trains: each image as read, how it was read, its caption,
and the warnings that matter.

The images come from :func:`load_image_folder`, the same reader training uses, so the contact
sheet shows the pixels the VAE will encode. Beside each, how the file was scaled (8-bit, a
DICOM window -- and which preset --, a percentile stretch, a MONOCHROME1 inversion, the frame of
a multi-frame file) and the warnings a folder of real scans earns: a file that comes out black,
a DICOM segmentation taken for an image, colour beside gray, colour into a gray base.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.multival import MultiValue

from lowbudget.data.dataset import ImageSet, load_image_folder
from lowbudget.data.readers import image_kind
from lowbudget.recipe import DataConfig
from lowbudget.viz import image_grid, save_png, to_pil

DARK = 0.05  # an image whose brightest pixel is below this reads as black
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage SOP class


@dataclass
class PreviewFile:
    path: Path
    size: str  # the file's own width x height
    read_as: str  # how its values became [0, 1]
    caption: str
    colour: bool
    brightest: float  # max of the pixels training sees
    warnings: list[str] = field(default_factory=list)


@dataclass
class Preview:
    images: ImageSet
    files: list[PreviewFile]
    warnings: list[str]  # about the folder, then about single files

    def sheet(self, path: Path, per_row: int = 8, cell: int = 128, limit: int = 96) -> Path:
        """A contact sheet: each image (the first ``limit``) as training sees it, under its name,
        how it was read, and its caption."""
        shown = self.images.images[:limit]
        thumbs = [to_pil(im.pixels).resize((cell, cell), Image.Resampling.BILINEAR) for im in shown]
        labels = [f"{f.path.name}\n{f.size}, {f.read_as}\n{f.caption}" for f in self.files[:limit]]
        rows = [thumbs[i : i + per_row] for i in range(0, len(thumbs), per_row)]
        cells = [labels[i : i + per_row] for i in range(0, len(labels), per_row)]
        count = f"{len(shown)} of {len(self.files)}" if len(shown) < len(self.files) else f"{len(self.files)}"
        title = f"{self.images.folder}: {count} images as training reads them ({self.images.caption_source} captions)"
        return save_png(image_grid(rows, cell_labels=cells, title=title), path)


def preview(cfg: DataConfig, gray_base: bool = True, token: str = "") -> Preview:
    """Read ``cfg.path`` as training would and say what is worth knowing about it; ``gray_base``:
    the base saw grayscale images only (the embedded ones), ``token`` what {token} stands for."""
    said: list[str] = []
    images = load_image_folder(cfg, warn=said.append)
    files = [_describe(im.path, im.pixels, _caption(im.caption, cfg, token), cfg) for im in images.images]
    return Preview(images, files, said + _folder_warnings(files, gray_base) + [w for f in files for w in f.warnings])


def _caption(caption: str | None, cfg: DataConfig, token: str) -> str:
    text = cfg.templates[0] if caption is None else cfg.caption_format.replace("{caption}", caption)
    text = text.replace("{token}", token) if token else text
    return text if caption is not None else f"{text} (template 1 of {len(cfg.templates)})"


def _describe(path: Path, pixels: np.ndarray, caption: str, cfg: DataConfig) -> PreviewFile:
    colour = bool(np.abs(pixels - pixels.mean(axis=-1, keepdims=True)).max() > 1 / 255)  # (R, R, 3)
    brightest = float(pixels.max())
    if image_kind(path) == "dicom":
        size, read_as, warnings = _dicom(path, cfg)
    else:
        size, read_as, warnings = _other(path, cfg)
    if brightest < DARK:
        warnings.append(f"{path.name} comes out black (brightest pixel {brightest:.2f} after reading it {read_as}); "
                        "try data.intensity = \"percentile\"" + (" or data.dicom_window = \"percentile\""
                                                                 if image_kind(path) == "dicom" else ""))
    return PreviewFile(path, size, read_as, caption, colour, brightest, warnings)


def _other(path: Path, cfg: DataConfig) -> tuple[str, str, list[str]]:
    if image_kind(path) == "nifti":
        return "volume", f"slice {cfg.nifti_slice if cfg.nifti_slice >= 0 else 'middle'} of axis {cfg.nifti_axis}, " \
                         f"{_stretch(cfg)}", []
    with Image.open(path) as img:
        size, mode = f"{img.width}x{img.height}", img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return size, f"16-bit, {_stretch(cfg, 'its bit depth')}", []
    return size, "8-bit /255", []


def _stretch(cfg: DataConfig, dtype: str = "its value range") -> str:
    if cfg.intensity == "dtype":
        return f"scaled by {dtype}"
    if cfg.intensity == "minmax":
        return "stretched min to max"
    return f"stretched {cfg.percentiles[0]:g}-{cfg.percentiles[1]:g} percentile"


def _dicom(path: Path, cfg: DataConfig) -> tuple[str, str, list[str]]:
    ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    size, warnings = f"{ds.get('Columns', '?')}x{ds.get('Rows', '?')}", []
    name = path.name
    if ds.get("Modality") == "SEG" or str(ds.get("SOPClassUID", "")) == SEG_STORAGE:
        warnings.append(f"{name} is a DICOM segmentation (SEG), not an image: training would learn its mask; "
                        "move it out of the data folder (or use it as data.mask_dir)")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    parts = []
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        parts.append(f"frame {frames // 2 if cfg.dicom_frame < 0 else cfg.dicom_frame} of {frames}")
    if photometric == "PALETTE COLOR":
        parts.append("PALETTE COLOR through its colour table")
    elif not photometric.startswith("MONOCHROME"):
        parts.append(f"{photometric} colour")
    else:
        parts.append(_dicom_window(ds, cfg, warnings, name))
        if photometric == "MONOCHROME1":
            parts.append("inverted (MONOCHROME1)")
    return size, ", ".join(parts), warnings


def _dicom_window(ds, cfg: DataConfig, warnings: list[str], name: str) -> str:
    centers, widths = ds.get("WindowCenter"), ds.get("WindowWidth")
    if cfg.dicom_window != "header" or centers is None or widths is None:
        missing = " (no window in the header)" if cfg.dicom_window == "header" else ""
        return _stretch(cfg, f"its {ds.get('BitsStored', '?')} stored bits") + missing
    centers = list(centers) if isinstance(centers, MultiValue) else [centers]
    widths = list(widths) if isinstance(widths, MultiValue) else [widths]
    names = ds.get("WindowCenterWidthExplanation")
    names = list(names) if isinstance(names, MultiValue) else [names] if names else []
    used = f"window {float(centers[0]):g}/{float(widths[0]):g}" + (f" ({names[0]})" if names else "")
    if len(centers) > 1:
        presets = ", ".join(f"{names[i] if i < len(names) else f'{float(c):g}/{float(w):g}'}"
                            for i, (c, w) in enumerate(zip(centers, widths)))
        warnings.append(f"{name} has {len(centers)} window presets ({presets}); "
                        f"the first is used: {used}")
    return used


def _folder_warnings(files: list[PreviewFile], gray_base: bool) -> list[str]:
    colour = [f for f in files if f.colour]
    out = []
    if colour and len(colour) < len(files):
        out.append(f"{len(colour)} of {len(files)} images are colour and the rest gray (first colour: "
                   f"{colour[0].path.name}); a token learns the difference as part of the finding")
    if colour and gray_base:
        out.append(f"the colour images ({len(colour)}) go into the embedded base, which was pretrained on grayscale "
                   "phantoms only: it draws gray; train colour data on a Stable Diffusion checkpoint (--base)")
    return out
