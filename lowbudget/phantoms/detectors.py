"""Analytic detectors: one score per finding, higher = more likely present.

They read the image the way a radiologist does, from where the anatomy sits (the phantom
template's canonical geometry, in image fractions so any resolution works):

  effusion      costophrenic opacity: lower lateral lung minus medial mid lung, worse side
  pneumothorax  lucency: lung median minus its darkest decile (a rim without markings), worse side
  cardiomegaly  cardiothoracic ratio: width of the bright heart shadow / thoracic width
  nodule        blob detection: strongest difference-of-Gaussians peak inside the lung fields
  lesion        darkest focus of the bright peripheral zone relative to its median

Thresholds are not constants: :func:`threshold` calibrates each one on the generator's own
images (the balanced-accuracy optimum), and :func:`detector_auc` measures how well it separates
them. Every fidelity figure in the benchmarks is a detector rate.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

from lowbudget.phantoms import chest, prostate
from lowbudget.phantoms.texture import blur, grid
from lowbudget.phantoms.world import MODALITIES, generate
from lowbudget.stats import auc

Detector = Callable[[np.ndarray], float]


def _lung_regions(size: int, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = grid(size)
    lung, lateral = chest._lung(x, y, side, 1.0)
    return lung, lateral, y


def effusion_sides(img: np.ndarray) -> dict[str, float]:
    out = {}
    for side in chest.SIDES:
        lung, lateral, y = _lung_regions(img.shape[0], side)
        base = chest.LUNG_BASE[side]
        angle = lung & (lateral > 0.6) & (y > base - 0.13) & (y < base - 0.04)  # lateral to an enlarged heart
        # reference: medial mid lung, where neither a pneumothorax rim nor an enlarged heart reaches
        mid = lung & (lateral > 0.15) & (lateral < 0.45) & (y > 0.28) & (y < 0.40)
        out[side] = float(img[angle].mean() - img[mid].mean())
    return out


def effusion(img: np.ndarray) -> float:
    return max(effusion_sides(img).values())


def pneumothorax_sides(img: np.ndarray) -> dict[str, float]:
    """Per side: lung median minus its darkest decile, in the upper lung above the heart.

    The lung pixels are found in the image (darker than the chest wall), not taken from the
    template, because a slim or broad patient moves the lateral lung edge by a pixel or two --
    as wide as the rim being looked for.
    """
    size = img.shape[0]
    x, y = grid(size)
    out = {}
    for side in chest.SIDES:
        near = np.abs(x - chest.LUNG_CX[side]) < 1.4 * chest.LUNG_HALF_WIDTH
        box = img[near & (y > 0.22) & (y < 0.38)]  # above the heart, even an enlarged one
        lung = box[box < (np.percentile(box, 20) + np.percentile(box, 90)) / 2]
        out[side] = float(np.median(lung) - np.percentile(lung, 10))
    return out


def pneumothorax(img: np.ndarray) -> float:
    return max(pneumothorax_sides(img).values())


def cardiothoracic_ratio(img: np.ndarray) -> float:
    """Heart shadow width over the canonical thoracic width.

    Measured in the heart's upper half (rows 0.06-0.10 above its centre), which an effusion's
    meniscus does not reach; the width there grows monotonically with the true ratio.
    """
    size = img.shape[0]
    x, y = grid(size)
    rows = (y[:, 0] > chest.HEART_CY - 0.10) & (y[:, 0] < chest.HEART_CY - 0.06)
    profile = blur(img, 0.6 * size / 64)[rows].mean(axis=0)  # (size,)
    lung_level = profile[np.abs(x[0] - chest.LUNG_CX["right"]) < 0.04].mean()
    start = int(0.56 * size)
    level = (lung_level + profile[start]) / 2
    left = start
    while left > 0 and profile[left - 1] > level:
        left -= 1
    right = start
    while right < size - 1 and profile[right + 1] > level:
        right += 1
    return (right - left + 1) / size / chest.THORAX_WIDTH


def nodule_sides(img: np.ndarray) -> dict[str, float]:
    """Per lung: the strongest difference-of-Gaussians peak inside it."""
    size = img.shape[0]
    scale = size / 64
    dog = blur(img, 1.3 * scale) - blur(img, 3.5 * scale)
    out = {}
    for side in chest.SIDES:
        lung, lateral, y = _lung_regions(size, side)
        region = lung & (lateral > 0.1) & (lateral < 0.9) & (y > 0.24) & (y < 0.6)
        out[side] = float(dog[region].max())
    return out


def nodule(img: np.ndarray) -> float:
    return max(nodule_sides(img).values())


def lesion_sides(img: np.ndarray) -> dict[str, float]:
    """Per side of the gland: the zone's median minus the darkest focus on that side.

    The median is the whole zone's, so a side with no focus scores what its own texture gives.
    """
    size = img.shape[0]
    x, y = grid(size)
    # The gland's size varies: take the scale whose peripheral zone is brightest.
    scales = np.linspace(0.85, 1.2, 8)
    zones = [prostate.pz_mask(x, y, g) for g in scales]
    pz = max(zones, key=lambda m: img[m].mean())
    core = pz & (blur(pz.astype(float), 1.0 * size / 64) > 0.8)  # away from the zone's edges
    smooth = blur(img, 0.8 * size / 64)
    median = np.median(smooth[core])
    patient_left = x > prostate.GLAND_CENTER[0]  # image right is the patient's left
    return {"right": float(median - smooth[core & ~patient_left].min()),
            "left": float(median - smooth[core & patient_left].min())}


def lesion(img: np.ndarray) -> float:
    return max(lesion_sides(img).values())


DETECTORS: dict[str, dict[str, Detector]] = {
    "chest": {"effusion": effusion, "pneumothorax": pneumothorax, "cardiomegaly": cardiothoracic_ratio, "nodule": nodule},
    "prostate": {"lesion": lesion},
}
# Findings drawn on one side: their detector's score per side ("right", "left"; the patient's).
SIDE_DETECTORS: dict[str, Callable[[np.ndarray], dict[str, float]]] = {
    "effusion": effusion_sides, "pneumothorax": pneumothorax_sides, "nodule": nodule_sides, "lesion": lesion_sides}


def score(modality: str, finding: str, images: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Detector scores of a batch of (H, W) images in [0, 1]."""
    detect = DETECTORS[modality][finding]
    return np.array([detect(np.asarray(im, np.float32)) for im in images])


def _calibration_sets(modality: str, finding: str, size: int, n: int, seed: int, prevalence: float):
    pos = generate(modality, finding, n=n, size=size, seed=seed, prevalence=prevalence)
    neg = [p for p in generate(modality, "none", n=n, size=size, seed=seed + 1, prevalence=prevalence)
           if not p.labels[finding]]
    return score(modality, finding, [p.image for p in pos]), score(modality, finding, [p.image for p in neg])


@lru_cache(maxsize=None)
def threshold(modality: str, finding: str, size: int = 64, n: int = 200, seed: int = 1000,
              prevalence: float = 0.1) -> float:
    """Score threshold with the best balanced accuracy on freshly generated phantoms (mid-range)."""
    return best_cut(*_calibration_sets(modality, finding, size, n, seed, prevalence))


def best_cut(pos: np.ndarray, neg: np.ndarray) -> float:
    """The score cut with the best balanced accuracy between ``pos`` and ``neg`` (mid-range)."""
    candidates = np.sort(np.concatenate([pos, neg]))
    cuts = (candidates[1:] + candidates[:-1]) / 2
    balanced = np.array([(pos > c).mean() + (neg <= c).mean() for c in cuts])
    best = np.flatnonzero(balanced == balanced.max())
    # The middle of the best range, not its edge: images drawn by a model (through its VAE)
    # shift scores a little, and a cut hugging either class would turn that into errors.
    return float((cuts[best[0]] + cuts[best[-1]]) / 2)


def detector_auc(modality: str, finding: str, size: int = 64, n: int = 200, seed: int = 2000,
                 prevalence: float = 0.1) -> float:
    """AUC of the detector on held-out phantoms: positives show the finding, negatives do not."""
    pos, neg = _calibration_sets(modality, finding, size, n, seed, prevalence)
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return auc(np.r_[pos, neg], labels)


def flagged(modality: str, finding: str, images: list[np.ndarray] | np.ndarray, size: int | None = None) -> np.ndarray:
    """Boolean per image: the detector's score is above its calibrated threshold."""
    images = list(images)
    cut = threshold(modality, finding, size or images[0].shape[0])
    return score(modality, finding, images) > cut


@lru_cache(maxsize=None)
def _templates(size: int) -> dict[str, np.ndarray]:
    return {m: np.mean([p.image for p in generate(m, n=32, size=size, seed=7, prevalence=0.1)], axis=0)
            for m in MODALITIES}


def recognise(img: np.ndarray, min_correlation: float = 0.6) -> str | None:
    """The modality whose mean phantom correlates best with ``img`` (Pearson r), if r is high enough."""
    img = np.asarray(img, np.float32)
    corr = {m: float(np.corrcoef(img.ravel(), t.ravel())[0, 1]) for m, t in _templates(img.shape[0]).items()}
    best = max(corr, key=corr.get)
    return best if corr[best] >= min_correlation else None
