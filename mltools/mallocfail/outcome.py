"""What a run with an injected failure ended as."""
from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from typing import Optional

CLASSES = ("clean-error", "absorbed", "crash", "abort", "hang", "leak", "not-reached", "harness-error")
#: Classes that point at a bug in the target (a sweep exits 1 when it finds one).
BUG_CLASSES = ("crash", "abort", "hang", "leak")

_HEAP_CHECK = re.compile(r"(free|malloc|realloc|malloc_consolidate|corrupted)[^\n]*(): |double free|"
                         r"corrupted size|invalid pointer|corrupted double-linked list")


@dataclass(frozen=True)
class Outcome:
    class_name: str           # one of CLASSES
    reason: Optional[str]     # abort: assert, bad_alloc, fatal-python-error, glibc-heap-check, other; ...
    detail: str               # one line for people


def _abort_reason(stderr: str) -> str:
    if "Fatal Python error" in stderr:
        return "fatal-python-error"
    if "std::bad_alloc" in stderr or "bad_alloc" in stderr:
        return "bad_alloc"
    if "Assertion" in stderr and "failed" in stderr:
        return "assert"
    if _HEAP_CHECK.search(stderr):
        return "glibc-heap-check"
    return "other"


def _last_line(stderr: str, pattern: str) -> str:
    for line in reversed(stderr.splitlines()):
        if re.search(pattern, line):
            return line.strip()[:200]
    return ""


def classify(returncode: int, timed_out: bool, stderr: str, injected: bool,
             live_blocks: Optional[int] = None, baseline_live_blocks: Optional[int] = None) -> Outcome:
    """Classify one run. ``returncode`` as Popen reports it (-N for signal N).

    A ``leak`` is an exit 0 with more live blocks at exit than the baseline
    run had (error paths that exit non-zero are not checked: programs rarely
    free before exiting with an error).
    """
    if timed_out:
        return Outcome("hang", None, "the run timed out")
    if not injected:
        return Outcome("not-reached", None, "no allocation failed: the chosen index was never reached")
    if returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig == signal.SIGABRT:
            reason = _abort_reason(stderr)
            line = _last_line(stderr, r"Fatal Python error|bad_alloc|Assertion|\(\): |double free|terminate")
            return Outcome("abort", reason, f"SIGABRT ({reason})" + (f": {line}" if line else ""))
        return Outcome("crash", name, f"killed by {name}")
    if "Fatal Python error" in stderr:
        return Outcome("abort", "fatal-python-error",
                       _last_line(stderr, "Fatal Python error") or "Fatal Python error")
    if returncode == 0:
        if live_blocks is not None and baseline_live_blocks is not None and live_blocks > baseline_live_blocks:
            return Outcome("leak", None, f"exit 0 with {live_blocks - baseline_live_blocks} more live "
                                         f"blocks at exit than the baseline")
        return Outcome("absorbed", None, "exit 0: the failure was absorbed")
    if "MemoryError" in stderr:
        return Outcome("clean-error", "MemoryError", f"exit {returncode}: "
                       + (_last_line(stderr, "MemoryError") or "MemoryError"))
    line = stderr.strip().splitlines()[-1][:200] if stderr.strip() else ""
    return Outcome("clean-error", None, f"exit {returncode}" + (f": {line}" if line else ""))
