"""Axial T2-weighted prostate MRI phantoms with a known lesion.

T2 convention: fat and fluid bright, muscle and fibrous tissue dark. The gland sits between
the pubic bones and the rectum; its peripheral zone (posterior crescent) is bright, the
transition zone around the urethra is darker and nodular. A clinically significant lesion is
a dark, soft-edged focus in the peripheral zone on the patient's left or right (image right
is the patient's left, as in radiology viewers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbudget.phantoms.texture import blur, grid, smooth_noise

FINDINGS = ("lesion",)
GLAND_CENTER = (0.5, 0.53)
GLAND_RADII = (0.16, 0.115)  # x, y at gland scale 1
TZ_CENTER = (0.5, 0.50)
TZ_RADII = (0.10, 0.065)


@dataclass
class ProstateLabels:
    lesion: str | None = None  # side: "right" | "left"
    lesion_angle: float = 0.0  # position along the peripheral zone, radians from posterior
    lesion_radius: float = 0.0
    gland: float = 1.0  # gland scale: < 0.95 small, > 1.1 enlarged
    bladder: bool = False  # the slice catches the bladder base anteriorly
    rectal_fluid: bool = False  # fluid instead of air in the rectum (named in captions)
    prosthesis: str | None = None  # side of a hip prosthesis: a signal void (named in captions)

    def findings(self) -> dict[str, int]:
        return {"lesion": int(self.lesion is not None)}


def sample_prostate_labels(rng: np.random.Generator, present: set[str], prevalence: float = 0.0) -> ProstateLabels:
    labels = ProstateLabels(gland=rng.uniform(0.85, 1.2), bladder=bool(rng.random() < 0.5),
                            rectal_fluid=bool(rng.random() < 0.3))
    labels.prosthesis = ("right", "left")[rng.integers(2)] if rng.random() < 0.15 else None
    if "lesion" in present or rng.random() < prevalence:
        labels.lesion = ("right", "left")[rng.integers(2)]
        labels.lesion_angle = rng.uniform(0.35, 1.1)
        labels.lesion_radius = rng.uniform(0.045, 0.06)
    return labels


def pz_mask(x: np.ndarray, y: np.ndarray, gland: float = 1.0) -> np.ndarray:
    """Peripheral zone: inside the gland, outside the transition zone, posterior half."""
    inside = _ellipse(x, y, GLAND_CENTER, (GLAND_RADII[0] * gland, GLAND_RADII[1] * gland)) < 1
    tz = _ellipse(x, y, TZ_CENTER, (TZ_RADII[0] * gland, TZ_RADII[1] * gland)) < 1
    return inside & ~tz & (y > TZ_CENTER[1] - 0.02)


def lesion_center(labels: ProstateLabels) -> tuple[float, float]:
    """Middle of the peripheral zone at the lesion's angle (0 = straight posterior)."""
    rx = (GLAND_RADII[0] + TZ_RADII[0]) / 2 * labels.gland
    ry = (GLAND_RADII[1] + TZ_RADII[1]) / 2 * labels.gland
    out = 1 if labels.lesion == "left" else -1
    return GLAND_CENTER[0] + out * rx * np.sin(labels.lesion_angle), GLAND_CENTER[1] + ry * np.cos(labels.lesion_angle)


def render_prostate(labels: ProstateLabels, size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw ``labels``; returns the image in [0, 1] and the lesion mask when present."""
    x, y = grid(size)
    g = labels.gland
    img = np.full((size, size), 0.02)
    body = _ellipse(x, y, (0.5, 0.52), (0.47, 0.37))
    img[body < 1] = 0.68  # subcutaneous fat
    img[body < 0.72] = 0.30  # gluteal and pelvic floor muscle
    for side, sx in (("right", 0.26), ("left", 0.74)):  # femoral heads: dark cortex, intermediate marrow
        bone = _ellipse(x, y, (sx, 0.50), (0.085, 0.10))
        img[bone < 1] = 0.08
        img[bone < 0.7] = 0.02 if labels.prosthesis == side else 0.45  # metal: a signal void
    img[_ellipse(x, y, (0.5, 0.35), (0.15, 0.05)) < 1] = 0.12  # pubic symphysis region
    if labels.bladder:
        img[_ellipse(x, y, (0.5, 0.30), (0.13, 0.07)) < 1] = 0.92
    img[_ellipse(x, y, (0.5, 0.53), (0.23 * g, 0.17 * g)) < 1] = 0.55  # periprostatic fat
    rectum = _ellipse(x, y, (0.5, 0.70 + 0.06 * (g - 1)), (0.085, 0.06))
    img[rectum < 1] = 0.22
    img[rectum < 0.4] = 0.85 if labels.rectal_fluid else 0.05  # fluid or air in the lumen
    gland = _ellipse(x, y, GLAND_CENTER, (GLAND_RADII[0] * g, GLAND_RADII[1] * g))
    img[gland < 1.12] = 0.18  # capsule
    pz = pz_mask(x, y, g)
    texture = smooth_noise(rng, size, 0.7)
    img[gland < 1] = 0.70 + 0.05 * texture[gland < 1]
    tz = _ellipse(x, y, TZ_CENTER, (TZ_RADII[0] * g, TZ_RADII[1] * g)) < 1
    img[tz] = 0.38 + 0.08 * smooth_noise(rng, size, 1.2)[tz]  # nodular hyperplasia
    img[(gland < 1) & (y < TZ_CENTER[1] - 0.05 * g)] = 0.25  # anterior fibromuscular stroma
    img[_ellipse(x, y, TZ_CENTER, (0.012, 0.012)) < 1] = 0.6  # urethra
    masks: dict[str, np.ndarray] = {}
    if labels.lesion is not None:
        cx, cy = lesion_center(labels)
        d2 = _ellipse(x, y, (cx, cy), (labels.lesion_radius, labels.lesion_radius * 0.8))
        img -= 0.5 * np.exp(-1.5 * d2**2) * (gland < 1.05)
        masks["lesion"] = (d2 < 1) & pz
    img *= 1 + 0.08 * smooth_noise(rng, size, 14)  # coil sensitivity
    img = blur(img, 0.5 * size / 64)
    noise = rng.normal(0, 0.025, (2, size, size))
    img = np.sqrt((img + noise[0]) ** 2 + noise[1] ** 2)  # Rician magnitude noise
    return np.clip(img, 0, 1).astype(np.float32), masks


def _ellipse(x: np.ndarray, y: np.ndarray, center: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    """Squared normalised distance: < 1 inside the ellipse."""
    return ((x - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2
