"""Hardening (#15): unusable adapters, impossible values, other people's files, broken inputs,
faults and determinism. Every bad case ends in one line naming the input, exit code 1, no
traceback, and nothing the user had is replaced without --overwrite."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import noise_png, tiny_recipe
from lowbudget.adapters.own_files import LORA_WEIGHT_NAME, Provenance, save_embedding
from lowbudget.errors import TrainingError
from lowbudget.io import MARKER, atomic_write_text
from lowbudget.recipe import OptimConfig
from lowbudget.training import train
from helpers import ROOT, assert_one_line_error, run

QUIET = {"progress": False, "log": lambda m: None}


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory, tiny_base, mixed_folder) -> Path:
    out = tmp_path_factory.mktemp("lora") / "run"
    train(tiny_recipe(mixed_folder, out, tiny_base, "lora", steps=1), **QUIET)
    return out / LORA_WEIGHT_NAME


def edited_lora(lora_file: Path, folder: Path, edit) -> Path:
    tensors = load_file(lora_file)
    edit(tensors)
    path = folder / "edited.safetensors"
    save_file(tensors, path)
    return path


def _first(tensors, part):
    return next(k for k in tensors if part in k)


# --------------------------------------------------------------------------- 2. unusable LoRA tensors


@pytest.mark.parametrize("edit,pattern", [
    (lambda t: t.__setitem__(_first(t, "lora_A"), torch.tensor(1.0)), r"has shape \[\]; LoRA matrices have 2 dimensions"),
    (lambda t: t[_first(t, "lora_B")].fill_(float("nan")), r"holds NaN or infinite values"),
    (lambda t: t[_first(t, "lora_B")].fill_(1e6), r"holds values up to 1e\+06"),
    (lambda t: t.__setitem__(_first(t, "lora_A"), torch.zeros(3, t[_first(t, "lora_A")].shape[1])), r"has rank 3 but its lora_B has"),
])
def test_unusable_lora_is_refused_by_loaders_and_shown_by_inspect(monkeypatch, capsys, tmp_path, tiny_base, lora_file,
                                                                  edit, pattern):
    path = edited_lora(lora_file, tmp_path, edit)
    code, out, _ = run(monkeypatch, capsys, "inspect", path)
    assert code == 1 and "UNUSABLE" in out and re.search(pattern, out), out
    code, _, err = run(monkeypatch, capsys, "generate", "x", "--base", tiny_base, "--adapter", path, "-n", 1,
                       "--steps", 1, "--size", 32, "--output", tmp_path / "g")
    assert_one_line_error(code, err, pattern)


def test_lora_for_modules_or_shapes_the_base_lacks_is_refused(monkeypatch, capsys, tmp_path, tiny_base, lora_file):
    def rename(t):
        key = _first(t, "lora_A")
        t[key.replace("down_blocks.0", "down_blocks.7")] = t.pop(key)

    path = edited_lora(lora_file, tmp_path, rename)
    code, _, err = run(monkeypatch, capsys, "generate", "x", "--base", tiny_base, "--adapter", path, "-n", 1,
                       "--steps", 1, "--size", 32, "--output", tmp_path / "g")
    assert_one_line_error(code, err, r"adapts unet\.down_blocks\.7\..*which base .* does not have")

    def widen(t):  # a self-attention LoRA whose output does not fit the module
        key = _first(t, "lora_B")
        t[key] = torch.zeros(t[key].shape[0] + 8, t[key].shape[1])

    path = edited_lora(lora_file, tmp_path, widen)
    code, out, _ = run(monkeypatch, capsys, "inspect", path, "--base", tiny_base)
    assert code == 1 and re.search(r"fits base +NO: .*has output size \d+ but unet\.", out), out


def test_a_token_that_is_already_a_word_is_refused_by_convert_and_library_add(monkeypatch, capsys, tmp_path):
    emb = save_embedding(tmp_path / "lung.safetensors", "lung", torch.randn(2, 32), Provenance("b", "f"))
    code, _, err = run(monkeypatch, capsys, "convert", emb, "--to", "a1111")
    assert_one_line_error(code, err, r"token 'lung' already exists in the vocabulary of 'CLIP \(every SD 1.x / 2.x / XL base\)'")
    code, _, err = run(monkeypatch, capsys, "library", "add", emb, "--library", tmp_path / "lib")
    assert_one_line_error(code, err, r"token 'lung' already exists")
    assert not (tmp_path / "lib").exists()
    code, _, err = run(monkeypatch, capsys, "convert", emb, "--to", "a1111", "--token", "<lung-2>")
    assert code == 0, err


# --------------------------------------------------------------------------- 3. impossible values


BAD_VALUES = [
    (["generate", "x", "--size", "0"], r"--size = 0 must be a multiple of 8 in \[8, 4096\]"),
    (["generate", "x", "--size", "7"], r"--size = 7 must be a multiple of 8"),
    (["generate", "x", "--size", "-64"], r"--size = -64 must be"),
    (["generate", "x", "--batch-size", "0"], r"--batch-size = 0 must be >= 1"),
    (["generate", "x", "--batch-size", "-1"], r"--batch-size = -1 must be >= 1"),
    (["generate", "x", "--steps", "5000"], r"--steps = 5000 must be in \[1, 1000\]"),
    (["generate", "x", "--guidance", "nan"], r"--guidance = nan must be a finite number"),
    (["generate", "x", "--guidance", "inf"], r"--guidance = inf must be a finite number"),
    (["generate", "x", "--seed", str(2**64)], r"seed = 18446744073709551616 must be an integer in \[0, 2\*\*63 - 1\]"),
    (["generate", "x", "-n", "0"], r"-n 0 must be at least 1"),
    (["compose", "--combine", "a", "--combine", "b", "--weights", "x,y"], r"--weights 'x,y' must be comma-separated numbers"),
    (["compose", "--combine", "a", "--combine", "b", "--weights", "nan,1"], r"must be finite numbers"),
    (["compose", "--combine", "a", "--combine", "b", "--weights", "0,0", "--steps", "1", "--size", "32",
      "--base", "{base}"], r"every composition weight is 0"),
    (["compose", "--combine", "a", "--combine", "b", "--seeds", "-1"], r"seed = -1 must be an integer"),
    (["inpaint", "{png}", "--prompt", "x", "--box", "1,1,9,9", "--feather", "100000", "--size", "32",
      "--base", "{base}"], r"--feather = 100000 must be in \[0, 16\]"),
    (["inpaint", "{png}", "--prompt", "x", "--box", "1,1,9,9", "--strength", "nan", "--size", "32",
      "--base", "{base}"], r"--strength = nan must be a finite number"),
    (["phantom", "images", "chest", "--size", "100000"], r"--size = 100000 must be in \[16, 4096\]"),
    (["phantom", "images", "chest", "--prevalence", "2"], r"--prevalence = 2.0 must be in \[0, 1\]"),
    (["phantom", "images", "chest", "-n", "0"], r"-n = 0 must be >= 1"),
    (["evaluate", "diversity", "--generated", "{dir}", "--size", "0"], r"--size = 0 must be in \[16, 4096\]"),
    (["evaluate", "memorisation", "--generated", "{dir}", "--training", "{dir}", "--percentile", "200"],
     r"--percentile = 200.0 must be in \[0, 100\]"),
    (["evaluate", "classifier", "--real", "{dir}", "--steps", "0"], r"--steps = 0 must be >= 1"),
    (["evaluate", "realism", "--real", "{dir}", "--generated", "{dir}", "--input-size", "0"], r"--input-size = 0 must be in"),
    (["phantom", "pretrain-base", "--set", "unet_steps=-1"], r"--set unet_steps = -1 must be >= 1"),
    (["compose", "--interpolate", "a", "--interpolate", "b", "--weight-steps", "1", "--steps", "1", "--size", "32",
      "--base", "{base}"], r"--weight-steps 1: an interpolation needs at least 2 weights"),
    (["generate", "a <nodule> on the left", "--base", "{base}", "-n", "1", "--steps", "1", "--size", "32"],
     r"the prompt names <nodule>, which this model does not know \(no token is loaded\); load its file with --adapter"),
]


@pytest.mark.parametrize("args,pattern", BAD_VALUES)
def test_values_that_cannot_work_are_refused_before_any_work(monkeypatch, capsys, tmp_path, tiny_base, args, pattern):
    png = noise_png(tmp_path / "in.png", shape=(32, 32))
    args = [a.format(base=tiny_base, png=png, dir=tmp_path) for a in args]
    out = tmp_path / ("out.png" if args[0] in ("compose", "inpaint") else "out")
    code, _, err = run(monkeypatch, capsys, *args, "--output", out)
    assert_one_line_error(code, err, pattern)
    if args[0] != "compose" or "--base" not in args:  # refused before anything was written
        assert not out.exists()


@pytest.mark.parametrize("override,pattern", [
    ("optim.lr_ti=nan", r"optim.lr_ti = nan must be a finite number"),
    ("optim.lr_lora=inf", r"optim.lr_lora = inf must be a finite number"),
    ("optim.max_grad_norm=nan", r"optim.max_grad_norm = nan must be a finite number"),
    ("method.lora.alpha=nan", r"method.lora.alpha = nan must be a finite number"),
    ("output.validation_inference_steps=5000", r"output.validation_inference_steps = 5000 must be in \[1, 1000\]"),
    ("output.validation_seeds=[]", r"output.validation_seeds is empty"),
    ("output.validation_guidance=nan", r"output.validation_guidance = nan must be a finite number"),
    (f"optim.seed={2**64}", r"optim.seed = 18446744073709551616 must be an integer in \[0, 2\*\*63 - 1\]"),
    ("data.resolution=7", r"data.resolution = 7 must be a multiple of 8"),
])
def test_check_recipe_refuses_values_that_cannot_work(monkeypatch, capsys, tmp_path, override, pattern):
    dotted, value = override.split("=", 1)
    table, key = dotted.rsplit(".", 1)
    path = tmp_path / "r.toml"
    path.write_text('[method]\nkind = "ti"\n[[method.tokens]]\nname = "<t>"\ninit = "lung"\n'
                    f"[{table}]\n{key} = {value}\n")
    code, _, err = run(monkeypatch, capsys, "check-recipe", path)
    assert_one_line_error(code, err, pattern)


# --------------------------------------------------------------------------- 4. the rule for outputs


def test_no_command_mixes_into_or_replaces_what_it_did_not_write(monkeypatch, capsys, tmp_path, tiny_base, mixed_folder):
    mine = tmp_path / "mine"
    photo = noise_png(mine / "photo.png", shape=(32, 32))
    before = photo.read_bytes()
    fast = ["--base", tiny_base, "--steps", "1", "--size", "32"]
    refusals = [
        ["phantom", "images", "chest", "-n", "2", "--output", mine],
        ["generate", "x", "-n", "1", *fast, "--output", mine],
        ["compose", "--combine", "a", "--combine", "b", "--seeds", "0", *fast, "--output", photo],
        ["inpaint", photo, "--prompt", "x", "--box", "1,1,9,9", *fast, "--output", photo],
        ["train", ROOT / "recipes/phantom/chest-ti.toml", "--data", mixed_folder, "--output", mine],
        ["evaluate", "diversity", "--generated", mixed_folder, "--output", mine],
        ["library", "add", save_embedding(tmp_path / "e.safetensors", "<e>", torch.randn(2, 64), Provenance("b", "f")),
         "--library", mine],
    ]
    for args in refusals:
        code, _, err = run(monkeypatch, capsys, *args)
        assert_one_line_error(code, err, r"(holds 1 item\(s\) lowbudget did not write|already exists and lowbudget did not "
                                         r"write it|is the input itself).*--overwrite")
    assert sorted(p.name for p in mine.iterdir()) == ["photo.png"] and photo.read_bytes() == before

    # a folder we made may be written again; --overwrite writes beside the user's file, never deleting it
    code, _, err = run(monkeypatch, capsys, "generate", "x", "-n", "1", *fast, "--output", tmp_path / "g")
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, "generate", "x", "-n", "1", *fast, "--output", tmp_path / "g")
    assert code == 0, err
    code, _, err = run(monkeypatch, capsys, "phantom", "images", "chest", "-n", "2", "--output", mine, "--overwrite")
    assert code == 0 and photo.read_bytes() == before and (mine / MARKER).is_file()
    # a PNG lowbudget wrote may be replaced by the next run
    strip = tmp_path / "strip.png"
    for _ in range(2):
        code, _, err = run(monkeypatch, capsys, "compose", "--combine", "a", "--combine", "b", "--seeds", "0", *fast,
                           "--output", strip)
        assert code == 0, err


@pytest.mark.parametrize("args,pattern", [
    (["generate", "x", "--output", "{file}"], r"--output '.*f.txt' is a file; expected a folder"),
    (["generate", "x", "--output", "{file}/sub"], r"--output '.*sub' lies under '.*f.txt', which is a file"),
    (["compose", "--combine", "a", "--combine", "b", "--output", "{dir}"], r"--output '.*d' is a folder; expected a file name"),
    (["phantom", "images", "chest", "--output", "{file}/p"], r"lies under '.*f.txt', which is a file"),
    (["convert", "{emb}", "--to", "a1111", "--output", "{file}/x.pt"], r"lies under '.*f.txt', which is a file"),
    (["make-base", "{file}/b"], r"lies under '.*f.txt', which is a file"),
])
def test_outputs_in_impossible_places_give_one_line(monkeypatch, capsys, tmp_path, args, pattern):
    (tmp_path / "f.txt").write_text("mine")
    (tmp_path / "d").mkdir()
    emb = save_embedding(tmp_path / "e.safetensors", "<e>", torch.randn(2, 32), Provenance("b", "f"))
    fill = {"file": tmp_path / "f.txt", "dir": tmp_path / "d", "emb": emb}
    code, _, err = run(monkeypatch, capsys, *[a.format(**fill) for a in args])
    assert_one_line_error(code, err, pattern)
    assert (tmp_path / "f.txt").read_text() == "mine"


# --------------------------------------------------------------------------- 5. broken inputs


def _data_folder(tmp_path: Path, n: int = 3) -> Path:
    folder = tmp_path / "data"
    for i in range(n):
        noise_png(folder / f"im{i}.png", shape=(32, 32), seed=i)
    return folder


def _train_args(data: Path, base: Path, out: Path, *extra):
    return ["train", ROOT / "recipes/phantom/chest-ti.toml", "--data", data, "--base", base, "--output", out,
            "--max-steps", "1", "--set", "data.resolution=32", "--set", "output.validation_every=0", "--quiet", *extra]


@pytest.mark.parametrize("content,pattern", [
    (b'{"file_name": "im0.png", "text": "caf\xe9"}\n', r"metadata.jsonl' is not UTF-8 text \(byte 0xe9 at offset"),
    (b'{"file_name": "im0.png", "text": null}\n', r"metadata.jsonl:1: \"text\" is null; expected a string"),
    (b'{"file_name": 3, "text": "x"}\n', r"metadata.jsonl:1: \"file_name\" is 3; expected a string"),
])
def test_broken_caption_files_are_named(monkeypatch, capsys, tmp_path, tiny_base, content, pattern):
    data = _data_folder(tmp_path)
    (data / "metadata.jsonl").write_bytes(content)
    code, _, err = run(monkeypatch, capsys, *_train_args(data, tiny_base, tmp_path / "o"))
    assert_one_line_error(code, err, pattern)


def test_a_byte_order_mark_is_fine(tmp_path):
    from lowbudget.data.captions import read_metadata_jsonl

    path = tmp_path / "metadata.jsonl"
    path.write_bytes('\ufeff{"file_name": "a.png", "text": "a chest x-ray"}\n'.encode("utf-8"))
    assert read_metadata_jsonl(path) == {"a.png": "a chest x-ray"}


def test_odd_files_masks_volumes_and_palettes_are_reported_by_path(tmp_path):
    import nibabel as nib
    import pydicom
    from PIL import Image

    from lowbudget.data.dataset import load_image_folder
    from lowbudget.data.writers import write_dicom
    from lowbudget.recipe import DataConfig

    data = _data_folder(tmp_path, n=2)
    os.mkfifo(data / "pipe.png")
    (data / "loop.png").symlink_to("loop.png")
    volume = np.random.default_rng(0).random((24, 24, 5)).astype(np.float32)
    volume[0, 0, 2] = np.nan
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(data / "vol.nii.gz"))
    write_dicom(data / "pal.dcm", np.random.default_rng(1).random((24, 24)))
    ds = pydicom.dcmread(data / "pal.dcm")
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.save_as(data / "pal.dcm")
    masks = tmp_path / "masks"
    masks.mkdir()
    for name, value in (("im0", 255), ("im1", 0), ("vol", 255)):
        Image.new("L", (32, 32), value).save(masks / f"{name}.png")

    said = []
    images = load_image_folder(DataConfig(path=str(data), resolution=32, mask_dir=str(masks)), warn=said.append)
    text = "\n".join(said)
    assert [p.path.name for p in images.images] == ["im0.png", "vol.nii.gz"]
    assert re.search(r"skipping .*loop\.png: not a regular file", text) and re.search(r"skipping .*pipe\.png: not a regular", text)
    assert re.search(r"skipping .*im1\.png: loss mask .*im1\.png is all black", text)
    assert re.search(r"skipping .*pal\.dcm: PALETTE COLOR without a colour lookup table", text)
    assert re.search(r"vol\.nii\.gz: 1 of 2880 voxels are NaN or infinite", text)


def test_masks_that_are_not_images_or_do_not_fit_are_refused(monkeypatch, capsys, tmp_path, tiny_base):
    image = noise_png(tmp_path / "in.png", shape=(40, 48))
    fast = ["--base", tiny_base, "--steps", "1", "--size", "32", "--prompt", "x"]
    (tmp_path / "text.png").write_text("not an image")
    noise_png(tmp_path / "tall.png", shape=(64, 40))
    for mask, pattern in (("text.png", r"mask '.*text.png' is not a readable image"),
                          ("tall.png", r"mask '.*tall.png' is 40 x 64 pixels; expected the input image's 48 x 40 \(or the working 32 x 32\)")):
        code, _, err = run(monkeypatch, capsys, "inpaint", image, *fast, "--mask", tmp_path / mask, "--output", tmp_path / "o.png")
        assert_one_line_error(code, err, pattern)


def test_broken_libraries_and_evaluation_folders_give_one_line(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "library", "verify", "--library", tmp_path / "nowhere")
    assert_one_line_error(code, err, r"library folder '.*nowhere' does not exist")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "index.json").write_bytes(b'{"embeddings": [{"file": "caf\xe9"}]}')
    code, _, err = run(monkeypatch, capsys, "library", "verify", "--library", tmp_path / "lib")
    assert_one_line_error(code, err, r"index.json' is not a valid library index")
    (tmp_path / "lib" / "index.json").write_text(json.dumps({"embeddings": [{
        "file": "../../etc/passwd", "token": "<t>", "base": "embedded", "modality": "", "n_vectors": 1,
        "sha256": "0", "description": ""}]}))
    code, _, err = run(monkeypatch, capsys, "library", "verify", "--library", tmp_path / "lib")
    assert_one_line_error(code, err, r"entry file '../../etc/passwd' must be a file name inside the library")
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(4):
        (broken / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, _, err = run(monkeypatch, capsys, "evaluate", "diversity", "--generated", broken, "--output", tmp_path / "ev")
    assert_one_line_error(code, err, r"cannot read '.*0\.png'")


def test_a_base_whose_text_encoder_does_not_match_its_config_is_named(monkeypatch, capsys, tmp_path, tiny_base):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    config = json.loads((base / "text_encoder" / "config.json").read_text())
    config["hidden_size"] = 48
    (base / "text_encoder" / "config.json").write_text(json.dumps(config))
    code, _, err = run(monkeypatch, capsys, "generate", "x", "--base", base, "-n", "1", "--output", tmp_path / "g")
    assert_one_line_error(code, err, r"cannot load '.*text_encoder' of base model '.*base': its weights do not match "
                                     r"its config.json \(tensor shapes differ\)")


# --------------------------------------------------------------------------- 6. faults


def _lowbudget(args, limit_bytes=None, timeout=120):
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "lowbudget", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit if limit_bytes else None,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.mark.parametrize("layout,name", [("a1111", "e.pt"), ("diffusers", "e.safetensors")])  # torch.save, safetensors
def test_a_write_beyond_the_file_size_limit_leaves_nothing_behind(tmp_path, layout, name):
    emb = save_embedding(tmp_path / "e.safetensors", "<e>", torch.randn(64, 32), Provenance("b", "f"))
    done = _lowbudget(["convert", emb, "--to", layout, "--output", tmp_path / "out" / name], limit_bytes=4096)
    lines = [l for l in done.stderr.splitlines() if l.startswith("error:")]
    assert done.returncode == 1 and "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert re.search(rf"could not write '.*{name}': .*(file too large|File too large).*; no partial file was left",
                     lines[0]), lines[0]
    assert list((tmp_path / "out").iterdir()) == []


def test_a_failed_checkpoint_write_keeps_the_last_good_one(tmp_path, tiny_base, mixed_folder, monkeypatch):
    from lowbudget.training import checkpoint

    out = tmp_path / "run"
    train(tiny_recipe(mixed_folder, out, tiny_base, steps=2), **QUIET)
    good = (out / checkpoint.CHECKPOINT).read_bytes()

    def full_disk(obj, f, *a, **k):
        Path(f).write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr("shutil.disk_usage", lambda p: type("U", (), {"free": 0})())
    with pytest.raises(Exception, match=r"could not write '.*latest.pt': no space left on the device; the previous file is unchanged"):
        train(tiny_recipe(mixed_folder, out, tiny_base, steps=4), resume=True, **QUIET)
    assert (out / checkpoint.CHECKPOINT).read_bytes() == good
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_a_killed_writer_leaves_a_temporary_file_that_the_next_write_removes(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".index.json.{dead.stdout.strip()}.abc123.tmp"
    stale.write_text("half")
    live = tmp_path / f".index.json.{os.getppid()}.def456.tmp"  # a process that is still running
    live.write_text("writing")
    atomic_write_text(tmp_path / "index.json", "{}")
    assert not stale.exists() and live.exists()


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(tmp_path, tiny_base, mixed_folder):
    recipe = tiny_recipe(mixed_folder, tmp_path / "run", tiny_base, steps=2)
    (tmp_path / "run").mkdir()
    atomic_write_text(tmp_path / "run" / "recipe.toml", recipe.to_toml())  # what a run killed at step 1 leaves
    with pytest.raises(TrainingError, match="already holds a run; pass --resume"):
        train(recipe, **QUIET)
    said = []
    result = train(recipe, resume=True, progress=False, log=said.append)
    assert result.steps == 2 and any("stopped before its first checkpoint; starting it again from step 0" in s for s in said)


def test_resume_says_what_changed_and_refuses_what_would_make_a_false_header(tmp_path, tiny_base, mixed_folder):
    from dataclasses import replace

    from lowbudget.adapters.own_files import read_header

    recipe = tiny_recipe(mixed_folder, tmp_path / "run", tiny_base, steps=4)
    train(recipe, **QUIET)
    with pytest.raises(TrainingError, match=r"optim.max_steps = 1 is below the checkpoint's step 4; give --max-steps 4"):
        train(replace(recipe, optim=replace(recipe.optim, max_steps=1)), resume=True, **QUIET)
    said = []
    changed = replace(recipe, optim=replace(recipe.optim, max_steps=5, lr_ti=0.01))
    train(changed, resume=True, progress=False, log=said.append)
    assert any("note: resuming with optim.lr_ti = 0.01 (the checkpoint's run had 0.005)" in s for s in said), said
    assert read_header(tmp_path / "run" / "effusion.safetensors")["steps"] == "5"


# --------------------------------------------------------------------------- 7. what "the same adapter" means


def _tokens(out: Path) -> torch.Tensor:
    return load_file(out / "effusion.safetensors")["<effusion>"]


def test_deterministic_runs_and_resumes_are_bit_identical(tmp_path, tiny_base, mixed_folder):
    def recipe(out, steps):
        r = tiny_recipe(mixed_folder, tmp_path / out, tiny_base, steps=steps, deterministic=True)
        r.output.checkpoint_every = 3
        return r

    threads = torch.get_num_threads()
    train(recipe("a", 6), **QUIET)
    train(recipe("b", 6), **QUIET)
    train(recipe("c", 3), **QUIET)  # "killed" after its step-3 checkpoint ...
    train(recipe("c", 6), resume=True, **QUIET)  # ... and resumed
    assert torch.equal(_tokens(tmp_path / "a"), _tokens(tmp_path / "b"))
    assert torch.equal(_tokens(tmp_path / "a"), _tokens(tmp_path / "c"))
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()


def test_default_runs_agree_within_the_stated_tolerance(tmp_path, tiny_base, mixed_folder):
    runs = []
    for name in ("a", "b"):
        train(tiny_recipe(mixed_folder, tmp_path / name, tiny_base, steps=6), **QUIET)
        runs.append(_tokens(tmp_path / name))
    # README: "within 1e-5 of the vectors' scale"; float reordering across threads moves the last bits only
    assert (runs[0] - runs[1]).abs().max() <= 1e-5 * runs[0].abs().max()
    assert OptimConfig().deterministic is False



@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_during_training_ends_in_one_line_and_the_run_resumes(tmp_path, tiny_base, mixed_folder, sig):
    import signal
    import time

    args = ["train", ROOT / "recipes/phantom/chest-ti.toml", "--base", tiny_base, "--data", mixed_folder,
            "--output", tmp_path / "run", "--set", "data.resolution=32", "--set", "output.checkpoint_every=1",
            "--set", "output.validation_every=0", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "lowbudget", *map(str, args), "--max-steps", "100000"],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "run" / "checkpoints" / "latest.pt").exists():
        time.sleep(0.2)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert proc.returncode == 128 + getattr(signal, sig), err
    assert "Traceback" not in err and len(lines) == 1 and f"stopped by {sig}" in lines[0], err
    assert not list((tmp_path / "run").rglob("*.tmp"))
    step = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=True)["step"]
    done = _lowbudget([*args, "--max-steps", step + 1, "--resume"])
    assert done.returncode == 0 and f"resuming at step {step} of {step + 1}" in done.stderr, done.stderr
