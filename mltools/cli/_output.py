"""The one output path of every command.

stdout carries the product: a table for people, or exactly one JSON document
(``schema`` and ``version`` first) with ``--json``. Warnings, notes and progress
go to stderr; progress only when stderr is a terminal.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

import click

from mltools import _jsonio

T = TypeVar("T")


def emit(result: Any, as_json: bool, render: Optional[Callable[[Any], str]] = None,
         *, schema: Optional[str] = None, version: Optional[int] = None) -> None:
    """Write ``result`` to stdout as JSON or through ``render`` (returns text).

    ``schema``/``version`` default to the result's ``SCHEMA``/``SCHEMA_VERSION``.
    A result that is already encoded (it has a ``document()`` method, such as
    ``elf tree``'s batch of many trees) is written as it is.
    """
    if callable(getattr(result, "document", None)):
        click.echo(result.document())
        return
    if as_json:
        schema = schema or getattr(result, "SCHEMA", None)
        version = version if version is not None else getattr(result, "SCHEMA_VERSION", None)
        if not schema or version is None:
            raise TypeError(f"{type(result).__name__} has no SCHEMA/SCHEMA_VERSION")
        click.echo(_jsonio.dumps(result, schema, version))
        return
    text = render(result) if render is not None else str(result)
    if text:
        click.echo(text.rstrip("\n"))


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def note(message: str) -> None:
    click.echo(message, err=True)


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A one-line counter on stderr, drawn only when stderr is a terminal."""

    def __init__(self, label: str, total: Optional[int] = None, min_interval_s: float = 0.1):
        self.label = label
        self.total = total
        self.done = 0
        self._enabled = stderr_is_terminal()
        self._last = 0.0
        self._min_interval = min_interval_s

    def advance(self, n: int = 1, detail: str = "") -> None:
        self.done += n
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._last < self._min_interval and (self.total is None or self.done < self.total):
            return
        self._last = now
        count = f"{self.done}/{self.total}" if self.total else str(self.done)
        line = f"{self.label}: {count} {detail}"[:100]
        sys.stderr.write("\r\x1b[K" + line)
        sys.stderr.flush()

    def close(self) -> None:
        if self._enabled and self._last:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def track(items: Iterable[T], label: str, total: Optional[int] = None) -> Iterator[T]:
    """Iterate with a Progress line (a no-op off a terminal)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(label, total) as bar:
        for item in items:
            yield item
            bar.advance()
