"""Image ingest: every format, bit depth and caption source, and the broken-input paths."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lowbudget.data import load_image_folder
from lowbudget.data.readers import UnreadableImage, read_image
from lowbudget.data.writers import write_dicom, write_png
from lowbudget.errors import DataError
from lowbudget.recipe import DataConfig

from helpers import noise_png


def cfg(path="", **kw) -> DataConfig:
    return DataConfig(path=str(path), resolution=32, **kw)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "1"])
def test_8bit_modes_read_into_unit_range(tmp_path, mode):
    arr = read_image(noise_png(tmp_path / "x.png", mode=mode), cfg())
    assert arr.dtype == np.float32 and 0 <= arr.min() and arr.max() <= 1
    assert arr.ndim == (3 if mode in ("RGB", "RGBA") else 2) or mode == "P"


def test_rgba_is_composited_over_black(tmp_path):
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3], rgba[:, :8, 3] = 200, 255  # left half opaque, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    arr = read_image(tmp_path / "a.png", cfg())
    assert np.allclose(arr[:, :8], 200 / 255) and np.allclose(arr[:, 8:], 0)


def test_16bit_png_and_tiff_keep_precision(tmp_path):
    ramp = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    write_png(tmp_path / "r16.png", ramp, bits=16)
    Image.fromarray((ramp * 4095).astype(np.uint16)).save(tmp_path / "r12.tif")
    a16 = read_image(tmp_path / "r16.png", cfg(intensity="dtype"))
    assert np.abs(a16 - ramp).max() < 1e-4  # far finer than the 1/255 steps of 8 bit
    a12 = read_image(tmp_path / "r12.tif", cfg(intensity="minmax"))
    assert a12.min() == 0 and a12.max() == 1 and len(np.unique(a12)) > 1000


def test_percentile_window_ignores_outliers(tmp_path):
    img = np.full((64, 64), 1000, np.uint16)
    img[:32] = 2000
    img[0, 0] = 65535  # one hot pixel must not squash the window
    Image.fromarray(img).save(tmp_path / "o.png")
    arr = read_image(tmp_path / "o.png", cfg(percentiles=[1.0, 99.0]))
    assert arr[10, 10] == pytest.approx(1.0) and arr[40, 10] == pytest.approx(0.0)


def test_jpeg(tmp_path):
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / "j.jpg")
    assert read_image(tmp_path / "j.jpg", cfg()).shape == (32, 32, 3)


def test_real_monochrome1_chest_cr_is_inverted():
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    path = Path(get_testdata_file("RG1_UNCR.dcm", download=False))  # a real chest CR, MONOCHROME1, 15 bit
    raw = dcmread(path).pixel_array.astype(np.float64)
    arr = read_image(path, cfg())
    assert arr.shape == raw.shape
    # MONOCHROME1: high stored values display dark, so the display image anti-correlates with them
    assert np.corrcoef(raw.ravel()[::97], arr.ravel()[::97])[0, 1] < -0.99


def test_dicom_window_and_rescale_from_header(tmp_path):
    pixels = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    path = write_dicom(tmp_path / "w.dcm", pixels, bits=12)
    import pydicom

    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000  # values now -1000 .. 7190
    ds.WindowCenter, ds.WindowWidth = 0, 2000  # window -1000 .. 1000
    ds.save_as(path)
    arr = read_image(path, cfg(dicom_window="header"))
    stored = np.round(pixels * 4095)
    expected = np.clip((stored * 2 - 1000 + 1000) / 2000, 0, 1)
    assert np.abs(arr - expected).max() < 1e-5


def test_dicom_multiframe_selects_frame(tmp_path):
    import pydicom

    path = write_dicom(tmp_path / "m.dcm", np.zeros((16, 16)), bits=8)
    ds = pydicom.dcmread(path)
    frames = np.stack([np.full((16, 16), 10 * i, np.uint16) for i in range(5)])
    ds.NumberOfFrames, ds.PixelData = 5, frames.tobytes()
    ds.save_as(path)
    middle = read_image(path, cfg(intensity="dtype"))
    assert middle.mean() == pytest.approx(20 / 255)
    assert read_image(path, cfg(dicom_frame=4, intensity="dtype")).mean() == pytest.approx(40 / 255)
    with pytest.raises(UnreadableImage, match="has 5 frames"):
        read_image(path, cfg(dicom_frame=9))


def test_nifti_slice_and_per_volume_normalisation(tmp_path):
    import nibabel as nib

    vol = np.zeros((20, 24, 9), np.float32)
    for k in range(9):
        vol[..., k] = k * 100.0  # slice k is uniformly k*100
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    mid = read_image(tmp_path / "v.nii.gz", cfg(intensity="minmax"))
    assert mid.shape == (24, 20)  # rot90 of (20, 24)
    assert np.allclose(mid, 4 / 8)  # window over the whole volume, not the slice
    assert np.allclose(read_image(tmp_path / "v.nii.gz", cfg(intensity="minmax", nifti_slice=8)), 1.0)


def test_folder_with_mixed_formats_and_metadata_captions(mixed_folder):
    images = load_image_folder(cfg(mixed_folder))
    suffixes = {im.path.suffix for im in images.images}
    assert len(images) == 8 and suffixes == {".png", ".dcm"} and images.caption_source == "metadata"
    assert all(im.pixels.shape == (32, 32, 3) and im.caption == "a chest x-ray" for im in images.images)


def test_mixed_bit_depths_warn_unless_read_at_their_full_scale(mixed_folder, tmp_path):
    """The phantom folder's 16-bit PNGs and DICOMs fill their range; percentile stretching gives
    them a different contrast from the 8-bit PNGs beside them, which training would learn."""
    warnings = []
    load_image_folder(cfg(mixed_folder), warn=warnings.append)
    assert len(warnings) == 1 and "stretched by their own gray levels" in warnings[0] and str(mixed_folder) in warnings[0]
    assert 'data.intensity = "dtype"' in warnings[0]
    warnings.clear()
    load_image_folder(cfg(mixed_folder, intensity="dtype"), warn=warnings.append)
    assert warnings == []
    for i in range(3):  # one kind only, stretched or not: nothing to warn about
        write_png(tmp_path / "deep" / f"{i}.png", np.random.default_rng(i).random((16, 16)), bits=16)
        noise_png(tmp_path / "flat" / f"{i}.png", seed=i)
    load_image_folder(cfg(tmp_path / "deep"), warn=warnings.append)
    load_image_folder(cfg(tmp_path / "flat"), warn=warnings.append)
    assert warnings == []


def test_csv_captions_and_missing_column(tmp_path):
    noise_png(tmp_path / "d" / "a.png")
    (tmp_path / "caps.csv").write_text("path,report\na.png,small effusion\n")
    images = load_image_folder(cfg(tmp_path / "d", captions="csv", captions_csv=str(tmp_path / "caps.csv"),
                                   csv_file_column="path", csv_text_column="report"))
    assert images.images[0].caption == "small effusion"
    with pytest.raises(DataError, match="lacks column\\(s\\) file_name, text; it has path, report"):
        load_image_folder(cfg(tmp_path / "d", captions="csv", captions_csv=str(tmp_path / "caps.csv")))


def test_bad_metadata_line_is_named(tmp_path):
    noise_png(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "x"}\n{"file": 1}\n')
    with pytest.raises(DataError, match="metadata.jsonl:2 is not a JSON object"):
        load_image_folder(cfg(tmp_path))


def test_unreadable_files_are_reported_and_skipped(tmp_path):
    noise_png(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 200)
    (tmp_path / "notes.txt").write_text("ignored: not an image type")
    warnings = []
    images = load_image_folder(cfg(tmp_path), warn=warnings.append)
    assert [im.path.name for im in images.images] == ["good.png"]
    assert sorted(p.name for p, _ in images.skipped) == ["broken.dcm", "broken.png"]
    assert all(str(tmp_path) in w for w in warnings) and len(warnings) == 2


def test_empty_missing_and_all_broken_folders_fail(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(cfg(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no PNG/JPEG/TIFF, DICOM or NIfTI files found"):
        load_image_folder(cfg(tmp_path / "empty"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="1 file tried, none readable"):
        load_image_folder(cfg(tmp_path / "bad"), warn=lambda m: None)
    with pytest.raises(DataError, match="pass --data"):
        load_image_folder(cfg(""))


def test_resize_and_centre_crop(tmp_path):
    wide = np.zeros((40, 80), np.float32)
    wide[:, 20:60] = 1.0  # the centre square is white
    write_png(tmp_path / "w.png", wide)
    img = load_image_folder(cfg(tmp_path)).images[0]
    assert img.pixels.shape == (32, 32, 3) and img.pixels[4:-4, 4:-4].min() > 0.95


def test_loss_masks_are_matched_by_stem(tmp_path):
    noise_png(tmp_path / "d" / "a.png")
    mask = np.zeros((40, 48), np.uint8)
    mask[:, 24:] = 255
    Image.fromarray(mask).save((tmp_path / "m").mkdir() or tmp_path / "m" / "a.png")
    img = load_image_folder(cfg(tmp_path / "d", mask_dir=str(tmp_path / "m"))).images[0]
    assert img.mask.shape == (32, 32) and img.mask[:, :8].max() == 0 and img.mask[:, -8:].min() == 1
