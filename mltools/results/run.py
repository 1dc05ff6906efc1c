"""What every ``bench`` report carries besides its own figures: the raw samples
of each case with their statistics, the machine, the command line and the
times, so that a result can be trusted later and compared (``bench compare``).

The format follows pyperf's JSON (``psf/pyperf``, ``pyperf/_bench.py``): a run
keeps every value, not only the best; warm-up values are kept apart; the
machine's metadata uses pyperf's names where it has one. It differs where our
figures differ: a case says its unit and whether lower or higher is better
(bandwidth and images/s are rates, pyperf's values are always costs), and
carries its statistics (median, min, max, bootstrap interval, noisy).

pyperf itself is not used to run the benchmarks: its Runner calibrates loops
of a Python callable in worker processes it spawns, while our figures are
timed inside the C kernels (each NUMA repetition from the first thread's start
to the last thread's end), across threads pinned to nodes, or with CUDA
events; and its values are always costs. ``bench compare`` reads pyperf's
files, and the tests check its verdicts against ``pyperf compare_to``.

Format history (``version`` of each bench schema that embeds this):
  2 - ``machine``, ``run``, ``cases`` (samples + stats) and ``interrupted`` added.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from mltools.env.machine import Machine, collect_machine, load_average, now_iso
from mltools.results.stats import CI_METHOD, NOISE_THRESHOLD, Stats, summarize

__all__ = ["Case", "RunInfo", "Recorder", "LOWER", "HIGHER"]

LOWER, HIGHER = "lower", "higher"


@dataclass(frozen=True)
class Case:
    """One measured figure: every sample, in ``unit``, and its statistics."""

    name: str                          # unique within a report, e.g. "uniform/float64/1d/n=1000/kahan"
    unit: str                          # "ns/element", "GB/s", "ns", "images/s", "ms"
    better: str                        # "lower" (times) or "higher" (rates)
    samples: Tuple[float, ...]         # every round, in the order measured
    stats: Stats
    params: Dict[str, object] = field(default_factory=dict)
    warmup: Tuple[float, ...] = ()     # samples dropped as warm-up, when the case has any


@dataclass(frozen=True)
class RunInfo:
    command: Tuple[str, ...]           # the exact command line
    started: str                       # ISO 8601
    finished: str
    duration_s: float
    load_avg_before: Optional[float]   # 1-minute load average (the machine's load_avg_1min)
    load_avg_after: Optional[float]
    threads: int                       # threads the benchmark itself ran
    usable_cpus: int
    other_load: Optional[float]        # load of other processes: max(before, after - our share)
    busy: bool                         # other_load exceeded the usable CPUs
    cases: int
    noisy_cases: int
    noisy: bool                        # busy, or any case noisy
    ci_method: str = CI_METHOD
    noise_threshold: float = NOISE_THRESHOLD


class Recorder:
    """Collects the machine when a run starts, its cases as they finish, and the run's facts
    at the end. ``threads`` is how many threads the benchmark keeps busy, so that its own
    share of the load average is not counted as other load."""

    def __init__(self, command: Sequence[str] = (), threads: int = 1, machine: Optional[Machine] = None):
        self.command = tuple(command)
        self.threads = max(1, int(threads))
        self.machine = machine if machine is not None else collect_machine()
        self.started = now_iso()
        self._t0 = time.monotonic()
        self.cases: List[Case] = []

    def add(self, name: str, unit: str, better: str, samples: Sequence[float], *,
            params: Optional[Dict[str, object]] = None, spread_rule: bool = False,
            warmup: Sequence[float] = ()) -> Optional[Case]:
        """Record a case (None, and nothing recorded, when it has no finite sample)."""
        kept = tuple(float(s) for s in samples if s is not None and math.isfinite(s))
        if not kept:
            return None
        case = Case(name, unit, better, kept, summarize(kept, spread_rule=spread_rule), dict(params or {}),
                    tuple(float(w) for w in warmup))
        self.cases.append(case)
        return case

    def finish(self) -> RunInfo:
        duration = time.monotonic() - self._t0
        before = self.machine.load_avg_1min
        after, _ = load_average()
        # Our own threads raise the 1-minute average by threads * (1 - exp(-t/60)) after t
        # seconds (the kernel's exponential average); what is left is other processes' load.
        own = self.threads * (1.0 - math.exp(-duration / 60.0))
        candidates = [v for v in (before, None if after is None else max(after - own, 0.0)) if v is not None]
        other = max(candidates) if candidates else None
        busy = other is not None and other > self.machine.usable_cpus
        noisy_cases = sum(1 for c in self.cases if c.stats.noisy)
        return RunInfo(self.command, self.started, now_iso(), round(duration, 3), before, after, self.threads,
                       self.machine.usable_cpus, None if other is None else round(other, 2), busy,
                       len(self.cases), noisy_cases, busy or noisy_cases > 0)
