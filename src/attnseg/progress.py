"""Progress display that suits where it is shown.

On a terminal a tqdm bar is redrawn in place. Off a terminal (a log file, a pipe, a CI log) every
redraw of a bar would become a new line, thousands per run, so plain lines are written instead:

- a loop over a known collection (cases) writes a line every ``ceil(total / 10)`` items and a last
  line when it ends;
- a bar that its caller advances by hand (training iterations) writes nothing of its own: the caller
  already writes one line per epoch through ``write``;
- either writes a heartbeat line when ``heartbeat_s`` passed without a line, so a slow step still
  shows life.

A nested, short-lived bar (``nested=True``, e.g. the windows of one case) writes nothing off a
terminal: the loop around it already reports.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm.auto import tqdm


def is_terminal(stream: IO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class LineProgress:
    """The subset of tqdm's interface attnseg uses, writing whole lines (see the module docstring)."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: int | None = None,
        initial: int = 0,
        desc: str = "",
        unit: str = "it",
        file: IO | None = None,
        nested: bool = False,
        heartbeat_s: float = 120.0,
        clock=time.monotonic,
    ):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.file = file if file is not None else sys.stderr
        self.silent = nested
        self.heartbeat_s = heartbeat_s
        self._clock = clock
        self._start = self._last = clock()
        self._start_n = initial
        self._postfix: dict[str, Any] = {}
        self._every = max(1, math.ceil(total / 10)) if total else None
        self._counted = iterable is not None  # counted loops report every tenth and at the end
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def line(self) -> str:
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        elapsed = self._clock() - self._start
        parts = [f"{self.desc}: " if self.desc else "", f"{done} {self.unit}, {_clock(elapsed)} elapsed"]
        rate_n = self.n - self._start_n
        if self.total and rate_n > 0 and self.n < self.total:
            parts.append(f", ~{_clock(elapsed / rate_n * (self.total - self.n))} left")
        if self._postfix:
            parts.append(" (" + ", ".join(f"{k}={v}" for k, v in self._postfix.items()) + ")")
        return "".join(parts)

    def _emit(self) -> None:
        self._last = self._clock()
        if not self.silent:
            print(self.line(), file=self.file, flush=True)

    def update(self, n: int = 1) -> None:
        before, self.n = self.n, self.n + n
        every = self._every if self._counted else None
        if every and self.n // every > before // every and self.n != self.total:
            self._emit()
        elif self._clock() - self._last >= self.heartbeat_s:
            self._emit()

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self._postfix = dict(values)

    def write(self, message: str) -> None:
        print(message, file=self.file, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._counted and self.n > self._start_n:
                self._emit()


def progress(
    iterable: Iterable | None = None,
    *,
    total: int | None = None,
    initial: int = 0,
    desc: str = "",
    unit: str = "it",
    file: IO | None = None,
    nested: bool = False,
    **tqdm_options: Any,
):
    """A tqdm bar on a terminal, a ``LineProgress`` elsewhere; both iterate ``iterable`` if given."""
    stream = file if file is not None else sys.stderr
    if is_terminal(stream):
        options = {"leave": not nested, **tqdm_options}
        return tqdm(
            iterable, total=total, initial=initial, desc=desc or None, unit=unit, file=stream, **options
        )
    return LineProgress(
        iterable, total=total, initial=initial, desc=desc, unit=unit, file=stream, nested=nested
    )


@contextlib.contextmanager
def quiet_loggers(*names: str, level: int = logging.ERROR) -> Iterator[None]:
    """Inside, the loggers ``names`` drop records below ``level``; their levels are restored after."""
    loggers = [logging.getLogger(name) for name in names]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, previous):
            logger.setLevel(old)
