"""The one output path of every command.

stdout carries the product: a table for people, or exactly one JSON document
(``schema`` and ``version`` first) with ``--json``. Warnings and progress go to
stderr, progress only when stderr is a terminal; ``--quiet`` silences both.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional

import click

from mltools import _jsonio


def emit(result: Any, as_json: bool, render: Optional[Callable[[Any], str]] = None,
         *, schema: Optional[str] = None, version: Optional[int] = None) -> None:
    """Write ``result`` to stdout as JSON or through ``render`` (returns text).

    ``schema``/``version`` default to the result's ``SCHEMA``/``SCHEMA_VERSION``.
    A result that is already encoded (it has a ``document()`` method, such as
    ``elf tree``'s batch of many trees) is written as it is. A result that was
    interrupted (``interrupted`` is true) is written, then the run ends as
    interrupted (exit status 130 or 143). A first Ctrl-C while the result is being written
    waits for the end of it: a JSON document is never cut in the middle.
    """
    text = render_result(result, as_json, render, schema=schema, version=version)
    if text:
        from mltools._lifecycle import write_stdout

        write_stdout(text.rstrip("\n") + "\n")
    if getattr(result, "interrupted", False):
        from mltools._lifecycle import Interrupted, received_signal
        import signal
        raise Interrupted(received_signal() or signal.SIGINT)


def render_result(result: Any, as_json: bool, render: Optional[Callable[[Any], str]] = None,
                  *, schema: Optional[str] = None, version: Optional[int] = None) -> str:
    """The text :func:`emit` writes for ``result`` (a JSON document or ``render``'s text),
    for a command that writes it somewhere other than stdout."""
    if callable(getattr(result, "document", None)):
        return result.document()
    if as_json:
        schema = schema or getattr(result, "SCHEMA", None)
        version = version if version is not None else getattr(result, "SCHEMA_VERSION", None)
        if not schema or version is None:
            raise TypeError(f"{type(result).__name__} has no SCHEMA/SCHEMA_VERSION")
        return _jsonio.dumps(result, schema, version)
    return render(result) if render is not None else str(result)


_quiet = False


def set_quiet(quiet: bool) -> None:
    """``--quiet``: no progress and no warnings on stderr (errors and reports still)."""
    global _quiet
    _quiet = bool(quiet)


def warn(message: str) -> None:
    if not _quiet:
        click.echo(f"warning: {message}", err=True)


def note(message: str) -> None:
    """Text that belongs on stderr whatever the options (a target runner's report)."""
    click.echo(message, err=True)


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


class Progress:
    """One line on stderr: ``label: done/total (pct), time left``.

    Drawn only when stderr is a terminal and --quiet is not given; never on
    stdout. An instance is also the ``progress(done, total, detail)`` callback
    the library's long loops take (``detail`` is accepted and not drawn).
    """

    def __init__(self, label: str, total: Optional[int] = None, min_interval_s: float = 0.1):
        self.label = label
        self.total = total
        self.done = 0
        self._enabled = stderr_is_terminal() and not _quiet
        self._last = 0.0
        self._start: Optional[float] = None
        self._start_done = 0
        self._min_interval = min_interval_s

    @property
    def enabled(self) -> bool:
        return self._enabled

    def __call__(self, done: int, total: Optional[int] = None, detail: str = "") -> None:
        self.update(done, total, detail)

    def advance(self, n: int = 1, detail: str = "") -> None:
        self.update(self.done + n, None, detail)

    def update(self, done: int, total: Optional[int] = None, detail: str = "") -> None:
        if total is not None and total != self.total:
            if self.total is not None and done < self.done:
                self._start = None          # a new phase with its own count: its own time estimate
            self.total = total
        self.done = done
        if not self._enabled:
            return
        now = time.monotonic()
        if self._start is None:
            self._start, self._start_done = now, done
        finished = self.total is not None and self.done >= self.total
        if now - self._last < self._min_interval and not finished:
            return
        self._last = now
        sys.stderr.write("\r\x1b[K" + self.line(now)[:120])
        sys.stderr.flush()

    def line(self, now: Optional[float] = None) -> str:
        now = time.monotonic() if now is None else now
        if not self.total:
            return f"{self.label}: {self.done}"
        text = f"{self.label}: {self.done}/{self.total} ({100 * self.done // max(1, self.total)}%)"
        made = self.done - self._start_done
        if self._start is not None and made > 0 and self.done < self.total:
            left = (now - self._start) / made * (self.total - self.done)
            text += f", {_duration(left)} left"
        return text

    def status(self, text: str) -> None:
        """A phase without a count (``label: text``)."""
        if self._enabled:
            sys.stderr.write("\r\x1b[K" + f"{self.label}: {text}"[:120])
            sys.stderr.flush()
            self._last = time.monotonic()

    def close(self) -> None:
        if self._enabled and self._last:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
