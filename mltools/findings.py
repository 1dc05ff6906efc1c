"""Findings: what a check found, with a stable code, a severity and a fix.

Shared by every part that reports problems (env, elf, doctor, cython, ...), so
``--fail-on`` and JSON consumers see one shape everywhere.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional


class Severity(str, enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "error": 2}[self.value]

    @classmethod
    def parse(cls, text: str) -> "Severity":
        try:
            return cls(text.lower())
        except ValueError:
            raise ValueError(f"unknown severity {text!r} (use info, warning or error)") from None


@dataclass(frozen=True)
class Finding:
    code: str                       # stable, UPPER_SNAKE or a rule id such as CYP001
    severity: Severity
    message: str                    # one line, says what is wrong
    fix: Optional[str] = None       # one line, says what to do
    details: Mapping[str, object] = field(default_factory=dict)


def worst(findings: Iterable[Finding]) -> Optional[Severity]:
    ranked = [f.severity for f in findings]
    return max(ranked, key=lambda s: s.rank) if ranked else None


def any_at_or_above(findings: Iterable[Finding], threshold: Severity) -> bool:
    return any(f.severity.rank >= threshold.rank for f in findings)
