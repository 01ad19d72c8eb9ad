"""The phantom world: generator, detectors, captions, data source, pretraining and the embedded base."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from lowbudget.phantoms import detectors
from lowbudget.bench.fidelity import INIT_WORDS
from lowbudget.phantoms.world import MODALITIES, generate, write_phantoms

ALL_FINDINGS = [(m, f) for m, mod in MODALITIES.items() for f in mod.findings]


def test_generation_is_deterministic_in_the_seed():
    a = generate("chest", "effusion", n=3, seed=5)
    b = generate("chest", "effusion", n=3, seed=5)
    c = generate("chest", "effusion", n=3, seed=6)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert not np.array_equal(a[0].image, c[0].image)
    assert a[0].image.shape == (64, 64) and a[0].image.dtype == np.float32
    assert 0 <= a[0].image.min() and a[0].image.max() <= 1


@pytest.mark.parametrize("modality,finding", ALL_FINDINGS)
def test_every_image_shows_its_finding_with_a_mask(modality, finding):
    for ph in generate(modality, finding, n=5, seed=1):
        assert ph.labels[finding] == 1
        assert ph.masks[finding].any()
    healthy = generate(modality, "none", n=5, seed=1, prevalence=0.0)
    assert all(not ph.labels[finding] and finding not in ph.masks for ph in healthy)


def test_effusion_mask_lies_in_the_labelled_lung_base():
    for ph in generate("chest", "effusion", n=10, seed=3):
        ys, xs = np.nonzero(ph.masks["effusion"])
        # the patient's right is the image's left
        assert (xs.mean() < 32) == (ph.labels["effusion_attr"] == "right")
        assert ys.mean() > 0.5 * 64


@pytest.mark.parametrize("describe", [False, True])
def test_captions_never_name_a_finding_or_an_initializer_word(describe):
    words = set(INIT_WORDS) | set(INIT_WORDS.values()) | {"normal", "healthy"}
    captions = {p.caption for m in MODALITIES for p in generate(m, n=300, seed=2, prevalence=0.3, describe=describe)}
    assert len(captions) > 4  # the attributes vary
    for caption in captions:
        assert not words & set(re.findall(r"[a-z]+", caption)), caption


APPEARANCE = {"effusion": "hazy", "pneumothorax": "lucent", "cardiomegaly": "wide central", "nodule": "round dot",
              "lesion": "dark focus"}


@pytest.mark.parametrize("modality,finding", ALL_FINDINGS)
def test_pretraining_captions_describe_a_finding_exactly_when_it_is_drawn(modality, finding):
    described = generate(modality, n=200, seed=5, prevalence=0.3, describe=True)
    plain = generate(modality, n=200, seed=5, prevalence=0.3)
    for a, b in zip(described, plain):
        assert (APPEARANCE[finding] in a.caption) == bool(a.labels[finding]), a.caption
        assert APPEARANCE[finding] not in b.caption  # the hospital's captions never say it
        assert np.array_equal(a.image, b.image)  # describing does not change the picture
    assert 0 < np.mean([p.labels[finding] for p in described]) < 1


@pytest.mark.parametrize("modality,finding", ALL_FINDINGS)
def test_detector_auc_is_at_least_0_98(modality, finding):
    """The ground truth of every fidelity figure: measured at the working resolution (64 px)."""
    assert detectors.detector_auc(modality, finding, n=100) >= 0.98


def test_detectors_calibrate_a_threshold_between_the_classes():
    pos = [p.image for p in generate("chest", "cardiomegaly", n=20, seed=9)]
    neg = [p.image for p in generate("chest", "none", n=20, seed=9)]
    assert detectors.flagged("chest", "cardiomegaly", pos).mean() >= 0.9
    assert detectors.flagged("chest", "cardiomegaly", neg).mean() <= 0.1


def test_recognise_tells_the_modalities_apart_and_rejects_noise():
    for m in MODALITIES:
        assert all(detectors.recognise(p.image) == m for p in generate(m, n=10, seed=4, prevalence=0.2))
    assert detectors.recognise(np.random.default_rng(0).random((64, 64)).astype(np.float32)) is None


def test_write_phantoms_writes_images_captions_and_labels(tmp_path):
    paths = write_phantoms(tmp_path / "p", "prostate", "lesion", n=4, fmt="mixed", seed=0)
    assert [p.suffix for p in paths] == [".png", ".png", ".dcm", ".png"]
    rows = [json.loads(line) for line in (tmp_path / "p" / "metadata.jsonl").read_text().splitlines()]
    assert [r["file_name"] for r in rows] == [p.name for p in paths]
    assert all("lesion" not in r["text"] for r in rows)
    with open(tmp_path / "p" / "labels.csv", newline="") as fh:
        labels = list(csv.DictReader(fh))
    assert [r["lesion"] for r in labels] == ["1"] * 4 and {r["lesion_attr"] for r in labels} <= {"left", "right"}


def test_a_recipe_can_name_a_generator_instead_of_a_folder():
    from lowbudget.phantoms.source import phantom_image_set
    from lowbudget.errors import DataError, RecipeError
    from lowbudget.recipe import DataConfig

    images = phantom_image_set(DataConfig(phantoms="chest/nodule", phantoms_n=6, resolution=32))
    assert len(images) == 6 and images.images[0].pixels.shape == (32, 32, 3)
    assert images.images[0].caption.startswith("a frontal chest x-ray")
    templated = phantom_image_set(DataConfig(phantoms="chest/nodule", phantoms_n=6, resolution=32, captions="templates"))
    assert templated.caption_source == "templates" and all(im.caption is None for im in templated.images)
    with pytest.raises(RecipeError, match="expected 'MODALITY/FINDING'"):
        DataConfig(phantoms="chest")
    with pytest.raises(DataError, match="data.phantoms = 'chest/lesion'.*not known for chest"):
        phantom_image_set(DataConfig(phantoms="chest/lesion"))


def test_pretraining_runs_resumes_and_packs_a_loadable_base(tmp_path):
    """A few steps of each phase; the packed fp16 file expands into a base lowbudget loads."""
    import torch

    from lowbudget.models import load_base
    from lowbudget.bench.pretrain import PretrainConfig, pretrain
    from lowbudget.models.packed import unpack_base

    cfg = PretrainConfig(n_images=12, vae_steps=2, unet_steps=2, vae_batch=4, unet_batch=4, warmup=1, checkpoint_every=1)
    packed = pretrain(tmp_path / "run", cfg, log=lambda s: None)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["phase"] == "unet" and state["step"] == 1  # the last checkpoint before the end
    base = load_base(str(unpack_base(packed, tmp_path / "folder")))
    assert base.unet.config.cross_attention_dim == 64 and base.vae.config.scaling_factor != 0.18215
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["vae"]
    for name, tensor in base.vae.state_dict().items():
        if name in saved and tensor.is_floating_point():
            assert torch.allclose(tensor, saved[name].half().float())  # fp16 packing only


def test_an_sdxl_shaped_phantom_base_pretrains_through_the_sdxl_conditioning(tmp_path):
    """phantom-xl: two text encoders trained with the U-Net, pooled embedding and time ids; the
    packed file expands into an SDXL base whose empty negative is the empty text it learned."""
    import torch

    from lowbudget.bench.pretrain import PretrainConfig, pretrain
    from lowbudget.models import load_base
    from lowbudget.models.packed import unpack_base
    from lowbudget.sampling.sampler import SampleRequest, sample

    cfg = PretrainConfig(shape="phantom-xl", n_images=12, vae_steps=1, unet_steps=2, vae_batch=4, unet_batch=4, warmup=1)
    packed = pretrain(tmp_path / "run", cfg, log=lambda s: None)
    base = load_base(str(unpack_base(packed, tmp_path / "folder")))
    assert base.family == "sdxl" and base.text_widths == (64, 96) and not base.extras["force_zeros_for_empty_prompt"]
    fresh = load_base(str(unpack_base(packed, tmp_path / "again")))
    assert fresh.fingerprint == base.fingerprint
    from lowbudget.models.architectures import PHANTOM_XL, build_components

    untrained = build_components(PHANTOM_XL, seed=0)["text_encoder_2"].state_dict()
    assert any(not torch.equal(v, untrained[k].half().float()) for k, v in base.text_encoder_2.state_dict().items()
               if v.is_floating_point())  # the second encoder trained too (beyond fp16 packing)
    assert sample(base.pipeline(), SampleRequest(prompt="a chest x-ray", seeds=[0], steps=2)).shape == (1, 3, 64, 64)


def test_the_embedded_base_is_the_shipped_phantom_base():
    from lowbudget.models import load_base
    from lowbudget.models.embedded import PACKED

    assert PACKED.stat().st_size <= 25 * 1024 * 1024
    base = load_base("")
    assert base.unet.config.sample_size == 16 and len(base.vae.config.block_out_channels) == 3
    assert base.tokenizer("a frontal chest x-ray").input_ids[:4] == [49406, 320, 35794, 10563]  # real CLIP BPE ids


def test_the_embedded_xl_base_is_the_shipped_phantom_xl_base():
    from lowbudget.models import load_base
    from lowbudget.models.embedded import PACKED_XL

    assert PACKED_XL.stat().st_size <= 40 * 1024 * 1024
    base = load_base("embedded-xl")
    assert base.family == "sdxl" and base.text_widths == (64, 96) and base.unet.config.sample_size == 16
    assert base.tokenizer_2("a frontal chest x-ray").input_ids[:4] == [49406, 320, 35794, 10563]


def test_a_scanner_changes_how_phantoms_look_not_what_they_show():
    from lowbudget.phantoms.scanners import SCANNERS, parse_scanner

    reference = generate("prostate", "lesion", n=24, seed=3)
    images = {"reference": np.stack([p.image for p in reference])}
    for name in ("bright", "dim", "noisy", "soft"):
        shown = generate("prostate", "lesion", n=24, seed=3, scanner=SCANNERS[name])
        assert [p.labels for p in shown] == [p.labels for p in reference]  # the same anatomy and findings
        images[name] = np.stack([p.image for p in shown])
        assert detectors.flagged("prostate", "lesion", images[name]).mean() == 1.0  # every style still shows it
    assert images["bright"].mean() > images["reference"].mean() > images["dim"].mean()
    assert np.abs(np.diff(images["noisy"], axis=-1)).mean() > 1.4 * np.abs(np.diff(images["reference"], axis=-1)).mean()
    assert np.abs(np.diff(images["soft"], axis=-1)).mean() < np.abs(np.diff(images["reference"], axis=-1)).mean()
    assert parse_scanner("exposure=1.1,noise=0.02") == parse_scanner("exposure=1.1,noise=0.02")
    assert parse_scanner("exposure=1.1,noise=0.02").noise == 0.02
