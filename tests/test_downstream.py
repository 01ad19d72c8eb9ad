"""The downstream claim's measurement: paired replicates on scarce real data, the gain's t interval."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from lowbudget.bench import downstream as ds
from lowbudget.bench.downstream import DownstreamConfig, downstream_gain, verdict
from lowbudget.bench.fidelity import Sampling, TokenSpec
from lowbudget.errors import LowbudgetError
from lowbudget.evaluate.classifier import ClassifierConfig
from lowbudget.stats import mean_interval, t_quantile


def test_t_quantile_matches_closed_forms_and_the_normal_limit():
    for p in (0.9, 0.975, 0.995):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-5)  # Cauchy
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-5)
    assert t_quantile(0.975, 9) == pytest.approx(2.2622, abs=1e-4)
    assert t_quantile(0.975, 100_000) == pytest.approx(1.95996, abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile(0.3, 5)


def test_mean_interval_covers_the_true_mean_95_percent_of_the_time():
    values = [0.02, -0.01, 0.05, 0.03, 0.00]
    mean, low, high = mean_interval(values)
    half = t_quantile(0.975, 4) * np.std(values, ddof=1) / math.sqrt(5)
    assert (mean, low, high) == pytest.approx((0.018, 0.018 - half, 0.018 + half))
    samples = np.random.default_rng(0).normal(0.3, 1.0, size=(4000, 10))
    half = t_quantile(0.975, 9) * samples.std(axis=1, ddof=1) / math.sqrt(10)
    coverage = (np.abs(samples.mean(axis=1) - 0.3) <= half).mean()
    assert 0.935 <= coverage <= 0.965, coverage
    with pytest.raises(ValueError):
        mean_interval([0.1])


def test_the_verdict_reads_the_interval():
    assert verdict(0.01, 0.05) == "synthetic images help"
    assert verdict(-0.05, -0.01) == "synthetic images hurt"
    assert verdict(-0.01, 0.02) == "no effect detected"


@pytest.mark.parametrize("change, message", [({"n_real": (7,)}, "n_real 7"), ({"replicates": 1}, "replicates 1"), ({"replicates": 101}, "replicates 101"),
                                             ({"ratio": 0}, "ratio 0"), ({"pool": 50}, "pool 50: expected at least .* 80")])
def test_bad_settings_name_the_value(change, message):
    with pytest.raises(LowbudgetError, match=message):
        DownstreamConfig(**change)


def tiny() -> DownstreamConfig:
    return DownstreamConfig(n_real=(8,), replicates=2, ratio=1, n_test=20, pool=6, token=TokenSpec("lesion", steps=3, batch_size=2),
                            sampling=Sampling(steps=2, batch_size=8),
                            classifier=ClassifierConfig(size=64, steps=4, eval_every=2, width=8))


def test_replicates_pair_the_two_training_sets_and_resume(tmp_path, monkeypatch):
    calls = []
    train_once = ds.train_once

    def counted(x, y, val, test, *args, seed, **kw):
        calls.append({"n": len(y), "val": len(val[1]), "test": len(test[1]), "seed": seed, "positives": int(y.sum()),
                      "images": {im.numpy().tobytes() for im in x}, "held_out": {im.numpy().tobytes() for im in (*val[0], *test[0])}})
        return train_once(x, y, val, test, *args, seed=seed, **kw)

    monkeypatch.setattr(ds, "train_once", counted)
    out = downstream_gain(tiny(), tmp_path, log=lambda s: None)[8]
    # per replicate: real (6 train, 2 validation) then real + 8 synthetic, half of each class, same seed
    assert [c["n"] for c in calls] == [6, 14, 6, 14] and {c["val"] for c in calls} == {2} and {c["test"] for c in calls} == {20}
    assert [c["seed"] for c in calls] == [0, 0, 1, 1] and [c["positives"] for c in calls] == [3, 7, 3, 7]
    # no image a classifier trains on is one it is validated or tested on, and the sites differ
    assert all(not (c["images"] & c["held_out"]) for c in calls)
    assert not (calls[0]["images"] & calls[2]["images"])
    for rep in out["replicates"]:
        assert rep["gain"] == pytest.approx(rep["auc_real_synthetic"] - rep["auc_real"])
    mean, low, high = mean_interval([r["gain"] for r in out["replicates"]])
    assert (out["gain_mean"], out["gain_low"], out["gain_high"]) == pytest.approx((mean, low, high))
    assert out["verdict"] == verdict(low, high)
    # the sites differ: each replicate draws its own real phantoms and trains its own token
    assert len(list((tmp_path / "downstream" / "runs").glob("spec-*"))) == 2

    monkeypatch.setattr(ds, "train_once", lambda *a, **k: pytest.fail("a finished replicate ran again"))
    assert downstream_gain(tiny(), tmp_path, log=lambda s: None)[8] == out
    record = json.loads((tmp_path / "downstream" / "n8" / "replicate-0.json").read_text())
    assert record["result"] == out["replicates"][0]

    monkeypatch.setattr(ds, "train_once", counted)
    calls.clear()
    changed = replace(tiny(), classifier=replace(tiny().classifier, steps=2))
    downstream_gain(changed, tmp_path, log=lambda s: None)
    assert len(calls) == 4  # another setting is measured anew, not read from the old records
