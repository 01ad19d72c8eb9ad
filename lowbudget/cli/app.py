"""The Typer application: its command groups, registered here in the order ``--help`` shows
them, and its one error boundary (:func:`main`)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Annotated

import typer

from lowbudget.cli import environment, evaluation, federation, phantom_world, sampling, sharing, training
from lowbudget.errors import LowbudgetError, one_line, os_error

# transformers logs at import time (image processors without torchvision) and every command
# imports it: its warnings mean nothing to our users. TRANSFORMERS_VERBOSITY=info shows them.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Click's plain help layout on every typer release: typer < 0.21 (what Flower, the `federate`
# extra, allows) prints '[default: 0]' as '\\[default: 0]' in plain help whenever rich is
# installed (typer issue #1058), and rich comes with Flower. Typer reads this flag where it
# formats help and errors.
typer.core.HAS_RICH = False

app = typer.Typer(
    name="lowbudget",
    help="Adapt Stable Diffusion to medical imaging on a budget: train, share and use small adapters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's own help layout: with rich, typer 0.29 and click 8.5 show every flag as '--debug <bool>',
    # as if it took a value; plain text also reads better in a log.
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},  # whole command summaries where the terminal is wide enough
)
app.add_typer(training.commands)        # train, check-recipe, make-base, inspect, convert
app.add_typer(sampling.commands)        # generate, compose, inpaint
app.add_typer(sharing.commands)         # sign, verify, share
app.add_typer(sharing.library_app, name="library")
app.add_typer(sharing.keys_app, name="keys")
app.add_typer(federation.federate_app, name="federate")
app.add_typer(evaluation.evaluate_app, name="evaluate")
app.add_typer(phantom_world.phantom_app, name="phantom")
app.add_typer(phantom_world.aliases)    # the phantom commands' old top-level names, hidden
app.add_typer(environment.commands)     # doctor

_state = {"debug": False}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks for errors.")] = False) -> None:
    _state["debug"] = debug


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
