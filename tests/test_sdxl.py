"""SDXL: a tiny model of SDXL's architecture (two text encoders of different widths, pooled
embedding and time ids, the same diffusers classes), trained, sampled and loaded in plain diffusers."""

import dataclasses
import json

import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file, save_file

import lowbudget
from lowbudget.adapters.compat import check_embedding
from lowbudget.adapters.foreign_layouts import read_embedding
from lowbudget.adapters.own_files import read_header
from lowbudget.errors import AdapterError, LowbudgetError, ModelError
from lowbudget.models import load_base
from lowbudget.models.architectures import write_base_folder
from lowbudget.recipe import LoraConfig, MethodConfig, ModelConfig
from lowbudget.sampling.prompts import encode_texts
from lowbudget.sampling.sampler import Inpainting, SampleRequest, sample, sample_states
from lowbudget.training import train

from helpers import assert_one_line_error, run, tiny_recipe

quiet = dict(progress=False, log=lambda m: None)
FAST = dict(steps=3, size=32)


@pytest.fixture(scope="module")
def xl_base(tmp_path_factory):
    return write_base_folder(tmp_path_factory.mktemp("bases") / "tiny-xl", "tiny-xl", seed=0)


@pytest.fixture(scope="module")
def trained_ti(xl_base, mixed_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "xl-ti"
    train(tiny_recipe(mixed_folder, out, xl_base, "ti", steps=4), **quiet)
    return out


def test_an_sdxl_folder_loads_as_sdxl_with_both_vocabularies_in_its_fingerprint(xl_base):
    base = load_base(xl_base)
    assert base.family == "sdxl" and base.text_widths == (32, 64) and base.is_xl
    assert isinstance(base.pipeline(), StableDiffusionXLPipeline)
    other = load_base(xl_base)
    with torch.no_grad():  # a change to the second encoder's vocabulary only
        other.text_encoder_2.get_input_embeddings().weight[5] += 1
    assert base.fingerprint == load_base(xl_base).fingerprint != other.fingerprint
    with pytest.raises(ModelError, match=r"expects an SD 1.x base \(text width 768\) but .* is SDXL \(text width 32 \+ 64\)"):
        load_base(xl_base, expected_family="sd1")


@pytest.mark.parametrize("negative", ["", "blurry"])
def test_sampling_on_sdxl_is_diffusers_own_sdxl_pipeline(xl_base, negative):
    """Pooled embeddings, time ids and the zeroed empty negative: the image diffusers makes."""
    pipe = load_base(xl_base).pipeline()
    ours = sample(pipe, SampleRequest(prompt="a chest x-ray", negative_prompt=negative, seeds=[7], steps=4, size=32,
                                      guidance=5.0))[0]
    noise = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(7))
    theirs = pipe("a chest x-ray", negative_prompt=negative or None, latents=noise, num_inference_steps=4,
                  guidance_scale=5.0, height=32, width=32, output_type="pt").images[0]
    torch.testing.assert_close(ours, theirs.float(), atol=2e-4, rtol=0)


def test_composition_on_sdxl_mixes_each_sub_prompts_pooled_embedding(xl_base):
    pipe = load_base(xl_base).pipeline()
    a = sample(pipe, SampleRequest(prompt="lung :1 AND heart :0", seeds=[0], **FAST))
    torch.testing.assert_close(a, sample(pipe, SampleRequest(prompt="lung", seeds=[0], **FAST)), atol=1e-4, rtol=0)
    cond = encode_texts(pipe, ["", "lung", "heart"], 32)
    assert cond.states.shape == (3, 77, 96) and cond.pooled.shape == (3, 32) and cond.time_ids.tolist()[0] == [32, 32, 0, 0, 32, 32]
    req = SampleRequest(prompt="", seeds=[0], **FAST)
    mixed = sample_states(pipe, req, cond, [0.5, 0.5])
    cond.pooled[2] = cond.pooled[1]  # the second sub-prompt keeps its states but takes the first's pooled embedding
    assert (sample_states(pipe, req, cond, [0.5, 0.5]) - mixed).abs().max() > 1e-4
    with pytest.raises(LowbudgetError, match="SDXL pipeline needs pooled text embeddings"):
        sample_states(pipe, req, cond.states, [0.5, 0.5])


def test_embedding_level_interpolation_on_sdxl_mixes_each_encoders_vectors(xl_base, trained_ti):
    from lowbudget.sampling.interpolate import mix, temporary_token, token_vectors

    pipe = load_base(xl_base).pipeline()
    lowbudget.load_adapter(pipe, trained_ti / "effusion.safetensors", warn=lambda m: None)
    a, b = token_vectors(pipe, "<effusion>"), token_vectors(pipe, "a heart")
    assert [v.shape[-1] for v in a] == [32, 64]
    half = mix("slerp", a, b, 0.5)
    sizes = [len(pipe.tokenizer), len(pipe.tokenizer_2)]
    with temporary_token(pipe, half) as token:
        for got, want in zip(token_vectors(pipe, token), half):
            torch.testing.assert_close(got, want)
        assert sample(pipe, SampleRequest(prompt=f"a {token}", seeds=[0], **FAST)).shape == (1, 3, 32, 32)
    assert [len(pipe.tokenizer), len(pipe.tokenizer_2)] == sizes  # removed from both


def test_inpainting_on_sdxl_keeps_the_known_region(xl_base):
    pipe = load_base(xl_base).pipeline()
    image = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    out = sample(pipe, SampleRequest(prompt="a lesion", seeds=[1], inpaint=Inpainting(image, mask, feather=0, paste_back=True),
                                     **FAST))
    torch.testing.assert_close(out[0][:, mask[0, 0] == 0], image[0][:, mask[0, 0] == 0])
    assert (out[0][:, mask[0, 0] == 1] - image[0][:, mask[0, 0] == 1]).abs().mean() > 0.01


@pytest.mark.parametrize("in_channels", [4, 9])
def test_a_single_file_sdxl_checkpoint_loads_like_its_folder(tmp_path, monkeypatch, in_channels):
    """Original (LDM) keys, both encoders under conditioner.embedders, loaded offline through
    diffusers' from_single_file with identical weights; the inpainting variant too."""
    import lowbudget.models.single_file as single_file
    from ldm import write_ldm_xl_checkpoint

    folder = write_base_folder(tmp_path / "folder", "tiny-xl", in_channels=in_channels)
    path = tmp_path / "tiny-xl.safetensors"
    write_ldm_xl_checkpoint(folder, path, layers_per_block=1, unet_levels=2, vae_levels=2)
    assert single_file.detect_family(path) == "sdxl" and single_file.unet_in_channels(path) == in_channels
    monkeypatch.setattr(single_file, "detect_family", lambda p: "tiny-xl")  # tiny configs, not SDXL's sizes
    single, reference = load_base(path), load_base(folder)
    assert single.family == "sdxl" and single.name == "tiny-xl"
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(single, part).state_dict(), getattr(reference, part).state_dict()
        assert set(a) == set(b), part
        for key in a:
            assert torch.equal(a[key].reshape(b[key].shape), b[key]), f"{part}.{key}"
    assert single.fingerprint == reference.fingerprint
    assert single.tokenizer_2.pad_token == "!" and single.extras["force_zeros_for_empty_prompt"]


def test_an_sdxl_inpainting_folder_feeds_mask_and_image_to_its_unet(tmp_path):
    folder = write_base_folder(tmp_path / "xl-inpaint", "tiny-xl", in_channels=9)
    base = load_base(folder)
    assert base.family == "sdxl" and base.unet.config.in_channels == 9
    rows = []
    out = sample(base.pipeline(), SampleRequest(prompt="x", seeds=[0], inpaint=Inpainting(torch.rand(1, 3, 32, 32),
                 torch.ones(1, 1, 32, 32)), **FAST), watch=lambda step: rows.append(step.unet_rows))
    assert out.shape == (1, 3, 32, 32) and rows == [2, 2, 2]


def test_sdxl_textual_inversion_trains_both_encoders_and_loads_in_plain_diffusers(xl_base, trained_ti):
    """One token, a part per encoder, trained together (a token trained in one encoder only
    changes little: diffusers PR #9010), in the clip_l / clip_g layout with equal counts."""
    path = trained_ti / "effusion.safetensors"
    tensors = load_file(path)
    assert set(tensors) == {"clip_l", "clip_g"}
    assert tensors["clip_l"].shape == (3, 32) and tensors["clip_g"].shape == (3, 64)
    base = load_base(xl_base)
    init_ids = base.tokenizer("fluid lung", add_special_tokens=False).input_ids
    rows = [init_ids[i % len(init_ids)] for i in range(3)]
    for key, encoder in (("clip_l", base.text_encoder), ("clip_g", base.text_encoder_2)):
        assert not torch.equal(tensors[key], encoder.get_input_embeddings().weight[rows].detach())  # both trained
    header = read_header(path)
    assert header["base_fingerprint"] == base.fingerprint and header["dim"] == "32+64" and header["n_vectors"] == "3"

    pipe = load_base(xl_base).pipeline()  # diffusers' documented way: one call per encoder
    pipe.load_textual_inversion(tensors["clip_l"], token="<effusion>", text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(tensors["clip_g"], token="<effusion>", text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    ours = load_base(xl_base).pipeline()
    assert lowbudget.load_adapter(ours, path, warn=lambda m: None) == "<effusion>"
    for a, b in ((pipe, ours),):
        for tok_a, enc_a, tok_b, enc_b in ((a.tokenizer, a.text_encoder, b.tokenizer, b.text_encoder),
                                           (a.tokenizer_2, a.text_encoder_2, b.tokenizer_2, b.text_encoder_2)):
            ids = tok_a.convert_tokens_to_ids(["<effusion>", "<effusion>_1", "<effusion>_2"])
            assert ids == tok_b.convert_tokens_to_ids(["<effusion>", "<effusion>_1", "<effusion>_2"])
            assert torch.equal(enc_a.get_input_embeddings().weight[ids], enc_b.get_input_embeddings().weight[ids])
    assert torch.equal(ours.text_encoder_2.get_input_embeddings().weight[-3:], tensors["clip_g"])
    # the token changes the image, through both encoders
    req = SampleRequest(prompt="a chest x-ray with <effusion>", seeds=[2], **FAST)
    assert (sample(ours, req) - sample(ours, dataclasses.replace(req, prompt="a chest x-ray with"))).abs().max() > 1e-4


def test_half_tokens_and_one_encoder_embeddings_are_refused_on_sdxl(xl_base, trained_ti, tmp_path):
    base = load_base(xl_base)
    one = tmp_path / "one.safetensors"
    save_file({"<e>": torch.ones(2, 32)}, one)
    with pytest.raises(AdapterError, match=r"holds one part, for one text encoder; base 'xl' is SDXL with two "
                                           r"\(32 \+ 64\): a 32-wide embedding cannot load onto SDXL's second encoder \(64\)"):
        check_embedding(read_embedding(one), base.text_encoders, base_name="xl")
    sd1 = tmp_path / "sd1.safetensors"
    save_file({"<e>": torch.ones(2, 768)}, sd1)
    with pytest.raises(AdapterError, match=r"an SD 1.x embedding \(768\) cannot load onto SDXL's second encoder \(64\)"):
        check_embedding(read_embedding(sd1), base.text_encoders, base_name="xl")
    uneven = tmp_path / "uneven.safetensors"
    save_file({"clip_l": torch.ones(2, 32), "clip_g": torch.ones(3, 64)}, uneven)
    with pytest.raises(AdapterError, match=r"parts hold different numbers of vectors \(clip_l 2, clip_g 3\)"):
        read_embedding(uneven)
    swapped = tmp_path / "swapped.safetensors"
    save_file({"clip_l": torch.ones(2, 64), "clip_g": torch.ones(2, 32)}, swapped)
    with pytest.raises(AdapterError, match="part clip_l has width 64 but the first text encoder of base 'xl' has 32"):
        check_embedding(read_embedding(swapped), base.text_encoders, base_name="xl")
    pipe = load_base(xl_base).pipeline()  # a token in the first encoder only: the prompt is refused
    pipe.load_textual_inversion(load_file(trained_ti / "effusion.safetensors")["clip_l"], token="<effusion>",
                                text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    with pytest.raises(LowbudgetError, match="names <effusion>, which this model's second text encoder does not know"):
        sample(pipe, SampleRequest(prompt="<effusion>", seeds=[0], **FAST))


def test_sdxl_lora_on_unet_and_both_encoders_loads_in_plain_diffusers(xl_base, mixed_folder, tmp_path):
    recipe = tiny_recipe(mixed_folder, tmp_path / "lora", xl_base, "lora", steps=2)
    recipe = dataclasses.replace(recipe, method=MethodConfig(kind="lora", lora=LoraConfig(rank=2, text_encoder=True)),
                                 model=ModelConfig(base=str(xl_base), family="sdxl"))
    train(recipe, **quiet)
    path = tmp_path / "lora" / "pytorch_lora_weights.safetensors"
    tensors = load_file(path)
    prefixes = {k.split(".")[0] for k in tensors}
    assert prefixes == {"unet", "text_encoder", "text_encoder_2"}
    assert all(tensors[k].abs().sum() > 0 for k in tensors if "lora_B" in k and k.startswith("unet."))  # trained
    unet_modules = {k.split(".lora_")[0].removeprefix("unet.") for k in tensors if k.startswith("unet.")}
    level = [("down_blocks.1", 0), ("up_blocks.0", 0), ("up_blocks.0", 1)]  # tiny-xl's one level that reads text
    assert unet_modules == {f"{block}.attentions.{a}.transformer_blocks.{i}.attn2.to_{p}"
                            for block, a in level for i in (0, 1) for p in "kv"}
    metadata = json.loads(read_header(path)["lora_adapter_metadata"])
    assert metadata["text_encoder_2.r"] == 2 and metadata["unet.r"] == 2

    from peft.utils import get_peft_model_state_dict

    pipe = load_base(xl_base).pipeline()
    pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="a")
    for prefix, module in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder), ("text_encoder_2", pipe.text_encoder_2)):
        loaded = get_peft_model_state_dict(module, adapter_name="a")
        mine = {k.removeprefix(prefix + "."): v for k, v in tensors.items() if k.startswith(prefix + ".")}
        assert set(loaded) == set(mine)
        assert all(torch.equal(loaded[k], mine[k]) for k in mine)
    ours = load_base(xl_base).pipeline()
    assert lowbudget.load_adapter(ours, tmp_path / "lora", warn=lambda m: None) == "lora"


def test_the_commands_run_on_an_sdxl_base(monkeypatch, capsys, xl_base, trained_ti, tmp_path):
    emb = trained_ti / "effusion.safetensors"
    code, _, err = run(monkeypatch, capsys, "generate", "a chest x-ray with <effusion>", "--base", xl_base, "--adapter",
                       emb, "-n", 2, "--steps", 2, "--output", tmp_path / "gen", "--quiet")
    assert code == 0, err
    assert len(list((tmp_path / "gen").glob("seed-*.png"))) == 2
    code, _, err = run(monkeypatch, capsys, "compose", "--base", xl_base, "--adapter", emb, "--combine", "<effusion>",
                       "--combine", "a heart", "--steps", 2, "--output", tmp_path / "comp", "--quiet")
    assert code == 0, err
    code, out, err = run(monkeypatch, capsys, "inspect", emb, "--base", xl_base, "--json")
    assert code == 0, err
    report = json.loads(out)[0]
    assert report["layout"] == "sdxl" and report["fits_base"]["ok"] and report["fits_base"]["warnings"] == []
    code, _, err = run(monkeypatch, capsys, "convert", emb, "--to", "comfyui", "-o", tmp_path / "c" / "effusion.safetensors")
    assert code == 0, err
    assert {k: v.shape for k, v in load_file(tmp_path / "c" / "effusion.safetensors").items()} == \
        {"clip_l": (3, 32), "clip_g": (3, 64)}
    one = tmp_path / "one.safetensors"
    save_file({"<one>": torch.ones(2, 32)}, one)
    code, _, err = run(monkeypatch, capsys, "generate", "x <one>", "--base", xl_base, "--adapter", one,
                       "--output", tmp_path / "bad")
    assert_one_line_error(code, err, r"'.*one.safetensors' holds one part, for one text encoder; base .* is SDXL")


def test_a_federation_trains_one_sdxl_token_across_sites(xl_base, mixed_folder, tmp_path):
    """Both encoders' rows travel as two tensors of the layout; the file is the clip_l / clip_g pair."""
    import subprocess
    import sys

    from helpers import ROOT
    from lowbudget.phantoms import write_chest_phantoms

    other = tmp_path / "other"
    write_chest_phantoms(other, n=6, size=48, seed=5)
    done = subprocess.run([sys.executable, "-m", "lowbudget", "federate", "simulate", "recipes/phantom/chest-ti.toml",
                           "--base", str(xl_base), "--set", "data.resolution=32", "--set", "optim.batch_size=2",
                           "--site", str(mixed_folder), "--site", str(other), "--rounds", "2", "--local-steps", "1",
                           "--output", str(tmp_path / "fed")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    (path,) = (tmp_path / "fed").glob("*.safetensors")
    tensors = load_file(path)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == {"clip_l": (4, 32), "clip_g": (4, 64)}
    assert read_header(path)["base_fingerprint"] == load_base(xl_base).fingerprint
