"""What malloc-fail's and io-fail's sweeps share.

A sweep first runs the target with nothing failing, twice under the shim
(the baseline: it counts the eligible calls, N; the second run says whether
that count is stable) and once without it (a plain run: when the baseline
exits differently, the shim changed what the program does and the sweep
stops). Then points 1, 2, ... N each fail (``persistent``: from there on),
plus N+1, which must come back ``not-reached`` (the stop condition, as in
SQLite's fault-injection loop); the first ``not-reached`` ends the sweep.

Here: the loop over points (workers, the stop at the first ``not-reached``,
progress, an interrupt that keeps what was finished), counting a fork pass's
progress from its records, and grouping points by class and call site.
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from mltools.errors import MltoolsError
from mltools.preload.records import ChannelReader

P = TypeVar("P")

#: ``progress(done, total, detail)``, the CLI's Progress line (or None).
ProgressFn = Optional[Callable[..., None]]


@dataclass(frozen=True)
class SiteSummary:
    """Points of one class at one call site."""
    class_name: str
    reason: Optional[str]
    site: str
    points: int
    first_index: int
    replay: Optional[str]
    crash_site: Optional[str]


def summarize_sites(points: Sequence, rank: Sequence[str], site_of: Callable[[object], str]) -> Tuple[SiteSummary, ...]:
    """Group points (with ``index``, ``outcome``, ``replay``, ``crash_site``) by class,
    reason and call site; the classes in ``rank`` order, then by first index."""
    groups: Dict[Tuple[str, Optional[str], str], List] = {}
    for p in points:
        if p.outcome.class_name == "not-reached":
            continue
        groups.setdefault((p.outcome.class_name, p.outcome.reason, site_of(p)), []).append(p)
    order = {c: i for i, c in enumerate(rank)}
    rows = []
    for (cls, reason, site), ps in groups.items():
        first = min(ps, key=lambda x: x.index)
        rows.append(SiteSummary(cls, reason, site, len(ps), first.index, first.replay,
                                str(first.crash_site) if first.crash_site else None))
    rows.sort(key=lambda r: (order.get(r.class_name, 99), r.first_index))
    return tuple(rows)


def check_against_plain(tool: str, plain_status: int, plain_timed_out: bool, baseline_status: int,
                        baseline_timed_out: bool, timeout_s: float) -> None:
    """Stop when the baseline (the shim loaded, nothing failing) does not end as a plain run does."""
    if plain_timed_out:
        raise MltoolsError(f"a plain run of the target (without {tool}) timed out after {timeout_s:g} s: "
                           "a sweep needs a program that ends (raise --timeout?)")
    if baseline_timed_out:
        raise MltoolsError(f"the baseline run under {tool} (nothing failing) timed out after {timeout_s:g} s, "
                           f"a plain run exits {plain_status}")
    if plain_status != baseline_status:
        raise MltoolsError(f"the baseline run under {tool} (nothing failing) exits {baseline_status}, a plain "
                           f"run exits {plain_status}: the sweep would test another path than the program's "
                           "(does it depend on its environment, or on files a run changes?)")


def unstable_count_warning(first: int, second: int) -> Optional[str]:
    if first == second:
        return None
    return (f"the eligible calls differ between two runs with nothing failing ({first} and {second}): "
            "the program is not deterministic, so an index may not name the same call in every run "
            "(points past the shorter run may come back not-reached)")


class ForkProgress:
    """Counts the points a fork pass has finished (its C records) while the target runs."""

    def __init__(self, progress: ProgressFn, done_before: int, total: int):
        self.progress = progress
        self.done_before = done_before
        self.total = total
        self.lines: List[str] = []
        self._reader: Optional[ChannelReader] = None

    def __call__(self, records_path: str) -> None:
        if self._reader is None or self._reader.path != records_path:
            self._reader = ChannelReader(records_path)
        new = self._reader.read()
        self.lines.extend(new)
        if self.progress is not None and any(x.startswith("C\t") for x in new):
            done = sum(1 for x in self.lines if x.startswith("C\t"))
            self.progress(self.done_before + done, self.total, "forked children")


def run_points(indices: Sequence[int], run_one: Callable[[int], P], *, jobs: int,
               not_reached: Callable[[P], bool], progress: ProgressFn = None, done_before: int = 0,
               total: Optional[int] = None, detail: str = "") -> Tuple[Dict[int, P], bool]:
    """Run ``run_one(index)`` for the indices in order, ``jobs`` at a time, until one
    comes back not reached (later indices are not run; results past it are dropped).

    Returns (results by index, interrupted). An interrupt (Ctrl-C, SIGTERM) ends
    the points in flight and keeps what had finished before it.
    """
    from mltools._lifecycle import thread_pool

    results: Dict[int, P] = {}
    stop: Optional[int] = None
    total = len(indices) + done_before if total is None else total
    todo = list(indices)
    try:
        with thread_pool(max(1, jobs)) as pool:
            running = {}
            pos = 0
            while pos < len(todo) or running:
                while pos < len(todo) and len(running) < max(1, jobs):
                    index = todo[pos]
                    pos += 1
                    if stop is not None and index > stop:
                        continue
                    running[pool.submit(run_one, index)] = index
                if not running:
                    break
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    index = running.pop(fut)
                    point = fut.result()
                    results[index] = point
                    if not_reached(point) and (stop is None or index < stop):
                        stop = index
                    if progress is not None:
                        progress(done_before + len(results), total, detail)
    except KeyboardInterrupt:
        return _until(results, stop), True
    return _until(results, stop), False


def _until(results: Dict[int, P], stop: Optional[int]) -> Dict[int, P]:
    return results if stop is None else {i: p for i, p in results.items() if i <= stop}
