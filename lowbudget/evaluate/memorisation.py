"""Memorisation audit: does the generator hand back its training images?

For each generated image, its nearest training image in pixel space (grayscale, downsampled,
RMS difference) and, with a feature extractor, in feature space (cosine distance). The
reference is how close distinct real images come to each other: each training image's
nearest *other* training image. A generated image closer to a training image than all but
``percentile`` % of real images come to theirs is flagged as a near-copy. The flagged
fraction, the two distance distributions and the flagged pairs (side by side) are the
evidence to attach when an adapter is shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lowbudget import checks
from lowbudget.errors import DataError
from lowbudget.evaluate.images import iter_batches, list_images


def _pixel_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # RMS difference, (A, B)
    return torch.cdist(a, b) / a.shape[1] ** 0.5


def _cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 1 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def _embed(paths: list[Path], size: int, extractor, batch_size: int, progress: str | None) -> dict[str, torch.Tensor]:
    pixels, features = [], []
    for batch, _ in iter_batches(paths, size, batch_size, progress=progress):
        gray = batch.mean(dim=1, keepdim=True)  # (B, 1, s, s)
        pixels.append(gray.flatten(1))  # (B, s*s)
        if extractor is not None:
            features.append(extractor(batch).float())
    out = {"pixel": torch.cat(pixels)}
    if extractor is not None:
        out["feature"] = torch.cat(features)
    return out


_DISTANCES = {"pixel": _pixel_distance, "feature": _cosine_distance}


def _nearest(queries: torch.Tensor, keys: torch.Tensor, space: str, *, skip_self: bool = False,
             chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance to and index of each query's nearest key, in row chunks (memory stays O(chunk * N))."""
    dists, idxs = [], []
    for start in range(0, len(queries), chunk):
        d = _DISTANCES[space](queries[start : start + chunk], keys)  # (c, N)
        if skip_self:  # query i is key i: look for the nearest *other* image
            rows = torch.arange(d.shape[0])
            d[rows, rows + start] = float("inf")
        dist, idx = d.min(dim=1)
        dists.append(dist)
        idxs.append(idx)
    return torch.cat(dists), torch.cat(idxs)


def memorisation(generated: str | Path, training: str | Path, *, extractor=None, size: int = 64,
                 percentile: float = 1.0, batch_size: int = 64, progress: bool = False) -> dict[str, Any]:
    """Nearest-neighbour distances generated->training vs real->real, and the flagged near-copies."""
    checks.within("--percentile", percentile, 0.0, 100.0)
    checks.within("size", size, 8, checks.MAX_IMAGE_SIZE)
    train_paths, gen_paths = list_images(training), list_images(generated)
    if len(train_paths) < 2:
        raise DataError(f"'{training}' needs at least 2 training images for the real-vs-real reference")
    # Only the training set's vectors are kept; generated images stream through in batches.
    train = _embed(train_paths, size, extractor, batch_size, "training" if progress else None)
    result: dict[str, Any] = {"n_generated": len(gen_paths), "n_training": len(train_paths), "percentile": percentile,
                              "spaces": {}}
    nearest: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {space: [] for space in train}
    for start in range(0, len(gen_paths), batch_size):
        gen = _embed(gen_paths[start : start + batch_size], size, extractor, batch_size, None)
        for space, vectors in gen.items():
            nearest[space].append(_nearest(vectors, train[space], space))
    flagged = torch.zeros(len(gen_paths), dtype=torch.bool)
    result["_distributions"] = {}
    for space, vectors in train.items():
        reference, _ = _nearest(vectors, vectors, space, skip_self=True)
        threshold = float(torch.quantile(reference, percentile / 100))
        dist, idx = (torch.cat(parts) for parts in zip(*nearest[space]))
        space_flags = dist < threshold
        flagged |= space_flags
        result["spaces"][space] = {
            "threshold": threshold,
            "flagged_fraction": float(space_flags.float().mean()),
            "generated_to_training": _quantiles(dist),
            "real_to_real": _quantiles(reference),
            "nearest": [{"generated": str(gen_paths[i]), "training": str(train_paths[int(idx[i])]),
                         "distance": float(dist[i]), "flagged": bool(space_flags[i])} for i in range(len(gen_paths))],
        }
        result["_distributions"][space] = (dist, reference)
    result["flagged_fraction"] = float(flagged.float().mean())
    result["flagged"] = [str(gen_paths[i]) for i in torch.nonzero(flagged).flatten().tolist()]
    return result


def _quantiles(values: torch.Tensor) -> dict[str, float]:
    qs = torch.quantile(values.double(), torch.tensor([0.0, 0.01, 0.05, 0.5, 0.95, 1.0], dtype=torch.double))
    return dict(zip(("min", "p1", "p5", "median", "p95", "max"), map(float, qs)))
