"""The phantom world at reduced size: the embedded base, the quick benchmark, and the
sampling checks on the shared embeddings -- all on the real embedded base.

The full-size figures come from `lowbudget phantom benchmark` and are in benchmarks/PHANTOM_RESULTS.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT
from lowbudget.bench import fidelity
from lowbudget.bench.fidelity import Sampling, TokenSpec, generate_gray, open_with, recognised_rate, train_finding

SHARED = ROOT / "embeddings"


@pytest.mark.parametrize("base", ["", "embedded-xl"])
def test_plain_prompts_give_recognisable_phantoms(base):
    """Both embedded bases, SD's architecture and SDXL's, learnt the anatomy from captions."""
    pipe = open_with([], base)
    for modality, prompt in (("chest", "a frontal chest x-ray"), ("prostate", "an axial t2 prostate mri")):
        images = generate_gray(pipe, prompt, list(range(16)), Sampling())
        assert recognised_rate(modality, images) >= 0.9, modality


def test_a_trained_finding_is_reused_only_for_the_same_spec(tmp_path, monkeypatch):
    spec = TokenSpec("nodule", n_images=4, n_vectors=1, steps=2, batch_size=2)
    first = train_finding(spec, tmp_path)
    other = train_finding(TokenSpec("nodule", n_images=4, n_vectors=2, steps=2, batch_size=2), tmp_path)
    assert first[0].parent != other[0].parent  # another setting trains anew, in its own folder
    assert load_token(first[0]).shape[0] == 1 and load_token(other[0]).shape[0] == 2
    monkeypatch.setattr(fidelity, "train", lambda *a, **k: pytest.fail("the finished run was not reused"))
    assert train_finding(spec, tmp_path) == first


def load_token(path: Path):
    from safetensors.torch import load_file

    return load_file(path)["<nodule>"]


def test_quick_benchmark_measures_fidelity_with_the_real_pipeline(tmp_path):
    """The quick benchmark end to end: train a token with lowbudget's loop, sample with its
    sampler, count detector hits -- and the issue's targets for effusion: >= 0.80 of images
    with the token, <= 0.20 with its initializer word alone or the plain prompt."""
    from lowbudget.bench.benchmark import BenchmarkConfig, run_benchmark

    report = run_benchmark(tmp_path, BenchmarkConfig.quick(), log=lambda s: None)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["detectors"]["effusion"]["auc"] >= 0.98
    rates = results["fidelity"]["effusion"]["rates"]
    assert rates["training_images"] >= 0.9  # the detector sees the finding in what the token learnt from
    assert rates["recognised"] >= 0.9  # the token keeps the anatomy
    assert rates["token"] >= 0.8, rates
    assert rates["init"] <= 0.2 and rates["plain"] <= 0.2, rates
    assert "| effusion |" in report.read_text()
    # How the effusions appear (issue #21): the training set reads one side per image and no other
    # finding. Placed by inpainting into the lower third of one lung, the effusions meet both
    # targets: side distance and leakage within what a second real set of the same size gives.
    # The token alone draws both sides (PHANTOM_RESULTS.md): recorded, a target it cannot meet.
    attr = results["fidelity"]["effusion"]["attributes"]
    assert attr["sides_training"]["both"] == 0.0 and attr["leakage_training"] == 0.0
    assert 0 < attr["side_tv_floor"]["mean"] <= attr["side_tv_floor"]["p95"] < 0.5
    placed = results["fidelity"]["effusion"]["placed"]
    assert placed["rate"] >= 0.8 and placed["attributes"]["sides_generated"]["both"] == 0.0
    assert placed["attributes"]["side_tv"] <= placed["attributes"]["side_tv_floor"]["p95"], placed
    assert placed["attributes"]["leakage"] <= placed["attributes"]["leakage_floor"]["p95"], placed
    assert "| effusion | ti, inpainted into the lower third of the lung" in report.read_text()
    assert next((tmp_path / "runs" / "effusion").glob("spec-*/effusion.safetensors")).stat().st_size < 1024 * 1024


@pytest.fixture(scope="module")
def shared_pipe():
    files = [SHARED / f"{name}.safetensors" for name in ("effusion", "cardiomegaly", "healthy-chest")]
    if not all(f.is_file() for f in files):
        pytest.fail("the shared phantom embeddings are missing from embeddings/")
    return open_with(files)


def test_sampling_checks_meet_their_targets_at_reduced_size(shared_pipe):
    """Issue #5's acceptance on the shared embeddings, fewer seeds than the benchmark
    (`lowbudget phantom benchmark --sections compose`): interpolation monotone for the prompt-level
    method and slerp (mean Spearman rho >= 0.9), every method's detection never turning off
    as the weight grows, both findings in >= 70% of combined images,
    the effusion inpainted into the box in >= 80%, and no pixel outside the feathered box
    changed."""
    from lowbudget.bench.compose_check import (combination_check, inpainting_check, interpolation_check,
                                                  text_state_reference)

    interp = interpolation_check(shared_pipe, Sampling(), [0, 1, 2], weights=4)
    rhos = {method: r["rho_mean"] for method, r in interp.items()}
    assert set(rhos) == {"and", "lerp", "slerp"}
    # lerp's rho is not asserted: 0.862 over the benchmark's 8 seeds, below the target (PHANTOM_RESULTS.md)
    assert rhos["and"] >= 0.9 and rhos["slerp"] >= 0.9, rhos
    for method, r in interp.items():  # once the effusion appears, a heavier weight never removes it
        assert r["decision_monotone"] == 1.0, (method, r["scores"])
        onsets = r["onsets"]  # healthy at w = 0, diseased somewhere on the way
        assert all(o is None or o > 0 for o in onsets) and any(o is not None for o in onsets), (method, onsets)
        # every image between A and B (3 seeds x 2 weights) has a trail of DDIM's estimates
        assert len(r["settle_steps"]) == 6 and all(1 <= k <= 26 for k in r["settle_steps"]), (method, r["settle_steps"])
    reference = text_state_reference(shared_pipe, Sampling(), [0, 1, 2], weights=4)
    assert reference["decision_monotone"] == 1.0 and len(reference["settle_steps"]) == 6, reference["scores"]
    for method in ("lerp", "slerp"):  # the mixed token moves the prompt's encoding from A towards B
        progress = interp[method]["conditioning_progress"]
        assert all(0 < x < 1 for x in progress[1:-1]) and np.all(np.diff(progress) > 0), (method, progress)
    combined = combination_check(shared_pipe, Sampling(), [0, 1, 2, 3, 4])
    assert combined["both"] >= 0.7, combined
    inpainted = inpainting_check(shared_pipe, Sampling(), [0, 1, 2, 3, 4])
    assert inpainted["detected_in_mask"] >= 0.8
    assert inpainted["pixels_changed_outside"] == 0
    changed_inside = np.abs(inpainted["images"] - inpainted["originals"]).max()
    assert changed_inside > 0.05  # and the box was repainted


def test_the_convergence_section_sets_steps_to_fidelity_against_early_stopping(tmp_path):
    from dataclasses import replace

    from lowbudget.bench.benchmark import BenchmarkConfig, run_benchmark
    from lowbudget.bench.convergence import ConvergenceConfig

    cfg = BenchmarkConfig.quick()
    cfg = replace(cfg, token=replace(cfg.token, steps=20),
                  convergence=ConvergenceConfig(every=10, seeds=(0,), n_check=2, n_final=2, validate_every=5),
                  sampling=replace(cfg.sampling, steps=5))
    report = run_benchmark(tmp_path, cfg, sections=("convergence",), log=lambda s: None).read_text()
    results = json.loads((tmp_path / "results.json").read_text())["convergence"]["effusion"]
    record = results["records"][0]
    assert [k for k, _ in record["curve"]] == [10, 20] and all(0 <= r <= 1 for _, r in record["curve"])
    assert record["dvar"]["written_step"] <= 20 and record["validation"]["written_step"] <= 20
    assert set(results["claim"]) == {"dvar", "validation"}
    assert "| effusion |" in report and "dvar: step written" in report


@pytest.mark.slow
def test_the_federated_section_compares_sites_alone_pooled_and_federated(tmp_path):
    """The section's machinery at toy size (2 sites, 2 steps): its figures are only plumbing here."""
    from lowbudget.bench.benchmark import BenchmarkConfig, run_benchmark
    from lowbudget.bench.federated import FederatedConfig

    cfg = BenchmarkConfig(findings=("lesion",), sampling=Sampling(steps=2, batch_size=4),
                          federated=FederatedConfig(sites=("bright", "soft"), per_site=4, steps=2, rounds=2, seeds=(0,),
                                                    n_eval=2))
    report = run_benchmark(tmp_path, cfg, sections=("federated",), log=lambda s: None).read_text()
    rates = json.loads((tmp_path / "results.json").read_text())["federated"]["rates"]
    assert set(rates) == {"bright alone", "soft alone", "pooled", "pooled, batch 16", "federated"}
    assert all(len(v) == 1 and 0.0 <= v[0] <= 1.0 for v in rates.values())
    assert "| mean of the sites alone |" in report and "federated >= pooled - 0.05:" in report
    fed = tmp_path / "federated" / "federated-0" / "lesion.safetensors"
    assert fed.is_file() and (tmp_path / "federated" / "data" / "pooled" / "bright-prostate-0000.png").is_file()


def test_the_benchmark_measures_the_base_it_is_given(tmp_path):
    """``--base``: every section trains on and samples from that base, here an SDXL-architecture
    one (two text encoders), so the token file has both parts and names that base; the figures
    of a random tiny base are only plumbing. A base that is not there is refused up front."""
    from dataclasses import replace

    from lowbudget.adapters.foreign_layouts import read_embedding
    from lowbudget.bench.benchmark import benchmark_config, run_benchmark
    from lowbudget.errors import LowbudgetError
    from lowbudget.models.architectures import write_base_folder

    base = write_base_folder(tmp_path / "tiny-xl", "tiny-xl", seed=0)
    cfg = benchmark_config(findings=("nodule",), base=str(base))
    cfg = replace(cfg, n_eval=2, token=replace(cfg.token, n_images=4, n_vectors=1, steps=2, batch_size=2),
                  sampling=replace(cfg.sampling, steps=2, batch_size=2))
    report = run_benchmark(tmp_path / "out", cfg, sections=("base", "fidelity"), log=lambda s: None).read_text()
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    emb = read_embedding(results["fidelity"]["nodule"]["files"][0])
    assert set(emb.parts) == {"clip_l", "clip_g"} and emb.metadata["base_model"] == "tiny-xl", emb.metadata
    assert f"Base: `{base}`." in report and {"chest", "prostate"} <= set(results["base"])
    with pytest.raises(LowbudgetError, match="--base 'nowhere' does not exist"):
        benchmark_config(base="nowhere")
