"""`lowbudget preview`: the images as training reads them, and the warnings that matter."""

from __future__ import annotations

import numpy as np
import pydicom
from PIL import Image

from helpers import ROOT, assert_one_line_error, noise_png, run
from lowbudget.data.writers import write_dicom


def _edit(path, **fields) -> None:
    ds = pydicom.dcmread(path)
    for key, value in fields.items():
        setattr(ds, key, value)
    ds.save_as(path)


def _scans(folder):
    folder.mkdir()
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))  # (64, 64)
    write_dicom(folder / "dark.dcm", ramp * 0.01, bits=16)  # no window: at dtype scale it reads black
    write_dicom(folder / "film.dcm", ramp, bits=12, monochrome1=True)
    write_dicom(folder / "presets.dcm", ramp, bits=12)
    _edit(folder / "presets.dcm", WindowCenter=[2000, 1000], WindowWidth=[4000, 2000],
          WindowCenterWidthExplanation=["SOFT", "LUNG"])
    write_dicom(folder / "seg.dcm", (ramp > 0.5).astype(np.float32), bits=12)
    _edit(folder / "seg.dcm", Modality="SEG")
    noise_png(folder / "gray.png", seed=1)
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "colour.png")
    return folder


def test_preview_reads_as_training_does_and_warns_where_it_matters(monkeypatch, capsys, tmp_path):
    data = _scans(tmp_path / "scans")
    sheet = tmp_path / "sheet.png"
    code, out, err = run(monkeypatch, capsys, "preview", data, "--set", "data.intensity=dtype", "--set",
                         "data.resolution=64", "-o", sheet)
    assert code == 0, err
    rows = {line.split("\t")[0]: line.split("\t") for line in out.splitlines()}
    assert set(rows) == {"colour.png", "dark.dcm", "film.dcm", "gray.png", "presets.dcm", "seg.dcm"}
    assert rows["film.dcm"][2] == "scaled by its 12 stored bits (no window in the header), inverted (MONOCHROME1)"
    assert rows["presets.dcm"][2] == "window 2000/4000 (SOFT)"
    assert rows["gray.png"][1:3] == ["48x40", "8-bit /255"]
    assert rows["gray.png"][3] == "a medical image of {token} (template 1 of 1)"
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    expected = ["dark.dcm comes out black (brightest pixel 0.01",
                "presets.dcm has 2 window presets (SOFT, LUNG); the first is used: window 2000/4000 (SOFT)",
                "seg.dcm is a DICOM segmentation (SEG)",
                "1 of 6 images are colour and the rest gray (first colour: colour.png)",
                "the colour images (1) go into the embedded base"]
    for text in expected:
        assert any(text in w for w in warnings), (text, warnings)
    assert len(warnings) == len(expected), warnings
    assert "6 images read at 64 px, 5 warnings" in err
    with Image.open(sheet) as im:
        assert im.width > 6 * 128  # six cells of 128 px side by side, with their captions above
    # the recipe decides how files are read: percentile stretching lifts the dark file
    code, out, err = run(monkeypatch, capsys, "preview", data, "--set", "data.resolution=64", "-o", sheet, "--overwrite")
    assert code == 0 and "comes out black" not in err


def test_preview_with_a_recipe_shows_its_captions_and_token(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "phantom", "images", "chest", "--finding", "effusion", "-n", "3", "-o",
                       tmp_path / "ph")
    assert code == 0, err
    code, out, err = run(monkeypatch, capsys, "preview", tmp_path / "ph", "--recipe",
                         ROOT / "recipes/phantom/chest-ti.toml", "-o", tmp_path / "sheet.png")
    assert code == 0, err
    assert all(line.endswith(" with <effusion>") for line in out.splitlines()), out
    assert "3 images read at 64 px, 0 warnings" in err


def test_preview_errors_are_one_line(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "preview", tmp_path / "nowhere", "-o", tmp_path / "s.png")
    assert_one_line_error(code, err, r"data folder '.*nowhere' does not exist")
    code, _, err = run(monkeypatch, capsys, "preview", tmp_path, "--set", "optim.lr_ti=1", "-o", tmp_path / "s.png")
    assert_one_line_error(code, err, r"--set optim.lr_ti: without --recipe only data.\* values apply")
