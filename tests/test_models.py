"""Base models from local paths only, with one-line errors for every wrong path."""

import json

import pytest
import torch

from lowbudget.errors import ModelError
from lowbudget.models import load_base
from lowbudget.models.architectures import write_base_folder
from lowbudget.models.single_file import config_folder, detect_family, unet_in_channels


def test_folder_loads_with_fingerprint_and_family(tiny_base):
    base = load_base(tiny_base)
    assert base.text_width == 32 and base.family == "custom" and base.prediction_type == "epsilon"
    assert len(base.fingerprint) == 64 and base.fingerprint == load_base(tiny_base).fingerprint
    assert base.vae_scale_factor == 2


def test_sd_widths_name_their_family(tmp_path):
    sd2_like = write_base_folder(tmp_path / "w1024", "tiny", text_width=1024)
    base = load_base(sd2_like)
    assert base.family == "sd2"
    with pytest.raises(ModelError, match=r"expects an SD 1.x base \(text width 768\) but .* is SD 2.x \(text width 1024\)"):
        load_base(sd2_like, expected_family="sd1")


def test_missing_and_wrong_paths_say_what_was_expected(tmp_path, tiny_base):
    with pytest.raises(ModelError, match="does not exist; expected a diffusers folder"):
        load_base(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no model_index.json"):
        load_base(tmp_path / "empty")
    (tmp_path / "model.ckpt").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelError, match="pickled checkpoint, which lowbudget does not load"):
        load_base(tmp_path / "model.ckpt")
    (tmp_path / "x.gguf").write_bytes(b"x")
    with pytest.raises(ModelError, match="neither a diffusers folder nor a .safetensors"):
        load_base(tmp_path / "x.gguf")


def test_folder_missing_a_component_is_named(tmp_path):
    folder = write_base_folder(tmp_path / "b", "tiny")
    import shutil

    shutil.rmtree(folder / "vae")
    with pytest.raises(ModelError, match="lacks the subfolder\\(s\\) vae"):
        load_base(folder)


def test_prediction_type_override(tiny_base):
    assert load_base(tiny_base, prediction_type="v_prediction").prediction_type == "v_prediction"


def test_single_file_family_detection_and_errors(tmp_path):
    from safetensors.torch import save_file

    sd1 = tmp_path / "sd1.safetensors"
    save_file({"model.diffusion_model.out.0.weight": torch.zeros(1),
               "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(2, 768)}, sd1)
    assert detect_family(sd1) == "sd15"
    sd2 = tmp_path / "sd2.safetensors"
    save_file({"model.diffusion_model.out.0.weight": torch.zeros(1),
               "cond_stage_model.model.token_embedding.weight": torch.zeros(2, 1024)}, sd2)
    assert detect_family(sd2) == "sd21"
    lora = tmp_path / "lora.safetensors"
    save_file({"unet.x.lora_A.weight": torch.zeros(1)}, lora)
    with pytest.raises(ModelError, match="is not a Stable Diffusion checkpoint"):
        load_base(lora)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 16)
    with pytest.raises(ModelError, match="cannot read .* as safetensors"):
        load_base(junk)


@pytest.mark.parametrize("in_channels", [4, 9])
def test_sdxl_single_files_are_recognised_and_refiners_named(tmp_path, monkeypatch, capsys, in_channels):
    """SDXL is recognised from its original keys (both encoders under conditioner.embedders);
    a refiner, single file or folder (no first text encoder), is named as one, not a shape
    error. Loading SDXL itself is tested in test_sdxl.py."""
    from safetensors.torch import save_file

    from helpers import assert_one_line_error, run

    unet = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, in_channels, 3, 3)}
    single = tmp_path / "sdxl.safetensors"
    save_file(unet | {"conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(2, 768),
                      "conditioner.embedders.1.model.token_embedding.weight": torch.zeros(2, 1280)}, single)
    assert detect_family(single) == "sdxl" and unet_in_channels(single) == in_channels
    refiner = tmp_path / "refiner.safetensors"
    save_file(unet | {"conditioner.embedders.0.model.token_embedding.weight": torch.zeros(2, 1280)}, refiner)
    with pytest.raises(ModelError, match="is an SDXL refiner .* adapters train on the SDXL base model"):
        load_base(refiner)
    folder = tmp_path / "refiner"
    for part in ("unet", "vae", "text_encoder_2", "tokenizer_2", "scheduler"):
        (folder / part).mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLImg2ImgPipeline"}))
    code, _, err = run(monkeypatch, capsys, "generate", "x", "--base", folder, "-n", 1, "--output", tmp_path / "out")
    assert_one_line_error(code, err, "is an SDXL refiner .* adapters train on the SDXL base model")


@pytest.mark.parametrize("shape,width,prediction", [("sd15", 768, "epsilon"), ("sd21", 1024, "v_prediction")])
def test_single_file_config_folders_are_complete_offline(tmp_path, shape, width, prediction):
    folder = config_folder(shape, tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    te = json.loads((folder / "text_encoder" / "config.json").read_text())
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert te["hidden_size"] == width and sched["prediction_type"] == prediction
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_single_file_checkpoint_loads_like_its_folder(tmp_path, tiny_base, monkeypatch):
    """An original-layout (LDM) single file, written from the tiny folder, loads offline
    through diffusers' from_single_file with identical weights."""
    import lowbudget.models.single_file as single_file
    from ldm import write_ldm_checkpoint

    path = tmp_path / "tiny-sd1.safetensors"
    write_ldm_checkpoint(tiny_base, path, layers_per_block=1, unet_levels=2, vae_levels=2)
    assert single_file.detect_family(path) == "sd15"  # recognised by its SD 1.x text encoder keys
    monkeypatch.setattr(single_file, "detect_family", lambda p: "tiny")  # tiny configs, not SD 1.5's sizes
    single, folder = load_base(path), load_base(tiny_base)
    assert single.name == "tiny-sd1" and single.prediction_type == "epsilon"
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(single, part).state_dict(), getattr(folder, part).state_dict()
        assert set(a) == set(b), part
        for key in a:
            assert torch.equal(a[key].reshape(b[key].shape), b[key]), f"{part}.{key}"
    assert single.fingerprint == folder.fingerprint


def test_sdxl_lora_sizes_are_counted_on_the_meta_device():
    """benchmarks/sdxl_sizes.py against arithmetic: cross-kv at rank r is, per cross-attention
    block, two projections of A (r x text width) and B (U-Net width x r). SDXL has 10 blocks at
    width 640 and 60 at 1280 over a text width of 2048 (the preset adapts the 640-wide ones); SD 1.5
    two blocks per level at 320, 640, 1280 down, three up, one in the middle, over 768."""
    import subprocess
    import sys

    from helpers import ROOT

    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sdxl_sizes.py")], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    rows = {(cells[1], cells[4]): int(cells[5].replace(",", "")) for line in out.splitlines()
            if len(cells := [c.strip() for c in line.split("|")]) > 5 and cells[4].isdigit()}
    kv = lambda blocks, width, text, r: blocks * 2 * (r * text + width * r)  # noqa: E731
    assert rows[("SDXL, every block", "4")] == kv(10, 640, 2048, 4) + kv(60, 1280, 2048, 4) == 1_812_480
    assert rows[("SDXL", "4")] == kv(10, 640, 2048, 4) == 215_040 < 2**20 / 4  # the preset: under 1 MB in fp32
    assert rows[("SD 1.5", "4")] == kv(5, 320, 768, 4) + kv(5, 640, 768, 4) + kv(6, 1280, 768, 4) == 198_144
