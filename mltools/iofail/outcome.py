"""What a run with a failed file-system call ended as, judged by its exit and by
what ``--check`` says about the files it left."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mltools._proc import signal_name
from mltools.preload.outcome import Outcome, common_outcome, last_line

__all__ = ["CLASSES", "BUG_CLASSES", "CheckResult", "Outcome", "classify"]

CLASSES = ("crash", "hang", "silent-corruption", "old-state-lost", "reported", "recovered", "completed",
           "not-reached", "harness-error")
#: A sweep exits 1 when it finds one of these.
BUG_CLASSES = ("crash", "hang", "silent-corruption", "old-state-lost")


@dataclass(frozen=True)
class CheckResult:
    """The --check command on what a run left: exit 0 means the files are good."""
    passed: bool
    exit_status: int
    detail: str                # its last line of output (stderr, else stdout)
    elapsed_s: float
    timed_out: bool = False


def classify(returncode: int, timed_out: bool, stderr: str, injected: bool,
             check: Optional[CheckResult], before_passed: Optional[bool]) -> Outcome:
    """``returncode`` as Popen reports it (-N for signal N). ``check``: the check
    after the run (None without --check); ``before_passed``: the check on the
    state before the run (old-state-lost needs a good state to lose)."""
    common = common_outcome(returncode, timed_out, injected)
    if common is not None:
        return common
    if returncode < 0:                 # SIGABRT: an uncaught C++ exception, abort()
        name = signal_name(-returncode)
        line = last_line(stderr)
        return Outcome("crash", name, f"killed by {name}" + (f": {line}" if line else ""))
    said = last_line(stderr)
    if check is None:
        if returncode == 0:
            return Outcome("completed", None, "exit 0 (no --check: what it left was not verified)")
        return Outcome("reported", None, f"exit {returncode}" + (f": {said}" if said else ""))
    if returncode == 0:
        if check.passed:
            return Outcome("recovered", None, "exit 0 and the check passes")
        return Outcome("silent-corruption", None, "exit 0 but the check fails"
                       + (f": {check.detail}" if check.detail else ""))
    if check.passed:
        return Outcome("reported", None, f"exit {returncode}, the check passes" + (f": {said}" if said else ""))
    if before_passed:
        return Outcome("old-state-lost", None, f"exit {returncode} and the previous good state no longer "
                       "passes the check" + (f": {check.detail}" if check.detail else ""))
    return Outcome("reported", "no-good-state-before", f"exit {returncode}; the check fails, as it did before "
                   "the run" + (f": {said}" if said else ""))
