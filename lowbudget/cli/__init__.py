"""The ``lowbudget`` command line: the only package that imports Typer.

Each command parses its options, calls one library function, and prints a short summary.
One error boundary (:func:`main`) turns :class:`~lowbudget.errors.LowbudgetError` into a
one-line message on stderr and exit code 1; ``--debug`` shows the traceback instead.
Library modules are imported inside the commands, so that ``lowbudget --help`` starts fast.

  app.py           the application: every command group registered explicitly, the error boundary
  common.py        option types, value parsers and messages the groups share
  training.py      train, check-recipe, make-base, inspect, convert
  sampling.py      generate, compose, inpaint
  sharing.py       keys new, sign, verify, share, library add / verify / publish / pull
  evaluation.py    evaluate diversity / realism / classifier / memorisation / all
  phantom_world.py phantom images / report / pretrain-base / benchmark
  environment.py   doctor
"""

from lowbudget.cli.app import app, main

__all__ = ["app", "main"]
