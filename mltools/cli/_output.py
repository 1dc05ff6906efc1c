"""The one output path of every command.

stdout carries the product: a table for people, or exactly one JSON document
(``schema`` and ``version`` first) with ``--json``. Warnings, notes and progress
go to stderr; progress only when stderr is a terminal.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import click

from mltools import _jsonio

T = TypeVar("T")


def emit(result: Any, as_json: bool, render: Optional[Callable[[Any], str]] = None,
         *, schema: Optional[str] = None, version: Optional[int] = None) -> None:
    """Write ``result`` to stdout as JSON or through ``render`` (returns text).

    ``schema``/``version`` default to the result's ``SCHEMA``/``SCHEMA_VERSION``.
    """
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


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value) or "-"
    return str(value)


class Table:
    """A plain-text table; numbers are right-aligned, text left-aligned."""

    def __init__(self, headers: Sequence[str], rows: Iterable[Sequence[Any]] = (),
                 title: Optional[str] = None):
        self.headers = list(headers)
        self.rows = [list(r) for r in rows]
        self.title = title

    def add(self, *row: Any) -> None:
        self.rows.append(list(row))

    def render(self) -> str:
        cells = [[_cell(v) for v in row] for row in self.rows]
        numeric = [all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool)
                       for r in self.rows if i < len(r) and r[i] is not None) and bool(self.rows)
                   for i in range(len(self.headers))]
        widths = [max([len(h)] + [len(r[i]) for r in cells if i < len(r)])
                  for i, h in enumerate(self.headers)]

        def line(values: Sequence[str]) -> str:
            parts = []
            for i, v in enumerate(values):
                parts.append(v.rjust(widths[i]) if numeric[i] else v.ljust(widths[i]))
            return "  ".join(parts).rstrip()

        out = []
        if self.title:
            out.append(self.title)
        out.append(line(self.headers))
        out.append(line(["-" * w for w in widths]))
        out.extend(line(r + [""] * (len(widths) - len(r))) for r in cells)
        return "\n".join(out)


def key_values(pairs: Iterable[tuple], title: Optional[str] = None) -> str:
    """Aligned ``key  value`` lines, for reports that are not tables."""
    pairs = [(str(k), _cell(v)) for k, v in pairs]
    width = max((len(k) for k, _ in pairs), default=0)
    out = [title] if title else []
    out.extend(f"  {k.ljust(width)}  {v}" if title else f"{k.ljust(width)}  {v}" for k, v in pairs)
    return "\n".join(out)


def findings_text(findings: Iterable[Any]) -> str:
    """``severity CODE: message`` lines with an indented fix, worst first."""
    ranked = sorted(findings, key=lambda f: -f.severity.rank)
    out = []
    for f in ranked:
        out.append(f"{f.severity.value:<7} {f.code}: {f.message}")
        if f.fix:
            out.append(f"        fix: {f.fix}")
    return "\n".join(out)
