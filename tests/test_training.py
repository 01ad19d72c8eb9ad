"""The training loop on the tiny base: what changes, what is saved, resume, guards."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from lowbudget.adapters.own_files import read_header
from lowbudget.errors import DataError, TrainingError
from lowbudget.models import load_base
from lowbudget.recipe import TokenConfig
from lowbudget.training import checkpoint, train
from lowbudget.training.loss import masked_mse

from helpers import tiny_recipe

quiet = dict(progress=False, log=lambda m: None)


def test_textual_inversion_changes_only_the_new_rows(tiny_base, mixed_folder, tmp_path):
    recipe = tiny_recipe(mixed_folder, tmp_path / "out", tiny_base, "ti", steps=3)
    result = train(recipe, **quiet)
    original = load_base(tiny_base).text_encoder.get_input_embeddings().weight
    state = checkpoint.load_checkpoint(tmp_path / "out")
    # the optimizer never saw the vocabulary: one parameter, the (3, 32) new rows
    assert list(state["trainable"]) == ["tokens"]
    assert [s["exp_avg"].shape for s in state["optimizer"]["state"].values()] == [torch.Size([3, 32])]
    learned = load_file(tmp_path / "out" / "effusion.safetensors")["<effusion>"]
    init_ids = load_base(tiny_base).tokenizer("fluid lung", add_special_tokens=False).input_ids
    init = original[[init_ids[i % len(init_ids)] for i in range(3)]]
    assert learned.shape == (3, 32) and not torch.equal(learned, init)
    assert len(result.losses) == 3 and (tmp_path / "out" / "loss.png").is_file()
    header = read_header(tmp_path / "out" / "effusion.safetensors")
    assert header["n_images"] == "8" and header["init"] == "fluid lung" and str(mixed_folder) not in header["recipe"]


def test_base_vocabulary_is_bit_for_bit_unchanged_after_training(tiny_base, mixed_folder, tmp_path, monkeypatch):
    """Train with the base loaded once, then compare its token table with a fresh load."""
    import lowbudget.training.setup as setup

    loaded = {}

    def keep(*args, **kwargs):
        loaded["base"] = load_base(*args, **kwargs)
        return loaded["base"]

    monkeypatch.setattr(setup, "load_base", keep)
    train(tiny_recipe(mixed_folder, tmp_path / "out", tiny_base, "ti", steps=3), **quiet)
    trained_table = loaded["base"].text_encoder.get_input_embeddings().base.weight
    assert torch.equal(trained_table, load_base(tiny_base).text_encoder.get_input_embeddings().weight)


def test_a_lora_run_trains_the_same_whatever_ran_before_it_in_the_process(tiny_base, mixed_folder, tmp_path):
    """peft draws LoRA's A from torch's global generator: a benchmark's LoRA row trained after
    other runs started from other tensors than the same recipe run alone (max difference 0.50
    against weights of at most 0.29, phantom benchmark, effusion)."""
    first = train(tiny_recipe(mixed_folder, tmp_path / "a", tiny_base, "lora", steps=1), **quiet)
    torch.rand(1000)  # what another run in the same process would have drawn
    second = train(tiny_recipe(mixed_folder, tmp_path / "b", tiny_base, "lora", steps=1), **quiet)
    a, b = (load_file(next(p for p in r.files if p.suffix == ".safetensors")) for r in (first, second))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", ["ti", "lora", "ti+lora"])
def test_killed_and_resumed_run_ends_like_an_unbroken_one(kind, tiny_base, mixed_folder, tmp_path, monkeypatch):
    unbroken = tiny_recipe(mixed_folder, tmp_path / "a", tiny_base, kind, steps=4)
    train(unbroken, **quiet)

    import lowbudget.training.loop as loop

    real_save = checkpoint.save_checkpoint

    def save_then_die(out, **kw):
        real_save(out, **kw)
        raise KeyboardInterrupt  # the process is killed right after the step-2 checkpoint

    broken = tiny_recipe(mixed_folder, tmp_path / "b", tiny_base, kind, steps=4)
    monkeypatch.setattr(loop.checkpoint, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(broken, **quiet)
    monkeypatch.setattr(loop.checkpoint, "save_checkpoint", real_save)
    assert checkpoint.load_checkpoint(tmp_path / "b")["step"] == 2
    with pytest.raises(TrainingError, match="already holds a run; pass --resume"):
        train(broken, **quiet)
    train(broken, resume=True, **quiet)

    a = checkpoint.load_checkpoint(tmp_path / "a")
    b = checkpoint.load_checkpoint(tmp_path / "b")
    assert a["step"] == b["step"] == 4
    for name, tensor in a["trainable"].items():
        torch.testing.assert_close(b["trainable"][name], tensor, rtol=1e-5, atol=1e-6)
    assert b["losses"] == pytest.approx(a["losses"], rel=1e-5)


def test_pivotal_tuning_freezes_tokens_after_their_fraction(tiny_base, mixed_folder, tmp_path, monkeypatch):
    import lowbudget.training.loop as loop

    snapshots = []
    real_save = checkpoint.save_checkpoint
    monkeypatch.setattr(loop.checkpoint, "save_checkpoint",
                        lambda out, **kw: (snapshots.append({k: v.detach().clone() for k, v in kw["trainable"].items()}), real_save(out, **kw))[1])
    recipe = tiny_recipe(mixed_folder, tmp_path / "o", tiny_base, "ti+lora", steps=4)
    recipe.method.ti_fraction = 0.5  # tokens train in steps 1-2, LoRA in 1-4
    train(recipe, **quiet)
    at2, at4 = snapshots[0], snapshots[-1]
    assert torch.equal(at2["tokens"], at4["tokens"])
    assert any(not torch.equal(at2[k], at4[k]) for k in at2 if k != "tokens")


def test_outputs_load_in_plain_diffusers_with_identical_tensors(tiny_base, mixed_folder, tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    recipe = tiny_recipe(mixed_folder, tmp_path / "o", tiny_base, "ti+lora", steps=2)
    recipe.method.lora.text_encoder = True
    recipe.method.lora.alpha = 8.0  # alpha != rank must survive the trip (diffusers reads it from the header)
    train(recipe, **quiet)
    saved = load_file(tmp_path / "o" / "pytorch_lora_weights.safetensors")
    pipe = StableDiffusionPipeline.from_pretrained(tiny_base, safety_checker=None, local_files_only=True)
    pipe.load_textual_inversion(tmp_path / "o" / "effusion.safetensors")
    pipe.load_lora_weights(tmp_path / "o")

    emb = load_file(tmp_path / "o" / "effusion.safetensors")["<effusion>"]
    ids = pipe.tokenizer.convert_tokens_to_ids(["<effusion>", "<effusion>_1", "<effusion>_2"])
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids], emb)
    adapter = pipe.unet.active_adapters()[0]
    unet_sd = get_peft_model_state_dict(pipe.unet, adapter_name=adapter)
    te_sd = get_peft_model_state_dict(pipe.text_encoder, adapter_name=adapter)
    for key, tensor in saved.items():
        prefix, rest = key.split(".", 1)
        assert torch.equal((unet_sd if prefix == "unet" else te_sd)[rest], tensor), key
    assert any(k.startswith("text_encoder.") for k in saved)
    assert pipe.unet.peft_config[adapter].lora_alpha == 8.0


def test_validation_grids_and_v_prediction_base(tmp_path, mixed_folder):
    from lowbudget.models.architectures import TINY, write_base_folder

    vbase = write_base_folder(tmp_path / "vbase", dataclasses.replace(TINY, prediction_type="v_prediction"))
    assert load_base(vbase).prediction_type == "v_prediction"  # read from the scheduler config
    recipe = tiny_recipe(mixed_folder, tmp_path / "o", vbase, "ti", steps=2)
    recipe.output.validation_every = 1
    recipe.output.validation_prompts = ["a chest x-ray", "a chest x-ray with {token}"]
    recipe.output.validation_seeds = [0, 1]
    recipe.output.validation_inference_steps = 2
    train(recipe, **quiet)
    grids = sorted(p.name for p in (tmp_path / "o" / "samples").iterdir())
    assert grids == ["step-000001.png", "step-000002.png"]


def test_non_finite_weights_stop_training_without_writing_an_adapter(tiny_base, mixed_folder, tmp_path):
    recipe = tiny_recipe(mixed_folder, tmp_path / "o", tiny_base, "ti", steps=3)
    recipe.optim.lr_ti, recipe.optim.max_grad_norm = 1e30, 0.0  # vectors explode, the encoder overflows
    with pytest.raises(TrainingError, match="non-finite|loss became"):
        train(recipe, **quiet)
    assert not (tmp_path / "o" / "effusion.safetensors").exists()


def test_captions_that_would_be_truncated_fail_before_training(tiny_base, mixed_folder, tmp_path):
    recipe = tiny_recipe(mixed_folder, tmp_path / "o", tiny_base, "ti", steps=1)
    recipe.method.tokens = [TokenConfig(name="<big>", init="lung", n_vectors=75)]
    with pytest.raises(DataError, match="the limit is 77"):
        train(recipe, **quiet)


def test_masked_loss_ignores_pixels_outside_the_mask():
    pred, target = torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 4)
    pred[..., :, 2:] = 5.0  # wrong only in the right half
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :, :2] = 1.0
    assert masked_mse(pred, target, mask).item() == 0.0
    assert masked_mse(pred, target, 1 - mask).item() == pytest.approx(25.0)


def test_gradient_checkpointing_gives_the_same_step(tiny_base, mixed_folder, tmp_path):
    """Recomputing activations in backward must not change what is learned."""
    runs = {}
    for gc in (False, True):
        recipe = tiny_recipe(mixed_folder, tmp_path / f"gc{gc}", tiny_base, "ti+lora", steps=2)
        recipe.model.gradient_checkpointing = gc
        train(recipe, **quiet)
        runs[gc] = checkpoint.load_checkpoint(tmp_path / f"gc{gc}")["trainable"]
    for name in runs[False]:
        torch.testing.assert_close(runs[True][name], runs[False][name], rtol=1e-4, atol=1e-6)


def test_accumulation_schedule_and_several_tokens(tiny_base, mixed_folder, tmp_path):
    recipe = tiny_recipe(mixed_folder, tmp_path / "o", tiny_base, "ti", steps=4, grad_accum=2,
                         warmup_steps=2, schedule="cosine")
    recipe.method.tokens = [TokenConfig(name="<left>", init="left", n_vectors=2),
                            TokenConfig(name="<right>", init="right", n_vectors=3)]
    recipe.data.templates = ["a chest x-ray with {token}", "<left> only", "<right> only"]
    train(recipe, **quiet)
    left = load_file(tmp_path / "o" / "left.safetensors")["<left>"]
    right = load_file(tmp_path / "o" / "right.safetensors")["<right>"]
    assert left.shape == (2, 32) and right.shape == (3, 32)


def test_learning_rate_warmup_and_decay():
    from lowbudget.training.schedule import lr_factor

    factors = [lr_factor(s, total=10, warmup=2, shape="linear") for s in range(10)]
    assert factors[:3] == [0.5, 1.0, 1.0] and factors[-1] == pytest.approx(1 / 8)
    assert all(a >= b for a, b in zip(factors[1:], factors[2:]))
    assert lr_factor(0, total=10, shape="cosine") == 1.0 and lr_factor(5, total=10, shape="cosine") == pytest.approx(0.5)
    assert [lr_factor(s, total=10, warmup=3, shape="constant") for s in (0, 2, 3, 9)] == [1 / 3, 1.0, 1.0, 1.0]
    # pretraining's schedule is the same function: warm-up, then cosine to ~0 at the last step
    assert lr_factor(200, total=1000, warmup=200) == 1.0 and lr_factor(999, total=1000, warmup=200) < 1e-4


def test_long_captions_are_refused_or_trimmed_to_fit_beside_many_vectors(tiny_base, tmp_path):
    import json

    from helpers import noise_png

    words = "of a broad patient , dark film , with a pacemaker , chest drain , and a wide mediastinum seen " * 3
    for i in range(2):
        noise_png(tmp_path / "data" / f"im{i}.png", seed=i)
    (tmp_path / "data" / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": f"im{i}.png", "text": f"a chest x-ray {words}"}) + "\n" for i in range(2)))
    recipe = tiny_recipe(tmp_path / "data", tmp_path / "a", tiny_base, "ti", steps=1)
    recipe = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, captions="metadata",
                                                                  caption_format="{caption} with {token}"),
                                 method=dataclasses.replace(recipe.method, tokens=[TokenConfig("<e>", "fluid", 40)]))
    with pytest.raises(DataError, match='tokens with the learned vectors expanded; the limit is 77.*long_captions = "trim"'):
        train(recipe, **quiet)
    trimmed = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, long_captions="trim"),
                                  output=dataclasses.replace(recipe.output, dir=str(tmp_path / "b")))
    result = train(trimmed, **quiet)
    assert result.steps == 1 and load_file(tmp_path / "b" / "e.safetensors")["<e>"].shape == (40, 32)


def test_a_bf16_run_records_the_fingerprint_of_the_base_as_users_load_it(tiny_base, mixed_folder, tmp_path):
    """The fingerprint is taken before the frozen weights are cast: a bf16 copy of the vocabulary
    hashes differently, and every file trained in bf16 then warned that it came from another base."""
    recipe = tiny_recipe(mixed_folder, tmp_path / "bf16", tiny_base, "ti", steps=1)
    train(dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, precision="bf16")), progress=False,
          log=lambda m: None)
    header = read_header(tmp_path / "bf16" / "effusion.safetensors")
    assert header["base_fingerprint"] == load_base(str(tiny_base)).fingerprint
