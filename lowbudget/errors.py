"""The project's own exceptions.

Every user-facing failure (a bad path, a bad recipe value, an unreadable dataset) raises a
subclass of :class:`LowbudgetError` whose message is one line that names the bad input and
what was expected. ``lowbudget.cli.main`` turns these into a message and a non-zero exit code; anything
else is a bug and keeps its traceback.
"""


class LowbudgetError(Exception):
    """Base class: the message is shown to the user as is."""


class RecipeError(LowbudgetError):
    """A recipe file or override is malformed or names an unknown key."""


class DataError(LowbudgetError):
    """The training data cannot be used (missing folder, no readable image, bad caption file)."""


class ModelError(LowbudgetError):
    """A base model path is missing, of the wrong kind, or incompatible with the recipe."""


class AdapterError(LowbudgetError):
    """An adapter file or token cannot be created, read or applied."""


class TrainingError(LowbudgetError):
    """Training cannot continue (non-finite loss, missing checkpoint, ...)."""
