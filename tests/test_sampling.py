"""The one sampling loop: composition, interpolation, inpainting, outputs."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from lowbudget.errors import LowbudgetError
from lowbudget.models import load_base
from lowbudget.sampling.interpolate import lerp, slerp, temporary_token, token_vectors
from lowbudget.sampling.masks import box_mask, feather
from lowbudget.sampling.prompts import SubPrompt, parse_prompt
from lowbudget.sampling.prompts import encode_texts
from lowbudget.sampling.sampler import Inpainting, SampleRequest, sample, sample_states

from helpers import assert_one_line_error, run

FAST = dict(steps=3, size=32)


@pytest.fixture(scope="module")
def pipe(tiny_base):
    pipe = load_base(tiny_base).pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_parse_weighted_sub_prompts():
    assert parse_prompt("healthy chest x-ray :0.3 AND <effusion> :0.7") == [
        SubPrompt("healthy chest x-ray", 0.3), SubPrompt("<effusion>", 0.7)]
    assert parse_prompt("a AND b :-0.5 AND c") == [SubPrompt("a", 1.0), SubPrompt("b", -0.5), SubPrompt("c", 1.0)]
    assert parse_prompt("ratio 3:1") == [SubPrompt("ratio 3:1", 1.0)]  # a colon inside text is text
    with pytest.raises(LowbudgetError, match="empty sub-prompt"):
        parse_prompt("a AND :0.5")


def test_one_unet_call_per_step_on_a_batch_of_b_times_k_plus_1(pipe):
    calls = []
    images = sample(pipe, SampleRequest(prompt="a :0.5 AND b :0.3 AND c :-0.2", seeds=[0, 1], **FAST),
                    watch=lambda step: calls.append(step.unet_rows))
    assert calls == [2 * 4] * 3 and images.shape == (2, 3, 32, 32)


def test_sampling_from_text_states_is_sampling_from_their_prompts(pipe):
    req = SampleRequest(prompt="a :0.7 AND b :0.3", negative_prompt="n", seeds=[4], **FAST)
    estimates = []
    states = encode_texts(pipe, ["n", "a", "b"]).states  # (3, 77, D)
    direct = sample_states(pipe, req, states, [0.7, 0.3], watch=lambda step: estimates.append(step.x0))
    torch.testing.assert_close(direct, sample(pipe, req), atol=1e-5, rtol=0)
    latent = 32 // 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    assert len(estimates) == 3 and estimates[0].shape == (1, 4, latent, latent)  # DDIM's estimate, each step
    with pytest.raises(LowbudgetError, match="3 text states for 1 weights"):
        sample_states(pipe, req, states, [1.0])


def test_plain_prompt_matches_diffusers_own_pipeline(pipe):
    """K = 1, w = 1 is ordinary classifier-free guidance: the same image diffusers makes."""
    ours = sample(pipe, SampleRequest(prompt="a chest x-ray", seeds=[7], steps=4, size=32, guidance=5.0))[0]
    theirs = pipe("a chest x-ray", num_inference_steps=4, guidance_scale=5.0, height=32, width=32,
                  generator=torch.Generator().manual_seed(7), output_type="pt").images[0]
    torch.testing.assert_close(ours, theirs.float(), atol=2e-4, rtol=0)


def test_each_image_depends_only_on_its_seed(pipe):
    alone = sample(pipe, SampleRequest(prompt="x", seeds=[3], **FAST))[0]
    batched = sample(pipe, SampleRequest(prompt="x", seeds=[1, 3], **FAST))[1]
    torch.testing.assert_close(alone, batched, atol=1e-4, rtol=0)


def test_composition_weights_change_the_image(pipe):
    a = sample(pipe, SampleRequest(prompt="lung :1 AND heart :0", seeds=[0], **FAST))
    b = sample(pipe, SampleRequest(prompt="lung :0 AND heart :1", seeds=[0], **FAST))
    same = sample(pipe, SampleRequest(prompt="lung", seeds=[0], **FAST))
    torch.testing.assert_close(a, same, atol=1e-4, rtol=0)  # weight 0 removes a sub-prompt's effect
    assert (a - b).abs().max() > 1e-3


def test_guidance_from_runs_the_first_steps_unguided(pipe):
    """guidance_from = 0.5 of 4 steps: the first 2 steps are the guidance-1 run's, the rest guided."""
    def estimates(**kw):
        out = []
        sample(pipe, SampleRequest(prompt="lung", seeds=[2], steps=4, size=32, **kw), watch=lambda s: out.append(s.x0))
        return out

    late = estimates(guidance=7.5, guidance_from=0.5)
    unguided, guided = estimates(guidance=1.0), estimates(guidance=7.5)
    for i in (0, 1):
        torch.testing.assert_close(late[i], unguided[i], atol=1e-5, rtol=0)
        assert (late[i] - guided[i]).abs().max() > 1e-3
    assert (late[3] - unguided[3]).abs().max() > 1e-3  # guided from step 2 on
    with pytest.raises(LowbudgetError, match="--guidance-from = 1.0 must be in \\[0, 1\\)"):
        SampleRequest(prompt="x", guidance_from=1.0)


def test_two_64_vector_tokens_combine_but_not_in_one_prompt(tiny_base):
    pipe = load_base(tiny_base).pipeline()
    pipe.load_textual_inversion({"<a>": torch.randn(64, 32)}, token="<a>")
    pipe.load_textual_inversion({"<b>": torch.randn(64, 32)}, token="<b>")
    sample(pipe, SampleRequest(prompt="<a> :0.5 AND <b> :0.5", seeds=[0], steps=1, size=32))
    with pytest.raises(LowbudgetError, match="is 130 tokens with learned vectors expanded \\(limit 77\\)"):
        sample(pipe, SampleRequest(prompt="<a> <b>", seeds=[0], steps=1, size=32))


@pytest.mark.parametrize("name", ["ddim", "dpm++", "euler", "pndm"])
def test_every_scheduler_runs(pipe, name):
    images = sample(pipe, SampleRequest(prompt="x", seeds=[0], scheduler=name, steps=4, size=32))
    assert torch.isfinite(images).all() and images.shape == (1, 3, 32, 32)


def test_unknown_scheduler_is_named(pipe):
    with pytest.raises(LowbudgetError, match="--scheduler 'heun' is not known"):
        sample(pipe, SampleRequest(prompt="x", scheduler="heun", **FAST))


def test_lerp_slerp_endpoints_norms_and_unequal_counts():
    a, b = torch.randn(4, 8), torch.randn(2, 8) * 3
    for mix in (lerp, slerp):
        torch.testing.assert_close(mix(a, b, 0.0), a)
        torch.testing.assert_close(mix(a, b, 1.0), b[torch.arange(4) % 2], atol=1e-5, rtol=1e-5)  # b repeated
    mid = slerp(a, b, 0.5)
    bb = b[torch.arange(4) % 2]
    torch.testing.assert_close(mid.norm(dim=-1), (a.norm(dim=-1) + bb.norm(dim=-1)) / 2, atol=1e-5, rtol=1e-5)
    cos = lambda x, y: torch.nn.functional.cosine_similarity(x, y, dim=-1)  # noqa: E731
    torch.testing.assert_close(cos(mid, a), cos(mid, bb), atol=1e-5, rtol=1e-5)  # halfway along the arc


def test_temporary_token_is_removed_afterwards(tiny_base):
    pipe = load_base(tiny_base).pipeline()
    before = len(pipe.tokenizer)
    with temporary_token(pipe, [torch.randn(3, 32)]) as token:
        assert len(pipe.tokenizer) == before + 3 and [v.shape for v in token_vectors(pipe, token)] == [(3, 32)]
    assert len(pipe.tokenizer) == before and token not in pipe.tokenizer.get_vocab()


def _input_image(size=32) -> torch.Tensor:
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.2 + 0.6 * x, 0.5 * y, 0.3 + 0.2 * x * y])
    return torch.tensor((np.round(img * 255) / 255)[None], dtype=torch.float32)  # exactly 8-bit values


def test_inpainting_with_paste_back_keeps_every_pixel_outside_the_feathered_mask(pipe):
    image, mask = _input_image(), box_mask("10,10,20,20", 32)
    job = Inpainting(image=image, mask=mask, feather=3, paste_back=True)
    out = sample(pipe, SampleRequest(prompt="a nodule", seeds=[0], inpaint=job, **FAST))[0]
    outside = feather(mask, 3)[0, 0] == 0
    assert torch.equal(out[:, outside], image[0][:, outside])
    assert (out[:, 12:18, 12:18] - image[0][:, 12:18, 12:18]).abs().max() > 0.01  # the inside was repainted
    loose = sample(pipe, SampleRequest(prompt="a nodule", seeds=[0], inpaint=replace(job, paste_back=False), **FAST))[0]
    assert not torch.equal(loose[:, outside], image[0][:, outside])  # the VAE round trip alone changes pixels


def test_feathered_mask_is_exactly_zero_beyond_its_border():
    soft = feather(box_mask("10,10,20,20", 32), 4)[0, 0]
    assert soft[10:20, 10:20].min() == 1.0 and 0 < soft[8, 15] < 1
    assert soft[:6].max() == 0 and soft[:, 24:].max() == 0


def test_strength_below_one_and_composition_inside_the_mask(pipe):
    job = Inpainting(image=_input_image(), mask=box_mask("4,4,28,28", 32), strength=0.5)
    out = sample(pipe, SampleRequest(prompt="healthy :0.3 AND effusion :0.7", seeds=[0], inpaint=job, steps=4, size=32))
    assert torch.isfinite(out).all()


def test_sd_inpainting_checkpoint_runs_natively(tmp_path):
    import dataclasses

    from lowbudget.models.architectures import TINY, write_base_folder

    shape = dataclasses.replace(TINY, unet={**TINY.unet, "in_channels": 9})
    pipe = load_base(write_base_folder(tmp_path / "inpaint", shape)).pipeline()
    calls = []
    job = Inpainting(image=_input_image(), mask=box_mask("8,8,24,24", 32), paste_back=True)
    out = sample(pipe, SampleRequest(prompt="x", seeds=[0], inpaint=job, **FAST),
                 watch=lambda step: calls.append(step.unet_rows))
    assert out.shape == (1, 3, 32, 32) and calls == [2] * 3


# ---------------------------------------------------------------- CLI and files


def test_generate_writes_regenerable_pngs_and_dicom(monkeypatch, capsys, tmp_path, tiny_base):
    from lowbudget.sampling.outputs import read_record

    code, _, err = run(monkeypatch, capsys, "generate", "a chest x-ray", "--base", tiny_base, "-n", 2, "--seed", 5,
                       "--steps", 3, "--guidance-from", 0.34, "--size", 32, "--output", tmp_path / "g")
    assert code == 0, err
    rec = read_record(tmp_path / "g" / "seed-000006.png")
    assert rec["seed"] == 6 and rec["steps"] == 3 and rec["scheduler"] == "ddim" and len(rec["base_fingerprint"]) == 64
    assert rec["guidance_from"] == 0.34
    code, _, err = run(monkeypatch, capsys, "generate", rec["prompt"], "--base", tiny_base, "-n", 1, "--seed", rec["seed"],
                       "--steps", rec["steps"], "--guidance", rec["guidance"], "--guidance-from", rec["guidance_from"],
                       "--scheduler", rec["scheduler"], "--size", 32, "--output", tmp_path / "again")
    first = np.asarray(Image.open(tmp_path / "g" / "seed-000006.png"))
    again = np.asarray(Image.open(tmp_path / "again" / "seed-000006.png"))
    assert np.abs(first.astype(int) - again.astype(int)).max() <= 1  # regenerated from its own record
    code, _, err = run(monkeypatch, capsys, "generate", "x", "--base", tiny_base, "-n", 1, "--steps", 2, "--size", 32,
                       "--format", "dicom", "--output", tmp_path / "d")
    import pydicom

    ds = pydicom.dcmread(tmp_path / "d" / "seed-000000.dcm")
    assert ds.BurnedInAnnotation == "YES" and ds.ImageComments.startswith("SYNTHETIC") and ds.ConversionType == "SYN"


def test_compose_and_inpaint_from_the_cli(monkeypatch, capsys, tmp_path, tiny_base):
    from lowbudget.adapters.own_files import Provenance, save_embedding

    fp = load_base(tiny_base).fingerprint
    for name in ("healthy", "effusion"):
        save_embedding(tmp_path / f"{name}.safetensors", f"<{name}>", torch.randn(2, 32), Provenance("tiny", fp))
    common = ["--base", tiny_base, "--adapter", tmp_path / "healthy.safetensors", "--adapter",
              tmp_path / "effusion.safetensors", "--steps", 2, "--size", 32, "--seeds", "0,1"]
    for method in ("and", "lerp", "slerp"):
        code, _, err = run(monkeypatch, capsys, "compose", *common, "--interpolate", "<healthy>", "--interpolate",
                           "<effusion>", "--weight-steps", 3, "--method", method, "--template", "a chest x-ray, {}",
                           "--output", tmp_path / f"strip-{method}.png")
        assert code == 0, err
        assert Image.open(tmp_path / f"strip-{method}.png").width > 3 * 32
    code, _, err = run(monkeypatch, capsys, "compose", *common, "--combine", "<healthy>", "--combine", "<effusion>",
                       "--weights", "0.5,1", "--output", tmp_path / "grid.png")
    assert code == 0 and "2 rows x 3 columns" in err
    Image.fromarray((np.asarray(_input_image()[0].permute(1, 2, 0)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    code, _, err = run(monkeypatch, capsys, "inpaint", tmp_path / "in.png", "--box", "8,8,20,20", "--prompt", "<effusion>",
                       "--paste-back", "--feather", 2, *common[:6], "--steps", 2, "--size", 32, "--output", tmp_path / "inp.png")
    assert code == 0, err
    out, before = np.asarray(Image.open(tmp_path / "inp.png")), np.asarray(Image.open(tmp_path / "in.png"))
    keep = (feather(box_mask("8,8,20,20", 32), 2)[0, 0] == 0).numpy()
    assert np.array_equal(out[keep], before[keep])


@pytest.mark.parametrize("args,pattern", [
    (["inpaint", "{img}", "--prompt", "x", "--box", "1,2,3"], r"--box '1,2,3' must be four integers"),
    (["inpaint", "{img}", "--prompt", "x"], r"give exactly one of --mask PNG or --box"),
    (["inpaint", "{img}", "--prompt", "x", "--box", "0,0,99,99", "--size", "32"], r"must satisfy 0 <= x0 < x1 <= 32"),
    (["compose", "--seeds", "0"], r"give either --interpolate A --interpolate B or --combine"),
    (["generate", "x", "--scheduler", "heun", "--steps", "1", "--size", "32"], r"--scheduler 'heun' is not known"),
    (["generate", "x", "--format", "jpeg"], r"--format 'jpeg' is not known"),
    (["generate", "x", "--guidance-from", "1.5"], r"--guidance-from = 1.5 must be in \[0, 1\)"),
])
def test_sampling_errors_are_one_line(monkeypatch, capsys, tmp_path, tiny_base, args, pattern):
    Image.new("RGB", (32, 32)).save(tmp_path / "img.png")
    code, _, err = run(monkeypatch, capsys, *[a.format(img=tmp_path / "img.png") for a in args], "--base", tiny_base)
    assert_one_line_error(code, err, pattern)
