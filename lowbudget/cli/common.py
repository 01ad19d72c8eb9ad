"""What every command group shares: option types, value parsers, messages, library quieting."""

from __future__ import annotations

import math
import os
from typing import Annotated

import typer

from lowbudget.errors import LowbudgetError

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
