"""Rank statistics and distances, in one place: averaged ranks, Spearman's rho, ROC AUC, total variation (numpy only)."""

from __future__ import annotations

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
