"""Rank statistics, distances and intervals, in one place: averaged ranks, Spearman's rho, ROC AUC,
total variation, Student's t interval of a mean (numpy and math only)."""

from __future__ import annotations

import math

import numpy as np

from lowbudget.errors import DataError


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..N of ``x``; tied values share the mean of their ranks."""
    x = np.asarray(x, dtype=float)
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1, dtype=float)
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    if (counts > 1).any():  # ties: every member of a group gets the group's mean rank
        ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties (0 when one side is constant)."""
    rx, ry = average_ranks(x), average_ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC; for several classes the macro average of one-vs-rest AUCs.

    Binary AUC is the Mann-Whitney statistic: the chance that a random positive scores above a
    random negative, ties counting half. ``scores`` is (N,) or (N, K) class probabilities.
    """
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    if scores.ndim == 2:
        if scores.shape[1] == 2:
            return auc(scores[:, 1], labels)
        return sum(auc(scores[:, k], (labels == k).astype(int)) for k in range(scores.shape[1])) / scores.shape[1]
    ranks = average_ranks(scores)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        raise DataError("AUC needs both classes in the evaluation set")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """Total variation distance between two distributions over named outcomes: half the summed
    absolute differences (0 identical, 1 disjoint). An outcome missing from one has probability 0."""
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` degrees of freedom.

    The density integrated by Simpson's rule and the bound found by bisection: scipy is not a
    dependency, and 1e-6 is ample for an interval quoted to three decimals.
    """
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"t_quantile: expected 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def upper_half(t: float, parts: int = 2000) -> float:  # P(0 < T < t)
        x = np.linspace(0.0, t, parts + 1)
        f = np.exp(log_c - (df + 1) / 2 * np.log1p(x * x / df))
        return float((f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()) * t / (3 * parts))

    low, high = 0.0, 1.0
    while upper_half(high) < p - 0.5:
        low, high = high, 2 * high
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if upper_half(mid) < p - 0.5 else (low, mid)
    return (low + high) / 2


def mean_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the two-sided Student's t confidence interval of the mean of ``values``
    (independent replicates; for paired differences pass the differences)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        raise ValueError(f"an interval needs at least 2 values, got {len(x)}")
    mean = float(x.mean())
    half = t_quantile(0.5 + level / 2, len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half
