"""The project's own exceptions.

Every user-facing failure (a bad path, a bad recipe value, an unreadable dataset) raises a
subclass of :class:`LowbudgetError` whose message is one line that names the bad input and
what was expected. ``lowbudget.cli.main`` turns these into a message and a non-zero exit code; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re


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


class SignatureError(AdapterError):
    """A signature is missing, malformed, by a key not trusted, or does not match the file."""


class TrainingError(LowbudgetError):
    """Training cannot continue (non-finite loss, missing checkpoint, ...)."""


class FederationError(LowbudgetError):
    """A federation cannot start or go on (a site's recipe or base differs from the server's, a bad setting)."""


class OutputError(LowbudgetError):
    """An output path is unusable, a write failed, or it would replace what lowbudget did not write."""


def os_error(exc: OSError) -> str:
    """An operating-system error as one line: what failed, on which path."""
    reason = exc.strerror or quote(exc)
    where = f" '{exc.filename}'" if exc.filename else ""
    also = f" -> '{exc.filename2}'" if getattr(exc, "filename2", None) else ""
    return f"{reason}:{where}{also}" if where else reason


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")


def one_line(text: str) -> str:
    """``text`` without terminal escape codes or control characters, its lines joined by spaces."""
    text = _ANSI.sub("", text)
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def quote(exc: BaseException | str, limit: int = 160) -> str:
    """Another library's message, fit to stand inside one of ours.

    Terminal escape codes go (torch colours parts of its pickle errors), the text is cut to its
    first line, and a long line is shortened at a word boundary with an ellipsis, never mid-word.
    An empty message becomes the exception's type name.
    """
    text = _ANSI.sub("", exc if isinstance(exc, str) else str(exc))
    first = next((line for line in map(one_line, text.splitlines()) if line), "")
    if not first:
        return "no message" if isinstance(exc, str) else type(exc).__name__
    if len(first) <= limit:
        return first
    cut = first[: limit - 1]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:.(") + "…"
