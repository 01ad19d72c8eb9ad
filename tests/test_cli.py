"""The command line: each bad input gives one line, exit code 1, no traceback."""

import re
import sys
from pathlib import Path

import pytest

from helpers import ROOT, assert_one_line_error, run
from lowbudget.cli import main
from lowbudget.recipe import load_recipe, tomllib


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
    (["train", "{recipe}", "--data", "{tmp}"], r"data.captions = .metadata. but .*metadata.jsonl. does not exist; "
                                              r"write one .*or caption every image from data.templates with --set data.captions=templates"),
    (["train", "{recipe}", "--set", "data.templates=a {{token}}"],
     r"data.templates must be a list, got 'a \{token\}'; --set values are TOML: --set data.templates='\[\"a \{token\}\"\]' \(a list\)"),
    (["train", "{recipe}", "--data", "{data}", "--base", "{tmp}/nobase"], r"base model '.*nobase' does not exist"),
    (["train", "{recipe}", "--data", "{data}", "--output", "{tmp}/o", "--resume"], r"--resume: no checkpoint at"),
    (["train", "{recipe}", "--data", "{data}", "--set", "model.precision=fp16"], r"'fp16' needs a CUDA GPU"),
    (["train", "{recipe}", "--data", "{data}", "--base", "{base}", "--set", "model.family=sd2"], r"expects an SD 2.x base"),
    (["make-base", "{tmp}"], r"already exists"),
    (["phantom", "images", "chest", "--output", "{tmp}/p", "--finding", "tumour"], r"--finding .tumour. is not known for chest"),
    (["phantom", "images", "knee", "--output", "{tmp}/p"], r"phantom modality .knee. is not known"),
    (["phantom", "images", "chest", "--output", "{tmp}/p", "--scanner", "blurry"], r"--scanner 'blurry': expected one of reference"),
    (["phantom", "images", "chest", "--output", "{tmp}/p", "--scanner", "noise=2"], r"--scanner noise=2.0 must be in \[0, 0.5\]"),
    (["federate", "site", "{recipe}", "--data", "{data}", "--server", "nowhere"], r"--server 'nowhere' is not HOST:PORT"),
    (["federate", "site", "{recipe}", "--data", "{data}", "--server", "127.0.0.1:1", "--wait", "1"],
     r"no server answers at 127.0.0.1:1 \(tried for 1 s\); start `lowbudget federate server` there first"),
    (["federate", "simulate", "{recipe}", "--site", "{tmp}/nosite"], r"--site '.*nosite' is not a folder"),
    (["federate", "simulate", "{recipe}", "--site", "{data}", "--min-sites", "2"], r"1 --site folder, fewer than --min-sites 2"),
    (["federate", "server", "{recipe}", "--rounds", "0"], r"--rounds = 0 must be >= 1"),
    (["federate", "server", "{recipe}", "--aggregation", "fedmedian"], r"--aggregation 'fedmedian' is not known; expected one of fedavg, fedadam"),
    (["federate", "server", "{recipe}", "--output", "{tmp}/f", "--resume"], r"--resume: no federation state at"),
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
    def commands(out):  # the first word of each row in the help's command list
        return {m.group(1) for m in re.finditer(r"^  ([a-z]\S*)", out.split("Commands:\n", 1)[1], re.M)}

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


def test_check_recipe_prints_the_resolved_recipe_with_each_keys_meaning(monkeypatch, capsys):
    path = ROOT / "recipes" / "chest-xray" / "sd15-ti.toml"
    code, out, _ = run(monkeypatch, capsys, "check-recipe", path)
    assert code == 0 and "n_vectors = 64" in out and "lr_lora = 0.0001" in out
    lines = out.splitlines()
    at = lines.index("resolution = 512")
    assert lines[at - 1] == "# Training resolution in pixels; images are resized and centre-cropped."
    assert tomllib.loads(out) == tomllib.loads(load_recipe(path).to_toml())  # the comments change no value


def test_recipes_lists_every_shipped_recipe_with_what_it_is_for(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "recipes")
    assert code == 0
    listed = {line.split()[0]: line.split(None, 1)[1] for line in out.splitlines()}
    shipped = sorted((ROOT / "recipes").rglob("*.toml"))
    assert len(listed) == len(shipped) and all(Path(p).name in {s.name for s in shipped} for p in listed)
    demo = next(v for k, v in listed.items() if k.endswith("phantom/chest-ti.toml"))
    assert demo == "The demo: learn a pleural-effusion token on the embedded phantom base."
    code, _, err = run(monkeypatch, capsys, "recipes", ROOT / "tests")
    assert_one_line_error(code, err, r"no recipes \(\*.toml\) in '.*tests'")


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


def test_one_name_for_the_embedded_base(monkeypatch, capsys, tmp_path):
    code, out, err = run(monkeypatch, capsys, "inspect", ROOT / "embeddings" / "effusion.safetensors", "--base", "embedded")
    assert code == 0 and re.search(r"fits base\s+yes", out), out + err
    code, out, _ = run(monkeypatch, capsys, "base-path")
    folder = Path(out.strip())
    assert code == 0 and (folder / "model_index.json").is_file()
    from diffusers import StableDiffusionPipeline  # plain diffusers loads it as it is

    pipe = StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, safety_checker=None)
    assert pipe.unet.config.sample_size * 2 ** (len(pipe.vae.config.block_out_channels) - 1) == 64
    code, _, err = run(monkeypatch, capsys, "library", "verify", "--base", "sd15")
    assert_one_line_error(code, err, r"--base 'sd15' must look like NAME=PATH")


def test_the_embedded_xl_base_is_a_folder_plain_diffusers_loads_as_sdxl(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "base-path", "embedded-xl")
    folder = Path(out.strip())
    assert code == 0 and folder.name.startswith("phantom-xl-v1-"), out
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True)
    assert (pipe.text_encoder.config.hidden_size, pipe.text_encoder_2.config.hidden_size) == (64, 96)
    code, _, err = run(monkeypatch, capsys, "base-path", "embedded-sd3")
    assert_one_line_error(code, err, r"'embedded-sd3' is not an embedded base; expected one of embedded, embedded-xl")


def test_training_says_when_it_validates_and_writes(monkeypatch, capsys, tiny_base, mixed_folder, tmp_path):
    """Off a terminal, progress is plain lines; the bar never sits silent at its last step."""
    recipe = ROOT / "recipes" / "phantom" / "chest-ti.toml"
    code, _, err = run(monkeypatch, capsys, "train", recipe, "--base", tiny_base, "--data", mixed_folder,
                       "--output", tmp_path / "o", "--max-steps", 2, "--set", "data.resolution=32",
                       "--set", "optim.batch_size=2", "--set", "output.validation_every=2",
                       "--set", "output.validation_inference_steps=2", "--set", "output.validation_seeds=[0]")
    assert code == 0, err
    lines = err.splitlines()
    at = [lines.index(text) for text in ("train: validation at step 2", "train: writing the adapter files")]
    assert at == sorted(at) and re.fullmatch(r"train: done, \d+:\d\d", lines[at[-1] + 1]), err
    assert "trained 2 steps;" in err and "\r" not in err  # no carriage-return bar in a log


def test_every_commands_help_reads_plainly(monkeypatch, capsys):
    """Click's plain layout on every typer release: no rich markup escapes ('\\[default: 0]')."""
    import click
    import typer

    from lowbudget.cli.app import app

    def paths(command, path):
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from paths(sub, [*path, name])

    seen = 0
    for path in paths(typer.main.get_command(app), []):
        code, out, _ = run(monkeypatch, capsys, *path, "--help")
        assert code == 0 and "\\[" not in out and "Usage: " in out, (path, out)
        seen += 1
    assert seen > 40 and isinstance(typer.main.get_command(app), click.Group)
