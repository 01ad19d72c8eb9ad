"""The Typer application, its error boundary, and the helpers every command group shares."""

from __future__ import annotations

import os
import sys

import typer

from lowbudget.errors import LowbudgetError, one_line

app = typer.Typer(
    name="lowbudget",
    help="Adapt Stable Diffusion to medical imaging on a budget: train, share and use small adapters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

library_app = typer.Typer(help="The shared adapter library (embeddings/ and its index.json).", no_args_is_help=True)
app.add_typer(library_app, name="library")

evaluate_app = typer.Typer(help="Evaluate synthetic images: diversity, realism, classifier, memorisation.",
                           no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")

_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks for errors.")) -> None:
    _state["debug"] = debug


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise LowbudgetError(f"--seeds {text!r} must be comma-separated integers, e.g. 0,1,2") from None


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


def main() -> None:
    """Entry point: the one error boundary of the CLI.

    Click handles its own usage errors (exit code 2); the project's errors become one line
    on stderr and exit code 1. Anything else is a bug and keeps its traceback.
    """
    try:
        app()
    except LowbudgetError as exc:
        if _state["debug"]:
            raise
        typer.echo(f"error: {one_line(str(exc))}", err=True)  # one line, whatever a message quoted
        sys.exit(1)
