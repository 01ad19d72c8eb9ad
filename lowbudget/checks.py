"""Checks of single values, shared by every boundary that takes numbers from a user.

Recipes (``RecipeError``), command-line options and library requests (``LowbudgetError``) use
the same checks, so that ``--guidance nan`` and ``output.validation_guidance = nan`` are refused
in the same words. Each check names the value and what was expected.
"""

from __future__ import annotations

import math
from typing import Sequence

from lowbudget.errors import LowbudgetError

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes at most 64 bits; 63 keeps every derived seed positive
MAX_IMAGE_SIZE = 4096  # pixels per side; one 4096 px image's U-Net activations already fill a large GPU


def finite(where: str, value: float, error: type[LowbudgetError] = LowbudgetError) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise error(f"{where} = {value!r} must be a finite number")
    return value


def at_least(where: str, value: float, low: float, error: type[LowbudgetError] = LowbudgetError) -> float:
    finite(where, value, error)
    if value < low:
        raise error(f"{where} = {value!r} must be >= {low:g}")
    return value


def within(where: str, value: float, low: float, high: float, error: type[LowbudgetError] = LowbudgetError) -> float:
    finite(where, value, error)
    if not low <= value <= high:
        raise error(f"{where} = {value!r} must be in [{low:g}, {high:g}]")
    return value


def seed(where: str, value: int, error: type[LowbudgetError] = LowbudgetError) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise error(f"{where} = {value!r} must be an integer in [0, 2**63 - 1]")
    return value


def seeds(where: str, values: Sequence[int], error: type[LowbudgetError] = LowbudgetError) -> list[int]:
    if not values:
        raise error(f"{where} is empty; give at least one seed")
    return [seed(where, v, error) for v in values]


def image_size(where: str, value: int, error: type[LowbudgetError] = LowbudgetError, *, multiple: int = 8) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not multiple <= value <= MAX_IMAGE_SIZE or value % multiple:
        raise error(f"{where} = {value!r} must be a multiple of {multiple} in [{multiple}, {MAX_IMAGE_SIZE}] pixels")
    return value
