"""Knowing when the adapter has learned: the patient split, the deterministic validation loss,
early stopping (validation, DVAR) and its resume, min-SNR weighting, the EMA."""

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from helpers import ROOT, assert_one_line_error, noise_png, run, tiny_recipe
from lowbudget.adapters.own_files import TRAINING, read_header
from lowbudget.data.dataset import load_image_folder
from lowbudget.data.split import split_by_patient
from lowbudget.errors import DataError, RecipeError
from lowbudget.recipe import DataConfig, Recipe
from lowbudget.training import checkpoint, train
from lowbudget.training.loss import masked_mse, min_snr_weights
from lowbudget.training.stopping import Ema, Stopper, dvar_ratio

quiet = dict(progress=False, log=lambda m: None)


def patient_folder(folder, patients, column="patient_id"):
    """One noise PNG per entry of ``patients`` (a list of patient ids), with metadata.jsonl."""
    rows = []
    for i, patient in enumerate(patients):
        noise_png(folder / f"im{i:02d}.png", seed=i)
        rows.append({"file_name": f"im{i:02d}.png", "text": "a chest x-ray", column: patient})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def with_changes(recipe: Recipe, **tables) -> Recipe:
    """The recipe with some fields of some tables replaced, checked again as a whole."""
    parts = {name: dataclasses.replace(getattr(recipe, name), **changes) for name, changes in tables.items()}
    return dataclasses.replace(recipe, **parts)


def test_one_patients_images_never_sit_on_both_sides(tmp_path):
    patients = [f"p{i // 3}" for i in range(12)]  # 4 patients, 3 images each
    images = load_image_folder(DataConfig(path=str(patient_folder(tmp_path, patients)), resolution=32), warn=lambda m: None)
    assert images.patient_column == "patient_id"
    for seed in range(6):
        train_set, held = split_by_patient(images, 0.25, seed)
        assert len(held) == 3 and len(train_set) == 9  # one whole patient of four
        assert not {im.patient for im in held.images} & {im.patient for im in train_set.images}
        assert split_by_patient(images, 0.25, seed)[1].images == held.images  # the same seed, the same patients
    assert len({split_by_patient(images, 0.25, s)[1].images[0].patient for s in range(6)}) > 1


def test_a_study_id_column_of_the_captions_csv_groups_images_too(tmp_path):
    for i in range(6):
        noise_png(tmp_path / f"im{i}.png", seed=i)
    (tmp_path / "captions.csv").write_text("file_name,text,study_id\n" + "".join(f"im{i}.png,an mri,s{i % 2}\n" for i in range(6)))
    images = load_image_folder(DataConfig(path=str(tmp_path), captions="csv", captions_csv="captions.csv", resolution=32),
                               warn=lambda m: None)
    assert images.patient_column == "study_id"
    train_set, held = split_by_patient(images, 0.5, 0)
    assert {im.patient for im in held.images} in ({"s0"}, {"s1"}) and len(held) == 3


def test_small_sets_keep_working_and_a_single_patient_is_refused(tmp_path):
    five = load_image_folder(DataConfig(path=str(patient_folder(tmp_path / "five", list("abcde"))), resolution=32),
                             warn=lambda m: None)
    train_set, held = split_by_patient(five, 0.2, 0)
    assert (len(train_set), len(held)) == (4, 1)
    train_set, held = split_by_patient(five, 0.05, 0)  # under one patient: still one held out
    assert (len(train_set), len(held)) == (4, 1)
    one = load_image_folder(DataConfig(path=str(patient_folder(tmp_path / "one", ["a"] * 4)), resolution=32),
                            warn=lambda m: None)
    with pytest.raises(DataError, match="at least 2 patients.*4 image"):
        split_by_patient(one, 0.2, 0)


def test_a_patient_column_with_gaps_is_refused(tmp_path):
    patient_folder(tmp_path, ["a", "b", "c"])
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    rows[1]["patient_id"] = ""
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="patient_id is empty for 1 of 3 images.*im01.png"):
        load_image_folder(DataConfig(path=str(tmp_path), resolution=32), warn=lambda m: None)


@pytest.mark.parametrize("tables, message", [
    ({"optim": {"stop": "validation"}, "output": {"validation_every": 2}}, "needs validation images"),
    ({"optim": {"stop": "dvar"}}, "needs output.validation_every > 0"),
    ({"data": {"validation_fraction": 0.2}}, "never computes their loss"),
    ({"output": {"validation_every": 5}}, "nothing to validate"),
])
def test_recipes_that_cannot_validate_are_refused(tables, message, tmp_path):
    recipe = tiny_recipe(tmp_path, tmp_path / "o", tmp_path)
    with pytest.raises(RecipeError, match=message):
        with_changes(recipe, **tables)


def test_train_names_the_missing_validation_data(monkeypatch, capsys, tmp_path):
    code, _, err = run(monkeypatch, capsys, "train", ROOT / "recipes" / "phantom" / "chest-ti.toml", "-o", tmp_path / "o",
                       "--set", "optim.stop=validation", "--set", "output.validation_every=10")
    assert_one_line_error(code, err, r"optim.stop = 'validation' needs validation images: set data.validation_fraction")


def early_stopping_recipe(data, out, base, **optim):
    recipe = tiny_recipe(data, out, base, "ti", steps=14, lr_ti=0.5, deterministic=True)
    return with_changes(recipe, data={"validation_fraction": 0.25}, optim=optim,
                        output={"validation_every": 2, "checkpoint_every": 4})


def test_validation_loss_is_the_same_across_runs_and_stops_early_at_the_best_step(tiny_base, mixed_folder, tmp_path):
    logged = []
    recipe = early_stopping_recipe(mixed_folder, tmp_path / "a", tiny_base, stop="validation", patience=2)
    a = train(recipe, progress=False, log=logged.append)
    b = train(dataclasses.replace(recipe, output=dataclasses.replace(recipe.output, dir=str(tmp_path / "b"))), **quiet)
    assert a.evaluations["validation"] == b.evaluations["validation"]  # fixed noise and timesteps: no jitter
    history = a.evaluations["validation"]
    best_step, best = min(history, key=lambda e: e[1])
    assert a.stopped and a.steps < 14 and a.steps == history[-1][0]
    assert sum(1 for s, _ in history if s > best_step) == 2  # stopped after `patience` evaluations without a new best
    assert a.written_step == best_step
    assert any(line.startswith(f"stopped at step {a.steps} of 14: the validation loss has not improved") for line in logged)
    record = json.loads(read_header(tmp_path / "a" / "effusion.safetensors")[TRAINING])
    assert record["written_step"] == best_step and record["steps_run"] == a.steps and record["stopped_early"]
    assert record["validation_loss"] == pytest.approx(best)
    assert read_header(tmp_path / "a" / "effusion.safetensors")["steps"] == str(best_step)
    # the file holds the best step's tensors, not the last step's (which the checkpoint keeps)
    written = load_file(tmp_path / "a" / "effusion.safetensors")["<effusion>"]
    last = checkpoint.load_checkpoint(tmp_path / "a")["trainable"]["tokens"]
    assert not torch.equal(written, last)
    csv = (tmp_path / "a" / "loss.csv").read_text().splitlines()
    assert csv[0] == "step,loss,validation" and csv[2].count(",") == 2 and csv[2].split(",")[2] != ""
    assert len(csv) == 1 + a.steps


def test_a_run_with_early_stopping_resumed_after_a_crash_stops_where_an_unbroken_one_does(
        tiny_base, mixed_folder, tmp_path, monkeypatch):
    recipe = early_stopping_recipe(mixed_folder, tmp_path / "a", tiny_base, stop="validation", patience=2)
    unbroken = train(recipe, **quiet)
    broken = dataclasses.replace(recipe, output=dataclasses.replace(recipe.output, dir=str(tmp_path / "b")))
    import lowbudget.training.loop as loop

    real_save = loop.checkpoint.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the step-4 checkpoint

    monkeypatch.setattr(loop.checkpoint, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(broken, **quiet)
    monkeypatch.setattr(loop.checkpoint, "save_checkpoint", real_save)
    assert checkpoint.load_checkpoint(tmp_path / "b")["step"] == 4
    resumed = train(broken, resume=True, **quiet)
    assert (resumed.steps, resumed.written_step, resumed.stopped) == (unbroken.steps, unbroken.written_step, unbroken.stopped)
    assert resumed.evaluations == unbroken.evaluations
    assert torch.equal(load_file(tmp_path / "a" / "effusion.safetensors")["<effusion>"],
                       load_file(tmp_path / "b" / "effusion.safetensors")["<effusion>"])
    again = train(broken, resume=True, **quiet)  # a stopped run has nothing left to train
    assert again.steps == unbroken.steps and len(again.losses) == len(unbroken.losses)


def test_dvar_stops_when_the_deterministic_loss_flattens(tiny_base, mixed_folder, tmp_path):
    recipe = tiny_recipe(mixed_folder, tmp_path / "o", tiny_base, "ti", steps=40, lr_ti=1e-4)
    recipe = with_changes(recipe, optim={"stop": "dvar", "window": 4}, output={"validation_every": 2})
    result = train(recipe, **quiet)
    assert result.stopped.startswith("the deterministic loss has flattened") and result.steps < 40
    dvar = [v for _, v in result.evaluations["dvar"]]
    assert dvar_ratio(dvar, 4) < 0.15 <= dvar_ratio(dvar[:-1], 4)  # it stopped at the first evaluation below
    assert result.written_step == result.steps  # DVAR writes the tensors it stopped at


def test_dvar_ratio_is_small_on_a_plateau_and_near_one_on_noise():
    plateau = [math.exp(-k / 3) for k in range(30)]
    assert dvar_ratio(plateau, 10) < 0.01
    noise = torch.randn(200, generator=torch.Generator().manual_seed(0)).tolist()
    assert 0.6 < dvar_ratio(noise, 50) < 1.4
    assert dvar_ratio([1.0] * 5, 3) == 0.0


def test_stopper_waits_for_min_steps_and_keeps_the_best_tensors():
    stopper = Stopper("validation", patience=1, min_steps=6)
    tensors = {"tokens": torch.zeros(2)}
    for step, loss in ((2, 1.0), (4, 2.0)):
        tensors["tokens"] += 1
        assert not stopper.update(step, loss, tensors)  # step 4 is worse, but before min_steps
    assert stopper.update(6, 3.0, tensors)
    assert stopper.kept_step == 2 and torch.equal(stopper.kept["tokens"], torch.ones(2))
    again = Stopper("validation", patience=1)
    again.load_state_dict(stopper.state_dict())
    assert again.history == stopper.history and again.reason == stopper.reason


def test_min_snr_weights_follow_the_formula():
    alphas = torch.tensor([0.99, 0.5, 0.01])  # SNR 99, 1, ~0.0101
    t = torch.tensor([0, 1, 2])
    eps = min_snr_weights(alphas, t, 5.0, "epsilon")
    assert torch.allclose(eps, torch.tensor([5 / 99, 1.0, 1.0]), atol=1e-5)
    v = min_snr_weights(alphas, t, 5.0, "v_prediction")
    snr = alphas / (1 - alphas)
    assert torch.allclose(v, snr.clamp(max=5) / (snr + 1))
    pred, target = torch.ones(3, 4, 2, 2), torch.zeros(3, 4, 2, 2)
    assert masked_mse(pred, target, None, eps).item() == pytest.approx(float(eps.mean()))
    assert masked_mse(pred, target, None, torch.ones(3)).item() == pytest.approx(masked_mse(pred, target, None).item())


def test_min_snr_trains_and_changes_the_result(tiny_base, mixed_folder, tmp_path):
    plain = train(tiny_recipe(mixed_folder, tmp_path / "a", tiny_base, "ti", steps=6), **quiet)
    # gamma 1: every timestep below t ~ 500 (SNR > 1) counts less
    weighted = train(tiny_recipe(mixed_folder, tmp_path / "b", tiny_base, "ti", steps=6, snr_gamma=1.0), **quiet)
    assert plain.losses != weighted.losses
    assert not torch.equal(load_file(plain.files[0])["<effusion>"], load_file(weighted.files[0])["<effusion>"])


def test_ema_is_what_gets_written(tiny_base, mixed_folder, tmp_path):
    recipe = tiny_recipe(mixed_folder, tmp_path / "o", tiny_base, "ti", steps=4, ema_decay=0.5)
    train(recipe, **quiet)
    state = checkpoint.load_checkpoint(tmp_path / "o")
    written = load_file(tmp_path / "o" / "effusion.safetensors")["<effusion>"]
    assert torch.equal(written, state["ema"]["tokens"]) and not torch.equal(written, state["trainable"]["tokens"])
    assert json.loads(read_header(tmp_path / "o" / "effusion.safetensors")[TRAINING])["ema_decay"] == 0.5
    ema = Ema({"x": torch.zeros(1)}, 0.5)
    for value in (1.0, 1.0):
        ema.update({"x": torch.tensor([value])})
    assert ema.shadow["x"].item() == pytest.approx(0.75)


def test_the_readme_stopping_example_is_a_valid_recipe(tmp_path):
    import re
    import tomllib

    from lowbudget.recipe import dump_toml, load_recipe

    block = next(b for b in re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
                 if "validation_fraction" in b)
    raw = tomllib.loads((ROOT / "recipes" / "phantom" / "chest-ti.toml").read_text())
    for table, values in tomllib.loads(block).items():  # the tables the README says to add to a recipe
        raw.setdefault(table, {}).update(values)
    (tmp_path / "r.toml").write_text(dump_toml(raw))
    recipe = load_recipe(tmp_path / "r.toml")
    assert recipe.optim.stop == "validation" and recipe.data.validation_fraction == 0.2
    assert recipe.output.validation_every == 50
