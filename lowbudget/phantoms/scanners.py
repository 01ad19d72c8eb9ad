"""How a site's scanner shows the same anatomy: exposure, contrast, noise, resolution.

Hospitals acquire differently, which is what makes their data non-identical and a federation
harder than pooling. A :class:`Scanner` is applied to a rendered phantom, after its labels
and masks are fixed: it changes how the image looks, never what it shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbudget.errors import LowbudgetError
from lowbudget.phantoms.texture import blur


@dataclass(frozen=True)
class Scanner:
    name: str = "reference"
    exposure: float = 1.0  # intensities are multiplied by this (then clipped to [0, 1])
    contrast: float = 1.0  # gamma: < 1 lifts the darks (flatter), > 1 deepens them
    noise: float = 0.0  # std of added Gaussian noise, in intensity units
    resolution: float = 1.0  # the detail kept: 0.5 blurs away what half the pixels could not hold

    def __post_init__(self) -> None:
        for name, low, high in (("exposure", 0.2, 5.0), ("contrast", 0.2, 5.0), ("noise", 0.0, 0.5),
                                ("resolution", 0.1, 1.0)):
            value = getattr(self, name)
            if not low <= value <= high:
                raise LowbudgetError(f"--scanner {name}={value!r} must be in [{low:g}, {high:g}]")

    def acquire(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``image`` (size, size) in [0, 1] as this scanner shows it."""
        out = blur(image, 0.5 / self.resolution - 0.5) if self.resolution < 1 else image
        out = np.clip(out, 0.0, 1.0) ** self.contrast * self.exposure
        if self.noise:
            out = out + rng.normal(0.0, self.noise, out.shape)
        return np.clip(out, 0.0, 1.0).astype(np.float32)


# The four sites of the benchmark's federation, and the reference the detectors are calibrated on.
SCANNERS = {
    "reference": Scanner(),
    "bright": Scanner("bright", exposure=1.2, contrast=0.75),
    "dim": Scanner("dim", exposure=0.8, contrast=1.3),
    "noisy": Scanner("noisy", noise=0.06),
    "soft": Scanner("soft", resolution=0.4),
}


def parse_scanner(text: str) -> Scanner:
    """A named scanner (``bright``) or settings (``exposure=1.2,noise=0.03``)."""
    if text in SCANNERS:
        return SCANNERS[text]
    values = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key.strip() not in ("exposure", "contrast", "noise", "resolution") or not value:
            raise LowbudgetError(f"--scanner {text!r}: expected one of {', '.join(SCANNERS)}, or settings such as "
                                 "exposure=1.2,contrast=0.8,noise=0.03,resolution=0.5")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            raise LowbudgetError(f"--scanner {text!r}: {key.strip()} must be a number, got {value!r}") from None
    return Scanner(text, **values)
