"""The phantom world at reduced size: the embedded base, the quick benchmark, and the
sampling checks on the shared embeddings -- all on the real embedded base.

The full-size figures come from `lowbudget benchmark` and are in benchmarks/PHANTOM_RESULTS.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lowbudget.phantoms.fidelity import Sampling, generate_gray, open_with, recognised_rate

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "embeddings"


def test_plain_prompts_give_recognisable_phantoms():
    pipe = open_with([])
    for modality, prompt in (("chest", "a frontal chest x-ray"), ("prostate", "an axial t2 prostate mri")):
        images = generate_gray(pipe, prompt, list(range(16)), Sampling())
        assert recognised_rate(modality, images) >= 0.9, modality


def test_quick_benchmark_measures_fidelity_with_the_real_pipeline(tmp_path):
    """The quick benchmark end to end: train a token with lowbudget's loop, sample with its
    sampler, count detector hits. The issue's targets (>= 0.80 with the token, <= 0.20
    without) are not met by the current base -- see PHANTOM_RESULTS.md -- so this checks
    what must hold for the figures to mean anything, not the targets."""
    from lowbudget.phantoms.benchmark import BenchmarkConfig, run_benchmark

    report = run_benchmark(tmp_path, BenchmarkConfig.quick(), log=lambda s: None)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["detectors"]["effusion"]["auc"] >= 0.98
    rates = results["fidelity"]["effusion"]["rates"]
    assert rates["training_images"] >= 0.9  # the detector sees the finding in what the token learnt from
    assert rates["recognised"] >= 0.9  # the token keeps the anatomy
    assert all(0.0 <= rates[k] <= 1.0 for k in ("token", "init", "plain"))
    assert "| effusion |" in report.read_text()
    assert (tmp_path / "runs" / "effusion" / "effusion.safetensors").stat().st_size < 1024 * 1024


@pytest.fixture(scope="module")
def shared_pipe():
    files = [SHARED / f"{name}.safetensors" for name in ("effusion", "cardiomegaly", "healthy-chest")]
    if not all(f.is_file() for f in files):
        pytest.fail("the shared phantom embeddings are missing from embeddings/")
    return open_with(files)


def test_sampling_checks_run_and_paste_back_keeps_every_outside_pixel(shared_pipe):
    """Issue #5's checks on the shared embeddings at reduced size. Their targets (rho >= 0.9,
    >= 0.70 both findings, >= 0.80 inpainted) are not met yet; the figures are reported by
    `lowbudget benchmark --sections compose`. What must hold already: every rate is a rate,
    and paste-back changes no pixel outside the feathered box."""
    from lowbudget.phantoms.compose_check import combination_check, inpainting_check, interpolation_check

    small = Sampling(steps=10)
    interp = interpolation_check(shared_pipe, small, [0, 1], weights=3)
    assert set(interp) == {"and", "lerp", "slerp"} and all(-1 <= r["rho_mean"] <= 1 for r in interp.values())
    assert 0 <= combination_check(shared_pipe, small, [0, 1])["both"] <= 1
    inpainted = inpainting_check(shared_pipe, small, [0, 1, 2])
    assert inpainted["pixels_changed_outside"] == 0
    changed_inside = np.abs(inpainted["images"] - inpainted["originals"]).max()
    assert changed_inside > 0.05  # and the box was repainted
