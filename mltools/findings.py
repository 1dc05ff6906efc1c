"""Findings: what a check found, with a stable code, a severity and a fix.

Shared by every part that reports problems (env, elf, doctor, cython, ...), so
``--fail-on`` and JSON consumers see one shape everywhere.
"""
from __future__ import annotations

import enum
import re

from mltools._record import record, factory

TYPE_CHECKING = False
if TYPE_CHECKING:     # annotations only: importing typing is a tenth of a one-file command
    from typing import Iterable, Mapping, Optional, Sequence, Tuple

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


@record
class Finding:
    code: str                       # stable, UPPER_SNAKE or a rule id such as CYP001
    severity: Severity
    message: str                    # one line, says what is wrong
    fix: Optional[str] = None       # one line, says what to do
    details: Mapping[str, object] = factory(dict)


def worst(findings: Iterable[Finding]) -> Optional[Severity]:
    ranked = [f.severity for f in findings]
    return max(ranked, key=lambda s: s.rank) if ranked else None


@record
class FailOn:
    """When a run has "found problems" (exit status 1): a finding at or above ``threshold``,
    or one whose code is in ``codes``. The one decision every command makes the same way."""
    threshold: Optional[Severity] = Severity.ERROR
    codes: Tuple[str, ...] = ()
    tokens: Tuple[str, ...] = ("error",)     # as written (reports echo them)

    def matches(self, findings: Iterable[Finding]) -> bool:
        threshold, codes = self.threshold, self.codes
        return any((threshold is not None and f.severity.rank >= threshold.rank) or f.code in codes
                   for f in findings)

    def __str__(self) -> str:
        return ",".join(self.tokens)

    @classmethod
    def at(cls, severity: Severity) -> "FailOn":
        return cls(severity, (), (severity.value,))


_CODE = re.compile(r"[A-Z][A-Z0-9_]*")


def parse_fail_on(text: str, examples: Sequence[str] = ("MISSING", "UNDEFINED")) -> FailOn:
    """The one ``--fail-on`` grammar: comma-separated severities (the lowest wins), finding
    codes (UPPER_SNAKE, or a rule id such as CYP001) and ``none``. ``examples`` name codes for
    the message of a ValueError."""
    threshold: Optional[Severity] = None
    codes = []
    tokens = tuple(t.strip() for t in text.split(",") if t.strip())
    for token in tokens:
        if token.lower() in ("info", "warning", "error"):
            sev = Severity.parse(token)
            threshold = sev if threshold is None or sev.rank < threshold.rank else threshold
        elif _CODE.fullmatch(token):
            codes.append(token)
        elif token.lower() == "none":
            continue
        else:
            raise ValueError(f"--fail-on {token!r}: use a severity (info, warning, error), "
                             f"finding codes such as {', '.join(examples)}, or none")
    return FailOn(threshold, tuple(codes), tokens)


@record
class ItemError:
    """One input of many that could not be processed (the others still were)."""
    path: str
    message: str


def require_some_processed(errors: Sequence[ItemError], total: int, noun: str = "inputs") -> None:
    """The batch rule: a run where no input at all could be processed cannot run (InputError,
    exit 2); otherwise the errors are reported with the results (exit 1)."""
    if total and len(errors) >= total:
        from mltools.errors import InputError

        first = errors[0].message
        raise InputError(first if total == 1 else f"none of the {total} {noun} could be processed: {first}")
