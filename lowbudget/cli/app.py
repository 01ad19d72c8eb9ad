"""The Typer application, its error boundary, and the helpers every command group shares."""

from __future__ import annotations

import math
import os
import signal
import sys

import typer

from lowbudget.errors import LowbudgetError, one_line, os_error

# transformers logs at import time (image processors without torchvision) and every command
# imports it: its warnings mean nothing to our users. TRANSFORMERS_VERBOSITY=info shows them.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

app = typer.Typer(
    name="lowbudget",
    help="Adapt Stable Diffusion to medical imaging on a budget: train, share and use small adapters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

library_app = typer.Typer(help="The shared adapter library (embeddings/ and its index.json).", no_args_is_help=True)
app.add_typer(library_app, name="library")

keys_app = typer.Typer(help="Your site's signing keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

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


def parse_weights(text: str) -> list[float]:
    try:
        values = [float(s) for s in text.split(",")]
    except ValueError:
        raise LowbudgetError(f"--weights {text!r} must be comma-separated numbers, e.g. 0.6,0.4") from None
    if not all(math.isfinite(v) for v in values):
        raise LowbudgetError(f"--weights {text!r} must be finite numbers (no nan or inf)")
    return values


OVERWRITE = typer.Option(False, "--overwrite", help="Write even where the output holds files lowbudget did not write.")


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


class Stopped(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM, turned into an exception so that ``finally`` blocks (temporary
    files) still run. A BaseException, so that no ``except Exception`` swallows it, and not a
    KeyboardInterrupt, which Typer would turn into a silent exit."""


def _stop(signum: int, _frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def main() -> None:
    """Entry point: the one error boundary of the CLI.

    Click handles its own usage errors (exit code 2); the project's errors and the operating
    system's (a missing path, no permission, no space) become one line on stderr and exit
    code 1; Ctrl-C and SIGTERM one line and 128 + the signal's number. Anything else is a bug
    and keeps its traceback.
    """
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        app()
    except Stopped as exc:
        if _state["debug"]:
            raise
        name = str(exc)
        typer.echo(f"error: stopped by {name}; no file was left half-written (a training run continues from its "
                   "last checkpoint with --resume)", err=True)
        sys.exit(128 + getattr(signal, name))
    except (LowbudgetError, OSError) as exc:  # OSError: the file system said no (a path, permissions, space)
        if _state["debug"]:
            raise
        message = os_error(exc) if isinstance(exc, OSError) else str(exc)
        typer.echo(f"error: {one_line(message)}", err=True)  # one line, whatever a message quoted
        sys.exit(1)
    finally:
        for sig, handler in previous.items():  # main() may run inside another program (the tests)
            signal.signal(sig, handler)
