"""How a finding appears, not only whether: its side, and the other findings that come with it.

A token can draw its finding in every image and still not draw the training set: effusions on
both sides where every training image has one, an enlarged heart the training set never shows.
These readers measure that with the same calibrated detectors as the fidelity rate:

  sides    per image, the sides ("right", "left", the patient's) whose per-side detector score
           passes a per-side threshold: "right", "left", "both", or None (neither)
  others   per image, the modality's other findings the detectors flag ("leakage" when the
           training set does not have them)

:func:`compare` sets generated images against the training set, and gives the *floor*: what a
second set of real phantoms of the same size scores against the same training set, drawn many
times. A generated set is faithful when its distance is within that floor.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from lowbudget.phantoms import chest, detectors
from lowbudget.phantoms.world import MODALITIES, Phantom, generate
from lowbudget.stats import total_variation

SIDE_VALUES = ("right", "left", "both")


def true_side(finding: str, phantom: Phantom) -> str | None:
    """The side the generator drew ``finding`` on (None: not drawn)."""
    value = phantom.labels.get(f"{finding}_attr", "")
    if not phantom.labels.get(finding) or value == "":
        return None
    if finding == "nodule":  # its attribute is "x;y;radius" in image fractions; image left = patient right
        return "right" if float(str(value).split(";")[0]) < 0.5 else "left"
    return str(value)


@lru_cache(maxsize=None)
def side_thresholds(modality: str, finding: str, size: int = 64, n: int = 200, seed: int = 3000) -> dict[str, float]:
    """Per side, the cut on that side's score separating phantoms with the finding on that side
    from those with it on the other side or not at all (best balanced accuracy)."""
    read = detectors.SIDE_DETECTORS[finding]
    phantoms = generate(modality, finding, n=n, size=size, seed=seed) + generate(modality, "none", n=n // 2,
                                                                                size=size, seed=seed + 1)
    scores = [read(p.image) for p in phantoms]
    cuts = {}
    for side in chest.SIDES:
        on = np.array([true_side(finding, p) == side for p in phantoms])
        values = np.array([s[side] for s in scores])
        cuts[side] = detectors.best_cut(values[on], values[~on])
    return cuts


def sides(modality: str, finding: str, images: list[np.ndarray] | np.ndarray) -> list[str | None]:
    """Per image: "right", "left", "both" or None, by the per-side detectors."""
    images = list(images)
    if finding not in detectors.SIDE_DETECTORS:
        return [None] * len(images)
    cuts = side_thresholds(modality, finding, images[0].shape[0])
    out = []
    for img in images:
        score = detectors.SIDE_DETECTORS[finding](np.asarray(img, np.float32))
        flagged = [side for side in chest.SIDES if score[side] > cuts[side]]
        out.append("both" if len(flagged) == 2 else (flagged[0] if flagged else None))
    return out


def side_distribution(values: list[str | None]) -> dict[str, float]:
    """Share of "right" / "left" / "both" among the images where a side was read (all 0 if none)."""
    read = [v for v in values if v is not None]
    return {k: (read.count(k) / len(read) if read else 0.0) for k in SIDE_VALUES}


def others(modality: str, finding: str, images: list[np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
    """Per other finding of the modality, a boolean per image: the detector flags it."""
    images = list(images)
    return {f: detectors.flagged(modality, f, images) for f in MODALITIES[modality].findings if f != finding}


def other_rate(flags: dict[str, np.ndarray], exclude: tuple[str, ...] = ()) -> float:
    """Share of images flagged with at least one finding of ``flags`` not in ``exclude``."""
    kept = [v for f, v in flags.items() if f not in exclude]
    return float(np.any(kept, axis=0).mean()) if kept else 0.0


def compare(modality: str, finding: str, generated: np.ndarray, training: list[np.ndarray], *,
            floor_sets: int = 20, floor_seed: int = 60_000) -> dict:
    """Side distance and leakage of ``generated`` against ``training``, with their floors.

    Leakage counts the images flagged with another finding the training set does not have (its
    detector rate there is at most 5%). The floor draws ``floor_sets`` second real sets of
    len(generated) phantoms of the same finding (the training set's generator, other seeds) and
    reports the mean and 95th percentile of the same two figures.
    """
    train_flags = others(modality, finding, training)
    present = tuple(f for f, v in train_flags.items() if v.mean() > 0.05)  # the training set has these
    train_sides = side_distribution(sides(modality, finding, training))
    gen_read, gen_flags = sides(modality, finding, generated), others(modality, finding, generated)
    gen_sides = side_distribution(gen_read)
    tv, leak = [], []
    for k in range(floor_sets):
        real = [p.image for p in generate(modality, finding, n=len(generated), size=generated[0].shape[0],
                                           seed=floor_seed + k)]
        tv.append(total_variation(side_distribution(sides(modality, finding, real)), train_sides))
        leak.append(other_rate(others(modality, finding, real), present))
    sided = finding in detectors.SIDE_DETECTORS
    return {
        "sides_generated": gen_sides, "sides_training": train_sides, "n_sided": sum(v is not None for v in gen_read),
        "side_tv": total_variation(gen_sides, train_sides) if sided else None,
        "side_tv_floor": _floor(tv) if sided else None,
        "others_generated": {f: float(v.mean()) for f, v in gen_flags.items()},
        "others_training": {f: float(v.mean()) for f, v in train_flags.items()},
        "leakage": other_rate(gen_flags, present), "leakage_training": other_rate(train_flags, present),
        "leakage_floor": _floor(leak), "excluded": list(present), "findings": list(MODALITIES[modality].findings),
    }


def _floor(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "p95": float(np.percentile(values, 95))}
