"""The command line: each bad input gives one line, exit code 1, no traceback."""

import re
import sys

import pytest

from helpers import ROOT, assert_one_line_error, run
from lowbudget.cli import main

def test_train_ti_from_the_cli_on_mixed_formats(monkeypatch, capsys, tiny_base, mixed_folder, tmp_path):
    recipe = ROOT / "recipes" / "phantom" / "chest-ti.toml"
    code, _, err = run(monkeypatch, capsys, "train", recipe, "--base", tiny_base, "--data", mixed_folder,
                       "--output", tmp_path / "o", "--max-steps", 2, "--set", "data.resolution=32",
                       "--set", "optim.batch_size=2", "--set", "output.validation_every=0", "--quiet")
    assert code == 0, err
    assert "wrote" in err and (tmp_path / "o" / "effusion.safetensors").stat().st_size < 1_000_000
    code, _, err = run(monkeypatch, capsys, "train", recipe, "--base", tiny_base, "--data", mixed_folder,
                       "--output", tmp_path / "o", "--max-steps", 3, "--set", "data.resolution=32",
                       "--set", "optim.batch_size=2", "--set", "output.validation_every=0", "--quiet", "--resume")
    assert code == 0 and "resuming at step 2 of 3" in err


@pytest.mark.parametrize("args,pattern", [
    (["train", "nope.toml"], r"recipe 'nope.toml' does not exist"),
    (["train", "{recipe}", "--set", "data.resoltion=3"], r"unknown key 'data.resoltion' \(did you mean 'resolution'\?\)"),
    (["train", "{recipe}", "--set", "optim.lr_ti=-1"], r"optim.lr_ti = -1.0 must be > 0"),
    (["train", "{recipe}", "--data", "{tmp}/missing"], r"data folder '.*missing' does not exist"),
    (["train", "{recipe}", "--data", "{tmp}", "--set", "data.captions=auto"], r"has no usable training image \(no PNG/JPEG/TIFF"),
    (["train", "{recipe}", "--data", "{tmp}"], r"data.captions = .metadata. but .*metadata.jsonl. does not exist"),
    (["train", "{recipe}", "--data", "{data}", "--base", "{tmp}/nobase"], r"base model '.*nobase' does not exist"),
    (["train", "{recipe}", "--data", "{data}", "--output", "{tmp}/o", "--resume"], r"--resume: no checkpoint at"),
    (["train", "{recipe}", "--data", "{data}", "--set", "model.precision=fp16"], r"'fp16' needs a CUDA GPU"),
    (["train", "{recipe}", "--data", "{data}", "--base", "{base}", "--set", "model.family=sd2"], r"expects an SD 2.x base"),
    (["make-base", "{tmp}"], r"already exists"),
    (["phantom", "images", "chest", "--output", "{tmp}/p", "--finding", "tumour"], r"--finding .tumour. is not known for chest"),
    (["phantom", "images", "knee", "--output", "{tmp}/p"], r"phantom modality .knee. is not known"),
    (["phantom", "pretrain-base", "--output", "{tmp}/pb", "--set", "unet_stepz=3"], r"pretrain-base --set: unknown key 'unet_stepz' \(did you mean 'unet_steps'\?\)"),
    (["phantom", "pretrain-base", "--output", "{tmp}/pb", "--set", "unet_steps=many"], r"pretrain-base --set: unet_steps = 'many' must be of type int"),
    (["phantom", "benchmark", "--output", "{tmp}/b", "--sections", "fidelity,speed"], r"--sections: unknown speed"),
    (["phantom", "benchmark", "--output", "{tmp}/b", "--findings", "effusion,fracture"], r"finding 'fracture' is not in the phantom world"),
    (["phantom", "report", "{tmp}/none.safetensors", "--finding", "fracture"], r"--finding 'fracture' is not a phantom finding"),
    (["phantom", "report", "{tmp}/none.safetensors", "--finding", "effusion"], r"adapter '.*none.safetensors' does not exist"),
])
def test_bad_inputs_give_one_line_errors(monkeypatch, capsys, tmp_path, tiny_base, mixed_folder, args, pattern):
    if any("fp16" in a for a in args):
        import torch

        if torch.cuda.is_available():
            pytest.skip("fp16 is allowed on a GPU")
    fill = {"recipe": ROOT / "recipes" / "phantom" / "chest-ti.toml", "tmp": tmp_path, "data": mixed_folder, "base": tiny_base}
    code, _, err = run(monkeypatch, capsys, *[a.format(**fill) for a in args])
    assert_one_line_error(code, err, pattern)


def test_debug_flag_shows_the_traceback(monkeypatch, capsys):
    from lowbudget.errors import RecipeError

    monkeypatch.setattr(sys, "argv", ["lowbudget", "--debug", "train", "nope.toml"])
    with pytest.raises(RecipeError):
        main()


def test_phantom_commands_keep_their_old_names_hidden_and_deprecated(monkeypatch, capsys, tmp_path):
    def commands(out):  # the first word of each row in the help's command table
        return {m.group(1) for m in re.finditer(r"^│ ([a-z]\S*) ", out, re.M)}

    code, out, _ = run(monkeypatch, capsys, "--help")
    assert code == 0 and "phantom" in commands(out)
    assert not commands(out) & {"phantoms", "report", "pretrain-base", "benchmark"}  # hidden at the top level
    code, out, _ = run(monkeypatch, capsys, "phantom", "--help")
    assert commands(out) == {"images", "report", "pretrain-base", "benchmark"}
    code, _, err = run(monkeypatch, capsys, "phantoms", "chest", "-n", "2", "--output", tmp_path / "old")
    assert code == 0 and "deprecated" in err and len(list((tmp_path / "old").glob("*.png"))) == 2
    code, _, err = run(monkeypatch, capsys, "phantom", "images", "chest", "-n", "2", "--output", tmp_path / "new")
    assert code == 0 and "deprecated" not in err
    assert [p.read_bytes() for p in sorted((tmp_path / "old").glob("*.png"))] == \
           [p.read_bytes() for p in sorted((tmp_path / "new").glob("*.png"))]


def test_check_recipe_prints_the_resolved_recipe(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "check-recipe", ROOT / "recipes" / "chest-xray" / "sd15-ti.toml")
    assert code == 0 and "n_vectors = 64" in out and "lr_lora = 0.0001" in out


def test_usage_errors_keep_clicks_exit_code(monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "train")
    assert code == 2 and "Missing argument" in err


def test_readme_sd15_command_on_an_sd1_shaped_tiny_base(monkeypatch, capsys, tmp_path, mixed_folder):
    """The README's `lowbudget train recipes/chest-xray/sd15-ti-lora.toml --base ... --data ...`,
    on a tiny model with SD 1.x's text width (768), in the recipe's own bf16 precision,
    with the paper's 64 vectors, shortened to 2 steps at 32 px."""
    from lowbudget.models.architectures import write_base_folder

    base = write_base_folder(tmp_path / "sd1-shaped", "tiny", text_width=768)
    code, _, err = run(monkeypatch, capsys, "train", ROOT / "recipes" / "chest-xray" / "sd15-ti-lora.toml",
                       "--base", base, "--data", mixed_folder, "--output", tmp_path / "o", "--max-steps", 2,
                       "--set", "data.resolution=32", "--set", "output.validation_every=0", "--quiet")
    assert code == 0, err
    from safetensors.torch import load_file

    emb = load_file(tmp_path / "o" / "chest-xray.safetensors")["<chest-xray>"]
    assert emb.shape == (64, 768) and emb.dtype.is_floating_point
    assert (tmp_path / "o" / "pytorch_lora_weights.safetensors").is_file()
