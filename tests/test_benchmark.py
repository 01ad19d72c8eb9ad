"""The phantom world's acceptance figures, at reduced size: the embedded base, the quick
benchmark's fidelity row, and the sampling checks on the shared embeddings.

These run the real embedded base (about 5 minutes on 2 CPU cores in all); the full-size
figures come from `lowbudget benchmark` and are quoted in benchmarks/PHANTOM_RESULTS.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lowbudget.phantoms.fidelity import Sampling, generate_gray, open_with, recognised_rate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "embeddings"


def test_plain_prompts_give_recognisable_phantoms():
    pipe = open_with([])
    for modality, prompt in (("chest", "a frontal chest x-ray"), ("prostate", "an axial t2 prostate mri")):
        images = generate_gray(pipe, prompt, list(range(16)), Sampling())
        assert recognised_rate(modality, images) >= 0.9, modality


def test_quick_benchmark_meets_the_fidelity_targets(tmp_path):
    from lowbudget.phantoms.benchmark import BenchmarkConfig, run_benchmark

    report = run_benchmark(tmp_path, BenchmarkConfig.quick(), log=lambda s: None)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["detectors"]["effusion"]["auc"] >= 0.98
    rates = results["fidelity"]["effusion"]["rates"]
    assert rates["token"] >= 0.8, rates
    assert rates["init"] <= 0.2 and rates["plain"] <= 0.2, rates
    assert "| effusion |" in report.read_text()
    assert (tmp_path / "runs" / "effusion" / "effusion.safetensors").stat().st_size < 1024 * 1024


@pytest.fixture(scope="module")
def shared_pipe():
    files = [SHARED / f"{name}.safetensors" for name in ("effusion", "cardiomegaly", "healthy-chest")]
    if not all(f.is_file() for f in files):
        pytest.fail("the shared phantom embeddings are missing from embeddings/")
    return open_with(files)


def test_interpolation_is_monotone_for_both_methods(shared_pipe):
    """Issue #5: mean Spearman rho >= 0.9 between weight and effusion score (here 8 seeds, 5 weights)."""
    from lowbudget.phantoms.compose_check import interpolation_check

    result = interpolation_check(shared_pipe, Sampling(), list(range(8)))
    for method in ("and", "lerp", "slerp"):
        assert result[method]["rho_mean"] >= 0.9, (method, result[method]["rhos"])


def test_combination_shows_both_findings(shared_pipe):
    from lowbudget.phantoms.compose_check import combination_check

    result = combination_check(shared_pipe, Sampling(), list(range(16)))
    assert result["both"] >= 0.7, result


def test_inpainting_puts_the_finding_inside_the_mask_and_nothing_outside(shared_pipe):
    from lowbudget.phantoms.compose_check import inpainting_check

    result = inpainting_check(shared_pipe, Sampling(), list(range(8)))
    assert result["detected_in_mask"] >= 0.8, result["detected_in_mask"]
    assert result["pixels_changed_outside"] == 0
