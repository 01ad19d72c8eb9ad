"""Frontal chest radiograph phantoms with known findings.

Radiograph convention: air dark, soft tissue grey, bone and fluid bright. Image left is the
patient's right. Every phantom is drawn from its :class:`ChestLabels` plus a seed, so the
ground truth of each pixel is known, and the finding masks come back with the image.

Findings (each drawn independently at the prevalence the caller asks for):
  effusion      fluid filling one lung base up to a meniscus that climbs the lateral wall
  pneumothorax  a lateral rim of one lung with no lung markings, the collapsed lung denser
  cardiomegaly  cardiothoracic ratio 0.56-0.62 instead of 0.40-0.48
  nodule        a round soft-edged opacity inside a lung field
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbudget.phantoms.texture import blur, grid, smooth_noise

FINDINGS = ("effusion", "pneumothorax", "cardiomegaly", "nodule")
SIDES = ("right", "left")  # the patient's; right is drawn on the image's left

# Canonical geometry in image fractions, shared with the detectors (which know the
# template, as a radiologist knows where the costophrenic angles are).
LUNG_CX = {"right": 0.31, "left": 0.69}
LUNG_HALF_WIDTH = 0.145
LUNG_TOP = 0.17
LUNG_BASE = {"right": 0.74, "left": 0.77}  # the right hemidiaphragm sits higher
HEART_CY = 0.60
THORAX_WIDTH = 2 * (0.19 + LUNG_HALF_WIDTH)  # outer lung edge to outer lung edge


@dataclass
class ChestLabels:
    """What a chest phantom shows; also its caption attributes."""

    effusion: str | None = None  # side
    effusion_size: float = 0.0  # fraction of lung height
    pneumothorax: str | None = None
    pneumothorax_size: float = 0.0  # fraction of lung half-width
    ctr: float = 0.44  # cardiothoracic ratio
    nodule: tuple[float, float, float] | None = None  # x, y, radius in image fractions
    habitus: float = 1.0  # body width scale: < 0.97 slim, > 1.03 broad
    exposure: float = 1.0  # film darkness: < 0.95 dark, > 1.05 bright
    pacemaker: str | None = None  # side of a pacemaker box over the shoulder (named in captions)
    ecg: bool = False  # ECG electrodes on the shoulders and lower abdomen (named in captions)
    marker: str | None = None  # image corner of the side marker, "left" | "right" (named in captions)

    def findings(self) -> dict[str, int]:
        return {
            "effusion": int(self.effusion is not None),
            "pneumothorax": int(self.pneumothorax is not None),
            "cardiomegaly": int(self.ctr >= 0.55),
            "nodule": int(self.nodule is not None),
        }


def sample_chest_labels(rng: np.random.Generator, present: set[str], prevalence: float = 0.0) -> ChestLabels:
    """Labels with the findings in ``present`` and each other finding at ``prevalence``."""
    has = {f: f in present or rng.random() < prevalence for f in FINDINGS}
    labels = ChestLabels(habitus=rng.uniform(0.93, 1.07), exposure=rng.uniform(0.88, 1.12))
    # Devices and markers: visual variation the captions *do* name, so that the base learns to
    # let words place things in the image -- as Stable Diffusion has learnt for everyday words.
    labels.pacemaker = SIDES[rng.integers(2)] if rng.random() < 0.2 else None
    labels.ecg = bool(rng.random() < 0.25)
    labels.marker = ("left", "right")[rng.integers(2)] if rng.random() < 0.5 else None
    labels.ctr = rng.uniform(0.56, 0.62) if has["cardiomegaly"] else rng.uniform(0.40, 0.48)
    if has["effusion"]:
        labels.effusion, labels.effusion_size = SIDES[rng.integers(2)], rng.uniform(0.27, 0.35)
    if has["pneumothorax"]:
        labels.pneumothorax, labels.pneumothorax_size = SIDES[rng.integers(2)], rng.uniform(0.30, 0.45)
    if has["nodule"]:
        side = SIDES[rng.integers(2)]
        nx = LUNG_CX[side] + rng.uniform(-0.5, 0.5) * LUNG_HALF_WIDTH
        labels.nodule = (nx, rng.uniform(0.28, 0.52), rng.uniform(0.05, 0.07))
    return labels


def render_chest(labels: ChestLabels, size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw ``labels``; returns the image and a boolean mask per finding present."""
    x, y = grid(size)
    s = labels.habitus
    img = np.full((size, size), 0.03)
    body = ((x - 0.5) / (0.47 * s)) ** 2 + ((y - 0.66) / 0.62) ** 2 < 1
    img[body] = 0.40 + 0.12 * np.clip(1 - ((x[body] - 0.5) / (0.47 * s)) ** 2, 0, 1)  # thicker centrally
    shoulders = (((x - 0.5) / (0.49 * s)) ** 2 + ((y - 0.32) / 0.2) ** 4 < 1) & ~body
    img[shoulders] = 0.34 + 0.08 * np.clip(0.32 - y[shoulders], 0, 1)
    masks: dict[str, np.ndarray] = {}
    lungs = np.zeros((size, size), bool)
    markings = smooth_noise(rng, size, 0.8)
    for side in SIDES:
        lung, lateral = _lung(x, y, side, s)
        lungs |= lung
        hilum = np.clip(1 - lateral, 0, 1)  # markings fade towards the periphery
        img[lung] = 0.15 + 0.07 * hilum[lung] * np.clip(markings[lung] + 0.3, 0, 1.2)
        if labels.pneumothorax == side:
            rim = lung & (lateral > 1 - labels.pneumothorax_size) & (y < LUNG_BASE[side] - 0.08)
            img[rim] = 0.05
            img[lung & ~rim] += 0.05  # the collapsed lung is denser
            edge = lung & ~rim & (lateral > 1 - labels.pneumothorax_size - 0.06) & (y < LUNG_BASE[side] - 0.08)
            img[edge] += 0.08  # the visceral pleural line
            masks["pneumothorax"] = rim
        if labels.effusion == side:
            height = LUNG_BASE[side] - LUNG_TOP
            level = LUNG_BASE[side] - labels.effusion_size * height
            fluid = lung & (y > level - 0.07 * lateral)  # meniscus climbs the lateral wall
            img[fluid] = 0.50 + 0.08 * np.clip((y[fluid] - level) / 0.1, 0, 1)
            masks["effusion"] = fluid
    img += _ribs(x, y) * lungs
    img += 0.12 * _clavicles(x, y, s)
    heart = _heart(x, y, labels.ctr * THORAX_WIDTH * s)
    img[heart] = 0.58 + 0.04 * rng.random()
    if labels.findings()["cardiomegaly"]:
        masks["cardiomegaly"] = heart
    img[(np.abs(x - 0.5) < 0.05) & (y > 0.05) & body | (np.abs(x - 0.5) < 0.05) & (y < 0.2)] = 0.66  # spine, mediastinum
    img[(np.abs(x - 0.5) < 0.012) & (y > 0.04) & (y < 0.34)] = 0.22  # trachea
    if labels.nodule is not None:
        nx, ny, r = labels.nodule
        d2 = ((x - nx) ** 2 + (y - ny) ** 2) / r**2
        img += 0.42 * np.exp(-1.5 * d2**2)  # round with soft edges
        masks["nodule"] = d2 < 1
    img = _devices(img, x, y, labels)
    bias = 1 + 0.06 * smooth_noise(rng, size, 12)  # uneven exposure across the film
    img = (img * bias) ** (1 / labels.exposure)
    img = blur(img, 0.7 * size / 64) + rng.normal(0, 0.015, img.shape)
    return np.clip(img, 0, 1).astype(np.float32), masks


def _lung(x: np.ndarray, y: np.ndarray, side: str, s: float) -> tuple[np.ndarray, np.ndarray]:
    """A lung field mask and each pixel's lateral position (0 medial edge, 1 lateral edge)."""
    cx = 0.5 + (LUNG_CX[side] - 0.5) * s
    w = LUNG_HALF_WIDTH * s
    base, top = LUNG_BASE[side], LUNG_TOP
    cy, h = (base + top) / 2, (base - top) / 2
    lung = np.abs((x - cx) / w) ** 2.5 + np.abs((y - cy) / h) ** 2.5 < 1
    lung &= y < base - 0.07 * np.clip(1 - ((x - cx) / w) ** 2, 0, 1)  # domed diaphragm, sharp lateral angle
    out = 1 if side == "left" else -1
    lateral = np.clip(((x - cx) * out / w + 1) / 2, 0, 1)
    return lung, lateral


def _devices(img: np.ndarray, x: np.ndarray, y: np.ndarray, labels: ChestLabels) -> np.ndarray:
    """Pacemaker, ECG electrodes and side marker, all outside the lung fields."""
    if labels.pacemaker is not None:
        cx = 0.5 + (0.37 if labels.pacemaker == "left" else -0.37)
        img = np.where((np.abs(x - cx) < 0.035) & (np.abs(y - 0.2) < 0.022), 0.95, img)
    if labels.ecg:
        for ex, ey in ((0.08, 0.16), (0.92, 0.16), (0.22, 0.92), (0.78, 0.92)):
            img = np.where((x - ex) ** 2 + (y - ey) ** 2 < 0.018**2, 0.9, img)
    if labels.marker is not None:
        mx = 0.07 if labels.marker == "left" else 0.93
        img = np.where((np.abs(x - mx) < 0.03) & (np.abs(y - 0.06) < 0.03), 0.85, img)
    return img


def _ribs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    curve = 0.35 * (x - 0.5) ** 2
    phase = (y - 0.18 - curve) / 0.075
    return 0.06 * np.exp(-(((phase - np.round(phase)) / 0.18) ** 2))


def _clavicles(x: np.ndarray, y: np.ndarray, s: float) -> np.ndarray:
    line = 0.17 - 0.08 * np.abs(x - 0.5)
    return np.exp(-(((y - line) / 0.015) ** 2)) * (np.abs(x - 0.5) > 0.04) * (np.abs(x - 0.5) < 0.36 * s)


def _heart(x: np.ndarray, y: np.ndarray, width: float) -> np.ndarray:
    """Heart shadow: a third of its width right of the midline (patient's), two thirds left."""
    cx = 0.5 + width * (2 / 3 - 1 / 2)
    hh = 0.08 + 0.2 * width
    return ((x - cx) / (width / 2)) ** 2 + ((y - HEART_CY) / hh) ** 2 < 1
