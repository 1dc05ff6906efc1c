"""What the benchmark scripts share: timing a child process in wall and CPU time.

On our shared machines wall time swings with the neighbours' load; the CPU time
of the children (user + system) is the steadier figure, so scripts report both.
"""
from __future__ import annotations

import resource
import subprocess
import time
from typing import Sequence, Tuple


def child_cpu_s() -> float:
    """User + system CPU seconds of all waited-for children so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(argv: Sequence[str], **kw) -> Tuple[subprocess.CompletedProcess, float, float]:
    """Run ``argv`` (output captured as text) and return (process, wall s, CPU s)."""
    cpu0, t0 = child_cpu_s(), time.perf_counter()
    proc = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    return proc, time.perf_counter() - t0, child_cpu_s() - cpu0
