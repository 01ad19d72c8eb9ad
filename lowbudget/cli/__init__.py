"""The ``lowbudget`` command line: the only package that imports Typer.

Each command parses its options, calls one library function, and prints a short summary.
One error boundary (:func:`main`) turns :class:`~lowbudget.errors.LowbudgetError` into a
one-line message on stderr and exit code 1; ``--debug`` shows the traceback instead.

  app.py           the application, the error boundary, shared helpers
  training.py      train, check-recipe, make-base, inspect, convert
  sharing.py       keys new, sign, verify, share, library add / verify / publish / pull
  sampling.py      generate, compose, inpaint
  phantom_world.py phantoms, report, pretrain-base, benchmark
  evaluation.py    evaluate diversity / realism / classifier / memorisation / all
  environment.py   doctor
"""

from importlib import import_module

from lowbudget.cli.app import app, main

for _group in ("training", "sharing", "sampling", "phantom_world", "evaluation", "environment"):  # importing a group registers its commands
    import_module(f"lowbudget.cli.{_group}")

__all__ = ["app", "main"]
