"""What every command group shares: option types, value parsers, a recipe with its overrides, messages,
library quieting."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from lowbudget.errors import LowbudgetError

if TYPE_CHECKING:
    from lowbudget.recipe import Recipe

Overwrite = Annotated[bool, typer.Option("--overwrite", help="Write even where the output holds files lowbudget did not write.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress display (errors and results are still printed).")]


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise LowbudgetError(f"--seeds {text!r} must be comma-separated integers, e.g. 0,1,2") from None


def parse_weights(text: str) -> list[float]:
    try:
        values = [float(s) for s in text.split(",")]
    except ValueError:
        raise LowbudgetError(f"--weights {text!r} must be comma-separated numbers, e.g. 0.6,0.4") from None
    if not all(math.isfinite(v) for v in values):
        raise LowbudgetError(f"--weights {text!r} must be finite numbers (no nan or inf)")
    return values


def recipe_from(path: str | Path, overrides: list[str], **named: object) -> Recipe:
    """The recipe at ``path`` with the ``--set`` overrides and the named options that were given
    (``{"model.base": base, ...}``; None: not given)."""
    from lowbudget.recipe import load_recipe, parse_override

    values = dict(parse_override(o) for o in overrides)
    values |= {key: value for key, value in named.items() if value is not None}
    return load_recipe(path, values)


def info(message: str) -> None:
    typer.echo(message, err=True)


def quiet_libraries() -> None:
    """diffusers/transformers log loader chatter that means nothing to our users."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
