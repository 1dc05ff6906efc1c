"""Plain-text rendering shared by every part: tables, key/value blocks, findings.

The library's ``describe`` modules build their text with these; the CLI only
prints what they return. Nothing here prints.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:     # annotations only: importing typing is a tenth of a one-file command
    from typing import Any, Iterable, Optional, Sequence

__all__ = ["Table", "key_values", "findings_text", "cell"]


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value) or "-"
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
        cells = [[cell(v) for v in row] for row in self.rows]
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
    pairs = [(str(k), cell(v)) for k, v in pairs]
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
