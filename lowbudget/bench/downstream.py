"""Do synthetic images help a classifier when real ones are scarce? Paired replicates, an interval.

One replicate is one site with ``n`` real phantoms (half with the finding) drawn afresh:

  1. a token trained on the site's ``n / 2`` real positives only (the images it would have);
  2. ``ratio * n`` synthetic images, half from the token prompt, half from the plain prompt;
  3. one classifier seed trains on the real images, and again on real + synthetic: the gain is
     the difference of their AUCs on the same held-out real test set.

Pairing the two settings on the site, the token and the seed removes the variance they share;
the mean gain over replicates gets Student's t interval. The verdict reads the interval: it
helps (all above 0), hurts (all below), or the effect is not detected (the interval spans 0).

Plain-prompt negatives do not depend on the site, so they come from one pool drawn once, each
replicate taking its own random subset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lowbudget import stats
from lowbudget.bench.fidelity import (Sampling, TokenSpec, generate_gray, modality_of, open_with, prompts,
                                      train_finding, training_images)
from lowbudget.errors import LowbudgetError
from lowbudget.evaluate.classifier import ClassifierConfig, split, train_once
from lowbudget.io import atomic_write_text
from lowbudget.phantoms.world import generate

# Seed ranges that never meet: a replicate r takes REAL_SEED + 1000 r (its phantoms) and
# SYNTHETIC_SEED + 1000 r onwards (its token's images), so the test set, the pool and every
# replicate's images come from different draws.
TEST_SEED, POOL_SEED, REAL_SEED, SYNTHETIC_SEED = 31_000, 45_000, 100_000, 200_000
STRIDE, MAX_REPLICATES = 1000, 100


@dataclass
class DownstreamConfig:
    finding: str = "lesion"  # the paper's downstream finding; effusion's real-only AUC is already 1.000
    n_real: tuple[int, ...] = (16,)  # real images per site, half of each class; (16, 32) takes twice as long
    replicates: int = 10  # sites per size
    ratio: int = 10  # synthetic images per real one (the paper: 200 real + 2000 synthetic)
    n_test: int = 200  # held-out real phantoms, half of each class, the same for every replicate
    pool: int = 320  # plain-prompt negatives generated once; a replicate draws ratio * n / 2 of them
    token: TokenSpec = field(default_factory=lambda: TokenSpec("lesion"))  # n_images, seeds set per replicate
    sampling: Sampling = field(default_factory=Sampling)
    classifier: ClassifierConfig = field(
        # width 32: a standard ResNet-18 costs 100 s per 300-step run here, this one 35 s
        default_factory=lambda: ClassifierConfig(size=64, steps=300, eval_every=50, width=32))

    def __post_init__(self) -> None:
        modality_of(self.finding)  # names the known findings when it is not one
        for n in self.n_real:
            if n < 8 or n % 2:
                raise LowbudgetError(f"n_real {n}: expected an even number >= 8 (half of each class, some for validation)")
        if not 2 <= self.replicates <= MAX_REPLICATES:
            raise LowbudgetError(f"replicates {self.replicates}: expected 2 (an interval needs two) to {MAX_REPLICATES}")
        if self.ratio < 1:
            raise LowbudgetError(f"ratio {self.ratio}: expected at least one synthetic image per real one")
        if self.ratio * max(self.n_real) // 2 > STRIDE:
            raise LowbudgetError(f"ratio {self.ratio} x n_real {max(self.n_real)}: at most {2 * STRIDE} synthetic images per replicate")
        if self.pool < self.ratio * max(self.n_real) // 2:
            raise LowbudgetError(f"pool {self.pool}: expected at least ratio * n / 2 = {self.ratio * max(self.n_real) // 2} "
                                 "negatives for the largest real set")


def downstream_gain(cfg: DownstreamConfig, output: Path, log: Callable[[str], None] = print) -> dict:
    """Per real-set size: each replicate's AUCs and gain, the mean gain's 95% interval, the verdict.

    Each replicate's result is kept under ``output/downstream/n<N>/`` and reused when the same
    configuration runs again, so an interrupted run resumes where it stopped."""
    modality = modality_of(cfg.finding)
    test = _labelled([p.image for p in generate(modality, cfg.finding, n=cfg.n_test // 2, seed=TEST_SEED)],
                     [p.image for p in generate(modality, "none", n=cfg.n_test // 2, seed=TEST_SEED + 1)])
    pool = _to_uint8(generate_gray(open_with([], cfg.token.base), prompts(cfg.finding)["plain"], list(range(POOL_SEED, POOL_SEED + cfg.pool)),
                                   cfg.sampling))
    out = {}
    for n in cfg.n_real:
        reps = [_replicate(cfg, n, r, pool, test, Path(output) / "downstream" / f"n{n}", log) for r in range(cfg.replicates)]
        gains = [r["gain"] for r in reps]
        mean, low, high = stats.mean_interval(gains)
        out[n] = {"replicates": reps, "gain_mean": mean, "gain_low": low, "gain_high": high,
                  "auc_real": float(np.mean([r["auc_real"] for r in reps])),
                  "auc_real_synthetic": float(np.mean([r["auc_real_synthetic"] for r in reps])),
                  "positive": sum(g > 0 for g in gains), "verdict": verdict(low, high)}
        log(f"  {n} real: gain {mean:+.3f} [{low:+.3f}, {high:+.3f}] over {len(reps)} replicates: {out[n]['verdict']}")
    return out


def verdict(low: float, high: float) -> str:
    """What a 95% interval of the gain says."""
    if low > 0:
        return "synthetic images help"
    if high < 0:
        return "synthetic images hurt"
    return "no effect detected"


def _replicate(cfg: DownstreamConfig, n: int, r: int, pool: torch.Tensor, test: tuple, folder: Path,
               log: Callable[[str], None]) -> dict:
    """One site: its real draw, its token, its synthetic set, the paired classifier runs."""
    record = folder / f"replicate-{r}.json"
    key = repr((cfg.finding, n, r, cfg.ratio, cfg.n_test, cfg.pool, cfg.token, cfg.sampling, cfg.classifier))
    if record.is_file():
        cached = json.loads(record.read_text())
        if cached.get("key") == key:
            return cached["result"]
    modality = modality_of(cfg.finding)
    seed = REAL_SEED + STRIDE * r
    spec = replace(cfg.token, finding=cfg.finding, n_images=n // 2, data_seed=seed, seed=r)
    positives = training_images(spec)  # the site's real positives are the token's training set
    negatives = [p.image for p in generate(modality, "none", n=n // 2, seed=seed + 1)]
    real_x, real_y = _labelled(positives, negatives)  # (n, 3, 64, 64) uint8, (n,)
    train_idx, val_idx = split(real_y.tolist(), cfg.classifier.val_fraction, seed=seed)
    val = (real_x[val_idx], real_y[val_idx])
    real_x, real_y = real_x[train_idx], real_y[train_idx]

    files = train_finding(spec, folder.parent / "runs")
    half = cfg.ratio * n // 2
    syn_pos = _to_uint8(generate_gray(open_with(files, spec.base), prompts(cfg.finding)["token"],
                                      list(range(SYNTHETIC_SEED + STRIDE * r, SYNTHETIC_SEED + STRIDE * r + half)), cfg.sampling))
    syn_neg = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:half]]
    syn_x = torch.cat([syn_pos, syn_neg])
    syn_y = torch.cat([torch.ones(half, dtype=torch.long), torch.zeros(half, dtype=torch.long)])

    real = train_once(real_x, real_y, val, test, 2, cfg.classifier, seed=r)
    both = train_once(torch.cat([real_x, syn_x]), torch.cat([real_y, syn_y]), val, test, 2, cfg.classifier, seed=r)
    result = {"replicate": r, "n_train": len(real_y), "n_val": len(val_idx), "n_synthetic": len(syn_y),
              "auc_real": real["test_auc"], "auc_real_synthetic": both["test_auc"],
              "gain": both["test_auc"] - real["test_auc"]}
    log(f"  {n} real, replicate {r}: real {result['auc_real']:.3f}, real + synthetic {result['auc_real_synthetic']:.3f}")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, json.dumps({"key": key, "result": result}, indent=2))
    return result


def _to_uint8(images: np.ndarray) -> torch.Tensor:
    """(N, H, W) in [0, 1] -> (N, 3, H, W) uint8, what the classifier reads from a PNG."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8)[:, None].repeat(1, 3, 1, 1)


def _labelled(positives: list[np.ndarray], negatives: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels (1: the finding, 0: none)."""
    x = _to_uint8(np.stack([*positives, *negatives]))
    return x, torch.tensor([1] * len(positives) + [0] * len(negatives))
