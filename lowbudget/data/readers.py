"""Read one medical or ordinary image file into a float array in [0, 1].

Every reader returns ``(H, W)`` (grayscale) or ``(H, W, 3)`` (colour) float32 in [0, 1], so
the rest of the pipeline never sees bit depths, photometric interpretations or volumes.
Failures raise :class:`UnreadableImage` with a short reason; the dataset reports the path
and skips the file. A file that is read, but not quite as it is stored (a volume with a few
NaN voxels), emits an :class:`ImageNote` warning that the dataset reports beside the path.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut

from lowbudget.errors import quote
from lowbudget.recipe import DataConfig

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class UnreadableImage(Exception):
    """A file that is not a usable image; the message says why."""


class ImageNote(UserWarning):
    """A file was read, with a change the user should hear about."""


def image_kind(path: Path) -> str | None:
    """'pil', 'dicom', 'nifti' or None (not an image we read)."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(PIL_SUFFIXES):
        return "pil"
    if "." not in name and _has_dicom_preamble(path):  # PACS exports often have no suffix
        return "dicom"
    return None


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def read_image(path: Path, cfg: DataConfig) -> np.ndarray:
    """Read ``path`` as float32 in [0, 1], (H, W) or (H, W, 3)."""
    return read_image_scaled(path, cfg)[0]


def read_image_scaled(path: Path, cfg: DataConfig) -> tuple[np.ndarray, bool]:
    """:func:`read_image`, and whether the file was stretched by its own gray levels
    (percentile / minmax) rather than read at a fixed scale (8-bit /255, 16-bit under
    ``data.intensity = "dtype"``, a DICOM header window). A folder that mixes both kinds
    gets two contrasts for the same anatomy."""
    kind = image_kind(path)
    readers = {"pil": _read_pil, "dicom": _read_dicom, "nifti": _read_nifti}
    if kind is None:
        raise UnreadableImage("not a PNG/JPEG/TIFF, DICOM or NIfTI file")
    try:
        arr, stretched = readers[kind](path, cfg)
    except UnreadableImage:
        raise
    except Exception as exc:  # each library has its own error types for corrupt files
        raise UnreadableImage(f"{type(exc).__name__}: {quote(exc) if str(exc).strip() else 'unreadable'}") from exc
    if not np.isfinite(arr).all():
        raise UnreadableImage("contains NaN or infinite values")
    if min(arr.shape[:2]) < 8:
        raise UnreadableImage(f"image is only {arr.shape[1]}x{arr.shape[0]} pixels")
    return np.clip(arr, 0.0, 1.0).astype(np.float32), stretched


# --------------------------------------------------------------------------- intensity


def window(arr: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear map of [low, high] to [0, 1], clipped."""
    if high <= low:  # a constant image: mid-grey rather than a division by zero
        return np.full(arr.shape, 0.5, dtype=np.float32)
    return np.clip((arr.astype(np.float32) - low) / (high - low), 0.0, 1.0)


def normalise(arr: np.ndarray, cfg: DataConfig, dtype_max: float | None = None, *,
              reference: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
    """Scale a high-bit-depth array to [0, 1] as the recipe says; True when the window came
    from the values themselves (percentile / minmax) rather than the data type's range.

    ``reference`` is the array the window is computed on (a whole volume for a NIfTI slice),
    so that every slice of a volume shares one window.
    """
    ref = arr if reference is None else reference
    if cfg.intensity == "dtype" and dtype_max:
        return window(arr, 0.0, dtype_max), False
    if cfg.intensity == "minmax":
        return window(arr, float(ref.min()), float(ref.max())), True
    low, high = np.percentile(ref, cfg.percentiles)
    return window(arr, float(low), float(high)), True


# --------------------------------------------------------------------------- PNG / JPEG / TIFF


def _read_pil(path: Path, cfg: DataConfig) -> tuple[np.ndarray, bool]:
    with Image.open(path) as img:
        img.load()
        mode = img.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            return normalise(np.asarray(img, dtype=np.float32), cfg, 65535.0)
        if mode in ("I", "F"):
            arr = np.asarray(img, dtype=np.float64)
            dtype_max = 65535.0 if mode == "I" and arr.max() <= 65535 else float(arr.max() or 1.0)
            return normalise(arr, cfg, dtype_max)
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
            # Composite over black: transparent regions are background, as in a scan.
            rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
            return rgba[..., :3] * rgba[..., 3:4], False
        if mode in ("1", "L"):
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0, False
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0, False


# --------------------------------------------------------------------------- DICOM


def _read_dicom(path: Path, cfg: DataConfig) -> tuple[np.ndarray, bool]:
    ds = pydicom.dcmread(str(path))
    if "PixelData" not in ds:
        raise UnreadableImage("DICOM file has no pixel data")
    pixels = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if frames > 1:
        index = frames // 2 if cfg.dicom_frame < 0 else cfg.dicom_frame
        if index >= frames:
            raise UnreadableImage(f"data.dicom_frame = {cfg.dicom_frame} but the file has {frames} frames")
        pixels = pixels[index]
    if photometric == "PALETTE COLOR":  # the stored values are indices into a colour table
        return _palette_rgb(pixels, ds), False
    if not photometric.startswith("MONOCHROME"):  # pydicom already decoded YBR to RGB
        return pixels.astype(np.float32) / float(2 ** int(ds.BitsStored) - 1), False
    values = apply_modality_lut(pixels, ds).astype(np.float64)  # rescale slope / intercept
    center, width = _dicom_window(ds)
    if cfg.dicom_window == "header" and center is not None:
        out, stretched = window(values, center - width / 2.0, center + width / 2.0), False
    else:
        out, stretched = normalise(values, cfg, float(2 ** int(ds.BitsStored) - 1))
    # MONOCHROME1: the lowest value is displayed white (e.g. many CR/DX chest films).
    return (1.0 - out if photometric == "MONOCHROME1" else out), stretched


def _palette_rgb(pixels: np.ndarray, ds) -> np.ndarray:
    descriptor = getattr(ds, "RedPaletteColorLookupTableDescriptor", None)
    if descriptor is None or "RedPaletteColorLookupTableData" not in ds:
        raise UnreadableImage("PALETTE COLOR without a colour lookup table: its values are table indices, not intensities")
    rgb = apply_color_lut(pixels, ds)  # (H, W, 3), entries of `descriptor[2]` bits
    return rgb.astype(np.float32) / float(2 ** int(descriptor[2]) - 1)


def _first_value(value) -> float:
    return float(value[0]) if isinstance(value, MultiValue) else float(value)


def _dicom_window(ds) -> tuple[float | None, float]:
    center, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if center is None or width is None:
        return None, 0.0
    # Either can be multi-valued (several presets); the first is the default.
    center, width = _first_value(center), _first_value(width)
    return (center, width) if width > 0 else (None, 0.0)


# --------------------------------------------------------------------------- NIfTI


def _read_nifti(path: Path, cfg: DataConfig) -> tuple[np.ndarray, bool]:
    volume = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    if volume.ndim == 4:  # a time series / multi-echo: the first volume
        volume = volume[..., 0]
    volume = _finite_voxels(volume)
    if volume.ndim == 2:
        return normalise(np.rot90(volume), cfg)
    if volume.ndim != 3:
        raise UnreadableImage(f"NIfTI volume has {volume.ndim} dimensions; expected 2, 3 or 4")
    axis = cfg.nifti_axis
    if not 0 <= axis < 3:
        raise UnreadableImage(f"data.nifti_axis = {axis}; expected 0, 1 or 2")
    n = volume.shape[axis]
    index = n // 2 if cfg.nifti_slice < 0 else cfg.nifti_slice
    if index >= n:
        raise UnreadableImage(f"data.nifti_slice = {cfg.nifti_slice} but axis {axis} has {n} slices")
    slab = np.take(volume, index, axis=axis)
    # One window per volume, so slices of one patient keep their relative brightness.
    # rot90 puts anterior up for RAS-oriented axial slices (radiological display).
    return normalise(np.rot90(slab), cfg, reference=volume)


def _finite_voxels(volume: np.ndarray) -> np.ndarray:
    """NaN / infinite voxels (common outside a brain mask) become the lowest finite value."""
    bad = ~np.isfinite(volume)
    if not bad.any():
        return volume
    if bad.all():
        raise UnreadableImage("every voxel is NaN or infinite")
    fill = float(volume[~bad].min())
    warnings.warn(ImageNote(f"{int(bad.sum())} of {volume.size} voxels are NaN or infinite; "
                            f"read as the volume's lowest finite value ({fill:g})"), stacklevel=2)
    return np.where(bad, fill, volume).astype(np.float32)


def read_mask(path: Path) -> np.ndarray:
    """A mask image as (H, W) float32 in [0, 1], white = 1 (a loss mask, an inpainting mask)."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"is not a readable image ({quote(exc)})") from None
