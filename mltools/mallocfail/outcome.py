"""What a run with an injected allocation failure ended as."""
from __future__ import annotations

import signal
from typing import Optional

from mltools.preload.outcome import Outcome, abort_reason, common_outcome, last_line

__all__ = ["CLASSES", "BUG_CLASSES", "Outcome", "classify"]

CLASSES = ("clean-error", "absorbed", "crash", "abort", "hang", "leak", "not-reached", "harness-error")
#: Classes that point at a bug in the target (a sweep exits 1 when it finds one).
BUG_CLASSES = ("crash", "abort", "hang", "leak")


def classify(returncode: int, timed_out: bool, stderr: str, injected: bool,
             live_blocks: Optional[int] = None, baseline_live_blocks: Optional[int] = None) -> Outcome:
    """Classify one run. ``returncode`` as Popen reports it (-N for signal N).

    A ``leak`` is an exit 0 with more live blocks at exit than the baseline
    run had (error paths that exit non-zero are not checked: programs rarely
    free before exiting with an error).
    """
    common = common_outcome(returncode, timed_out, injected)
    if common is not None:
        return common
    if returncode == -signal.SIGABRT:
        reason = abort_reason(stderr)
        line = last_line(stderr, r"Fatal Python error|bad_alloc|Assertion|\(\): |double free|terminate")
        return Outcome("abort", reason, f"SIGABRT ({reason})" + (f": {line}" if line else ""))
    if "Fatal Python error" in stderr:
        return Outcome("abort", "fatal-python-error", last_line(stderr, "Fatal Python error") or "Fatal Python error")
    if returncode == 0:
        if live_blocks is not None and baseline_live_blocks is not None and live_blocks > baseline_live_blocks:
            return Outcome("leak", None, f"exit 0 with {live_blocks - baseline_live_blocks} more live "
                                         f"blocks at exit than the baseline")
        return Outcome("absorbed", None, "exit 0: the failure was absorbed")
    if "MemoryError" in stderr:
        return Outcome("clean-error", "MemoryError", f"exit {returncode}: "
                       + (last_line(stderr, "MemoryError") or "MemoryError"))
    line = last_line(stderr)
    return Outcome("clean-error", None, f"exit {returncode}" + (f": {line}" if line else ""))
