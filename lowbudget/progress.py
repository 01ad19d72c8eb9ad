"""Progress of a long job, for the person waiting on it.

On a terminal: a tqdm bar with the rate and the time left. Anywhere else (a CI log, a file, a
pipe): a plain line now and then -- ``generate: 40/120 steps (33%), 0:12 so far, about 0:24
left`` -- because a bar's carriage returns turn a log into one unreadable line. Either way,
:meth:`Progress.doing` says what the job is busy with when that is not the counted work (the
last validation grid after the final training step, loading a model).

Work may be weighted: the benchmark counts each section by what it cost on a measured run, so
that the time left is the measured cost still to come, at this machine's pace so far.
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TextIO, TypeVar

from tqdm.auto import tqdm


def clock(seconds: float) -> str:
    """1:02:03, 2:03, 0:05."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def time_left(elapsed: float, done: float, left: float) -> float | None:
    """Seconds for ``left`` more units at the pace of ``done`` units in ``elapsed`` s; None before any."""
    return elapsed / done * max(0.0, left) if done > 0 else None


def pace(elapsed: float, done: float, left: float) -> str:
    """'0:42 so far, about 3:10 left' (the time left once there is a pace and work to go)."""
    seconds = time_left(elapsed, done, left)
    return f"{clock(elapsed)} so far" + (f", about {clock(seconds)} left" if seconds is not None and left > 0 else "")


def plural(n: int, word: str) -> str:
    """'1 step', '2 steps', '1 entry', '3 entries'."""
    if n == 1:
        return f"{n} {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") and word[-2:-1] not in "aeiou" else f"{n} {word}s"


class Progress:
    """Counts ``total`` units of one job called ``what``; use as a context manager.

    ``unit=None`` counts weighted work (shown as a share, not a count). ``every`` is the least
    number of seconds between two plain lines; ``enabled=False`` shows nothing (``--quiet``).
    ``initial`` units were done before (a resumed run): they count towards the share, not
    towards the pace.
    """

    def __init__(self, total: float, what: str, unit: str | None = "step", *, enabled: bool = True,
                 stream: TextIO | None = None, every: float = 30.0, initial: float = 0) -> None:
        self.total, self.what, self.unit, self.enabled = total, what, unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.every, self.done, self.initial = every, initial, initial
        self.start = time.monotonic()
        self._last_line = self.start
        self._bar = None
        if enabled and _is_terminal(self.stream):
            weighted = {} if unit else {"bar_format": "{l_bar}{bar}| {elapsed}<{remaining}"}  # no counts to show
            self._bar = tqdm(total=total, initial=initial, desc=what, unit=unit or "it", file=self.stream,
                             dynamic_ncols=True, **weighted)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close(finished=exc[0] is None)

    def update(self, n: float = 1, **postfix: str) -> None:
        self.done += n
        if self._bar is not None:
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
        elif self.enabled and time.monotonic() - self._last_line >= self.every:
            self._line(self.status() + "".join(f", {k} {v}" for k, v in postfix.items()))

    def doing(self, text: str) -> None:
        """Say what the job is busy with now (shown at once, in either form); "" when it is back
        to the counted work."""
        if self._bar is not None:
            self._bar.set_description(f"{self.what}: {text}" if text else self.what)
        elif self.enabled and text:
            self._line(f"{self.what}: {text}")

    def seconds_left(self) -> float | None:
        """At the pace of this run so far; None before any unit is done."""
        return time_left(time.monotonic() - self.start, self.done - self.initial, self.total - self.done)

    def status(self) -> str:
        share = f"{self.done / self.total:.0%}" if self.total else "100%"
        counted = f"{self.done:g}/{self.total:g} {self.unit}s ({share})" if self.unit else share
        elapsed = time.monotonic() - self.start
        return f"{self.what}: {counted}, {pace(elapsed, self.done - self.initial, self.total - self.done)}"

    def close(self, finished: bool = True) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and finished:
            self._line(f"{self.what}: done, {clock(time.monotonic() - self.start)}")
        self.enabled = False

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
        self._last_line = time.monotonic()


T = TypeVar("T")


def track(items: Iterable[T], what: str | None, unit: str = "item", *, total: int | None = None,
          weight=lambda item: 1) -> Iterator[T]:
    """Iterate ``items`` with a :class:`Progress` over them; ``what=None`` shows nothing.
    ``weight(item)`` is how many units an item counts (a batch of images)."""
    items = list(items) if total is None and not hasattr(items, "__len__") else items
    with Progress(total if total is not None else len(items), what or "", unit, enabled=what is not None) as bar:
        for item in items:
            yield item
            bar.update(weight(item))


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real file
        return False
