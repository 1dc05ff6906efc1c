"""What malloc-fail's and io-fail's sweeps share.

A sweep first runs the target with nothing failing, twice under the shim
(the baseline: it counts the eligible calls, N; the second run says whether
that count is stable) and once without it (a plain run: when the baseline
exits differently, the shim changed what the program does and the sweep
stops). Then points 1, 2, ... N each fail (``persistent``: from there on),
plus N+1, which must come back ``not-reached`` (the stop condition, as in
SQLite's fault-injection loop); the first ``not-reached`` ends the sweep.

Here: what a sweep keeps (:class:`SweepRun`), the spec of one point, the
baseline checks, the loop over points (workers, the stop at the first
``not-reached``, progress, an interrupt that keeps what was finished),
counting a fork pass's progress from its records, a forked child's stderr, and
counting and grouping points by class and call site.
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

from mltools.errors import MltoolsError, UsageError
from mltools.preload.records import ChannelReader
from mltools.preload.runner import RawRun, lost_shim_messages
from mltools.preload.target import resolve_target

P = TypeVar("P")
S = TypeVar("S")

#: ``progress(done, total, detail)``, the CLI's Progress line (or None).
ProgressFn = Optional[Callable[..., None]]


class SweepRun:
    """What a sweep keeps for all its runs: the command, the spec and its filters only
    (what the baseline runs with), the target, how points run, the warnings so far."""

    def __init__(self, argv: Sequence[str], spec, options, filters, *, persistent: bool, point_timeout_s: float,
                 progress: ProgressFn, cwd: Optional[str], stdin):
        self.argv = list(argv)
        self.spec = spec
        self.options = options
        self.persistent = persistent
        self.point_timeout_s = point_timeout_s
        self.progress = progress
        self.cwd = cwd
        self.stdin = stdin
        self.target = resolve_target(argv[0], options.target_exe)
        self.filters = filters
        self.warnings: List[str] = []

    def status(self, text: str) -> None:
        if self.progress is not None and hasattr(self.progress, "status"):
            self.progress.status(text)


def use_fork_mode(fork: Optional[bool], scope: str) -> bool:
    """``fork=None``: fork mode when the scope is ``root`` (the only scope it works with)."""
    use_fork = (scope == "root") if fork is None else fork
    if use_fork and scope != "root":
        raise UsageError("fork mode needs --scope root")
    return use_fork


def point_spec(base: S, index: int, persistent: bool) -> S:
    """``base`` (a spec with filters only) failing the call at ``index`` (``persistent``: and every later one)."""
    return replace(base, after=index - 1) if persistent else replace(base, fail_at=index)


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


def baseline_total(base: RawRun) -> int:
    """The calls the baseline counted: the sum over the injecting processes' exit records
    (MltoolsError when none wrote one)."""
    roots = [p for p in base.records.processes if p.injects]
    if not any(p.exited_normally for p in roots):
        raise MltoolsError("the baseline run (nothing failing) ended without the shim's exit record "
                           f"(status {base.exit_status}; it called _exit?): its calls cannot be counted")
    return sum(p.counted_total for p in roots)


def baseline_warnings(base: RawRun, total: int, again: RawRun) -> List[str]:
    """When a second run with nothing failing (``again``) counts other than the baseline's
    ``total``, and each exec of the baseline that lost the shim."""
    out = []
    note = unstable_count_warning(total, sum(p.counted_total for p in again.records.processes if p.injects))
    if note:
        out.append(note)
    out.extend(lost_shim_messages(base.records))
    return out


def unstable_count_warning(first: int, second: int) -> Optional[str]:
    if first == second:
        return None
    return (f"the eligible calls differ between two runs with nothing failing ({first} and {second}): "
            "the program is not deterministic, so an index may not name the same call in every run "
            "(points past the shorter run may come back not-reached)")


def child_stderr(folder: str, index: int) -> str:
    """What the forked child of point ``index`` wrote on stderr (the shim's ``<folder>/<index>.err``)."""
    try:
        with open(os.path.join(folder, f"{index}.err"), "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


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


def not_reached(point) -> bool:
    """A point (with ``outcome``) whose index was past the calls made."""
    return point.outcome is not None and point.outcome.class_name == "not-reached"


def first_not_reached(points: Dict[int, P]) -> Optional[int]:
    return min((i for i, p in points.items() if not_reached(p)), default=None)


def until_not_reached(points: Dict[int, P]) -> Dict[int, P]:
    """The points up to the first not-reached one (where the sweep ends)."""
    return _until(points, first_not_reached(points))


def count_classes(points: Sequence, classes: Sequence[str]) -> Tuple[Dict[str, int], int]:
    """(points per class, in ``classes`` order, classes without any left out; points run in a forked child)."""
    by_class = {c: 0 for c in classes}
    for p in points:
        by_class[p.outcome.class_name] += 1
    return {k: v for k, v in by_class.items() if v}, sum(1 for p in points if p.method == "fork")
