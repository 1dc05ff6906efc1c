"""How one run under a shim ended: the parts malloc-fail and io-fail classify alike.

Each tool has its own classes for a run that exited (malloc-fail:
``clean-error``/``absorbed``/``leak``; io-fail: ``reported``/``recovered``/
``silent-corruption``/``old-state-lost``); these are common to both:
``crash`` (a signal; SIGABRT is malloc-fail's ``abort``), ``hang`` (the
timeout expired), ``not-reached`` (nothing failed: the index is beyond the
calls made) and ``harness-error`` (no handshake from the shim).
"""
from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass
from typing import Optional

from mltools._proc import signal_name

_HEAP_CHECK = re.compile(r"(free|malloc|realloc|malloc_consolidate|corrupted)[^\n]*(): |double free|"
                         r"corrupted size|invalid pointer|corrupted double-linked list")


@dataclass(frozen=True)
class Outcome:
    class_name: str           # one of the tool's CLASSES
    reason: Optional[str]     # crash: the signal; abort: assert, bad_alloc, ...; ...
    detail: str               # one line for people


def abort_reason(stderr: str) -> str:
    """Why a process raised SIGABRT, from what it printed."""
    if "Fatal Python error" in stderr:
        return "fatal-python-error"
    if "bad_alloc" in stderr:
        return "bad_alloc"
    if "Assertion" in stderr and "failed" in stderr:
        return "assert"
    if _HEAP_CHECK.search(stderr):
        return "glibc-heap-check"
    return "other"


def last_line(stderr: str, pattern: str = r"\S") -> str:
    """The last line of ``stderr`` matching ``pattern`` (200 characters at most)."""
    for line in reversed(stderr.splitlines()):
        if re.search(pattern, line):
            return line.strip()[:200]
    return ""


def common_outcome(returncode: int, timed_out: bool, injected: bool) -> Optional[Outcome]:
    """``hang``, ``not-reached`` and a crash by a signal other than SIGABRT, or None."""
    if timed_out:
        return Outcome("hang", None, "the run timed out")
    if not injected:
        return Outcome("not-reached", None, "nothing failed: the chosen index was never reached")
    if returncode < 0 and -returncode != signal.SIGABRT:
        name = signal_name(-returncode)
        return Outcome("crash", name, f"killed by {name}")
    return None


def counting_outcome(timed_out: bool) -> Outcome:
    """The outcome of a run asked to fail nothing."""
    return Outcome("hang" if timed_out else "not-reached", None, "nothing was asked to fail (a counting run)")


def decode_wait_status(status: int) -> int:
    """A waitpid status as a Popen return code (-N for signal N)."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return -9
