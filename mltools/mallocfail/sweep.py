"""Sweep: fail each counted allocation in turn and classify what happens.

The baseline checks and the point loop are shared with io-fail
(:mod:`mltools.preload.sweep`). Two ways to run a point:

- fork mode (default where safe): the target runs once; at each index the
  shim forks, the child gets the failure and the parent waits for it, then
  goes on. The shim falls back (an ``S`` record) when the caller is inside
  libc or the loader, or the process has more than one thread: forking while
  libc holds an internal lock can deadlock the child. Those points, and any
  the single run did not reach, are re-run.
- re-run mode: one fresh process per index, in parallel over the cores, each
  with its own timeout.

Every point runs in the user's working directory (or ``cwd``) and reads the
same stdin bytes.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple

from mltools import _proc
from mltools._sysfs import usable_cpus
from mltools.errors import UsageError
from mltools.mallocfail.config import FailSpec, RunOptions
from mltools.mallocfail.outcome import BUG_CLASSES, CLASSES, Outcome, classify
from mltools.mallocfail.report import failures_of, live_blocks, live_blocks_at_exit, traces_of
from mltools.mallocfail.run import RawRun, replay_command, require_handshake, run_raw
from mltools.preload.outcome import decode_wait_status
from mltools.preload.records import Frame, first_failure_by_pid, parse_records, user_frame
from mltools.preload.runner import Stdin, private_dir, run_plain
from mltools.preload.sweep import (ForkProgress, ProgressFn, SiteSummary, SweepRun, baseline_total,
                                   baseline_warnings, check_against_plain, child_stderr, count_classes,
                                   not_reached, point_spec, run_points, summarize_sites, until_not_reached,
                                   use_fork_mode)
from mltools.preload.symbols import symbolize, with_symbols

__all__ = ["sweep", "SweepReport", "SweepPoint", "Baseline", "SiteSummary"]


@dataclass(frozen=True)
class SweepPoint:
    index: int
    function: Optional[str]
    size: Optional[int]
    site: Optional[Frame]          # first frame outside libc/libstdc++/the shim
    caller: Optional[Frame]        # the raw return address of the allocation call
    outcome: Outcome
    exit_status: int
    method: str                    # "fork" or "rerun"
    replay: Optional[str]          # for crash, abort, hang and leak
    crash_site: Optional[Frame]    # where it died, for crash and abort


@dataclass(frozen=True)
class Baseline:
    exit_status: int
    plain_exit_status: int         # the same run without the shim
    counted_total: int
    live_blocks: Optional[int]
    elapsed_s: float


@dataclass(frozen=True)
class SweepReport:
    SCHEMA: ClassVar[str] = "mltools.malloc_fail.sweep"
    SCHEMA_VERSION: ClassVar[int] = 2

    argv: Tuple[str, ...]
    program: str
    cwd: str
    filters: Tuple[str, ...]
    persistent: bool
    unique_stacks: bool
    jobs: int
    baseline: Baseline
    points_total: int              # counted calls in the baseline
    points_run: int                # points that ran (not-reached ones included)
    forked: int                    # of those, run in a forked child
    rerun: int                     # of those, run in a fresh process
    not_reached: int
    duplicates_skipped: int
    fork_fallbacks: Dict[str, int]  # why points were re-run instead of forked
    by_class: Dict[str, int]
    sites: Tuple[SiteSummary, ...]
    points: Tuple[SweepPoint, ...]
    warnings: Tuple[str, ...]
    elapsed_s: float
    interrupted: bool = False


def _filters_only(spec: FailSpec) -> FailSpec:
    return FailSpec(min_size=spec.min_size, max_size=spec.max_size, only=spec.only,
                    per_thread=spec.per_thread)


def _stack_key(frames: Sequence[Frame]) -> Tuple[Tuple[str, int], ...]:
    return tuple((f.module, f.offset) for f in frames[:8])


@dataclass
class _Point:
    index: int
    function: Optional[str] = None
    size: Optional[int] = None
    caller: Optional[Frame] = None
    frames: Tuple[Frame, ...] = ()
    outcome: Optional[Outcome] = None
    exit_status: int = 0
    method: str = "rerun"
    crash_frames: Tuple[Frame, ...] = ()


class _Sweep(SweepRun):
    def __init__(self, argv, spec, options, *, persistent, jobs, use_fork, point_timeout_s, progress, cwd, stdin):
        super().__init__(argv, spec, options, _filters_only(spec), persistent=persistent,
                         point_timeout_s=point_timeout_s, progress=progress, cwd=cwd, stdin=stdin)
        self.jobs = jobs
        self.use_fork = use_fork
        self.fallbacks: Dict[str, int] = {}

    def baseline(self, folder: str, unique_stacks: bool) -> Tuple[Baseline, RawRun]:
        self.status("a plain run and the baseline (nothing failing)")
        plain = run_plain(self.argv, self.target, folder=folder, timeout_s=self.options.timeout_s,
                          cwd=self.cwd, stdin=self.stdin)
        base = run_raw(self.argv, self.filters, self.options, self.target, folder=folder, cwd=self.cwd,
                       stdin=self.stdin, extra_env={"MLTOOLS_MF_TRACE": "1"} if unique_stacks else None)
        require_handshake(base, self.target)
        check_against_plain("malloc-fail", plain.exit_status, plain.timed_out, base.exit_status, base.timed_out,
                            self.options.timeout_s)
        total = baseline_total(base)
        again = run_raw(self.argv, self.filters, self.options, self.target, folder=folder, cwd=self.cwd,
                        stdin=self.stdin)
        self.warnings.extend(baseline_warnings(base, total, again))
        live = sum(live_blocks(p) or 0 for p in base.records.processes if p.injects)
        return Baseline(base.exit_status, plain.exit_status, total, live, round(base.elapsed_s, 4)), base

    def fork_pass(self, folder: str, indices: List[int], baseline: Baseline, fork_jobs: int,
                  done_before: int, total: int) -> Tuple[Dict[int, _Point], bool]:
        fork_dir = os.path.join(folder, "fork")
        os.mkdir(fork_dir)
        wanted = set(indices)
        extra = {"MLTOOLS_MF_FORK_DIR": fork_dir, "MLTOOLS_MF_FIRST": str(indices[0]),
                 "MLTOOLS_MF_LAST": str(indices[-1]),
                 "MLTOOLS_MF_FORK_TIMEOUT_MS": str(int(self.point_timeout_s * 1000)),
                 "MLTOOLS_MF_FORK_JOBS": str(max(1, fork_jobs)),
                 "MLTOOLS_MF_NO_CORE": "1"}
        if self.persistent:
            extra["MLTOOLS_MF_PERSISTENT"] = "1"
        # only the chosen indices fork (a bitmap, bit i-1 for index i)
        bitmap = bytearray((indices[-1] + 7) // 8)
        for i in indices:
            bitmap[(i - 1) >> 3] |= 1 << ((i - 1) & 7)
        set_path = os.path.join(folder, "fork-set")
        with open(set_path, "wb") as fh:
            fh.write(bytes(bitmap))
        extra["MLTOOLS_MF_FORK_SET"] = set_path
        budget = baseline.elapsed_s * 4 + 10 + len(indices) * (self.point_timeout_s + 0.05)
        watch = ForkProgress(self.progress, done_before, total)
        interrupted = False
        try:
            raw = run_raw(self.argv, self.filters, self.options, self.target, folder=folder, cwd=self.cwd,
                          stdin=self.stdin, extra_env=extra, timeout_s=max(self.options.timeout_s, budget),
                          poll=watch)
            records = raw.records
        except KeyboardInterrupt:
            interrupted = True
            records = parse_records(watch.lines)
        first_failure = first_failure_by_pid(failures_of(records))
        out: Dict[int, _Point] = {}
        for fp in records.fork_points:
            if fp.index not in wanted:
                continue
            if fp.child_pid is None:
                reason = fp.skipped_reason or "skipped"
                self.fallbacks[reason] = self.fallbacks.get(reason, 0) + 1
                continue
            if fp.wait_status is None or fp.wait_status == -1:
                self.fallbacks["child-lost"] = self.fallbacks.get("child-lost", 0) + 1
                continue          # the target reaped our child: re-run the point
            pt = _Point(fp.index, method="fork")
            f = first_failure.get(fp.child_pid)
            if f is not None:
                pt.function, pt.size, pt.caller, pt.frames = f.function, f.size, f.caller, f.frames
            rc = decode_wait_status(fp.wait_status)
            err = child_stderr(fork_dir, fp.index)
            pt.crash_frames = next((k.frames for k in records.crashes if k.pid == fp.child_pid), ())
            x = records.exits.get(fp.child_pid)
            child_live = live_blocks_at_exit(x["values"]) if x else None
            # the child of a fork point always fails the call it was forked at
            pt.outcome = classify(rc, fp.timed_out, err, injected=True, live_blocks=child_live,
                                  baseline_live_blocks=baseline.live_blocks)
            pt.exit_status = 124 if fp.timed_out else _proc.exit_status(rc)
            out[fp.index] = pt
        return out, interrupted

    def rerun_one(self, folder: str, index: int, baseline: Baseline) -> _Point:
        opts = replace(self.options, timeout_s=self.point_timeout_s,
                       extra_env=tuple(self.options.extra_env) + (("MLTOOLS_MF_NO_CORE", "1"),))
        raw = run_raw(self.argv, point_spec(self.filters, index, self.persistent), opts, self.target,
                      folder=folder, cwd=self.cwd, stdin=self.stdin)
        pt = _Point(index)
        if not raw.records.processes:
            pt.outcome = Outcome("harness-error", None, "no handshake from the shim")
            pt.exit_status = raw.exit_status
            return pt
        roots = {p.pid: p for p in raw.records.processes if p.injects}
        fails = [f for f in failures_of(raw.records) if f.pid in roots]
        if fails:
            f = min(fails, key=lambda x: x.index)
            pt.function, pt.size, pt.caller, pt.frames = f.function, f.size, f.caller, f.frames
        pt.crash_frames = next((k.frames for k in raw.records.crashes if k.pid in roots), ())
        live = sum(live_blocks(p) or 0 for p in roots.values()) if all(
            p.exited_normally for p in roots.values()) else None
        pt.outcome = classify(raw.returncode, raw.timed_out, raw.stderr.decode("utf-8", "replace"),
                              injected=bool(fails), live_blocks=live, baseline_live_blocks=baseline.live_blocks)
        pt.exit_status = 124 if raw.timed_out else raw.exit_status
        return pt


def sweep(argv: Sequence[str], spec: FailSpec, options: RunOptions, *, persistent: bool = False,
          jobs: Optional[int] = None, fork: Optional[bool] = None, unique_stacks: bool = False,
          max_points: Optional[int] = None, point_timeout_s: float = 20.0, progress: ProgressFn = None,
          cwd: Optional[str] = None, stdin: Stdin = Stdin()) -> SweepReport:
    """Sweep ``argv``. ``fork=None`` uses fork mode when the scope is ``root``.
    An interrupt returns what had finished, with ``interrupted`` set."""
    if spec.injects:
        raise UsageError("--sweep chooses the failing index itself: drop --after/--fail-at/--probability")
    use_fork = use_fork_mode(fork, options.scope)
    start = time.perf_counter()
    jobs = jobs or usable_cpus()
    run = _Sweep(argv, spec, options, persistent=persistent, jobs=jobs, use_fork=use_fork,
                 point_timeout_s=point_timeout_s, progress=progress, cwd=cwd, stdin=stdin)
    points: Dict[int, _Point] = {}
    trace_frames: Dict[int, Tuple[Frame, ...]] = {}
    duplicates = 0
    interrupted = False
    with private_dir("mf") as folder:
        baseline, base_raw = run.baseline(folder, unique_stacks)
        roots = [p for p in base_raw.records.processes if p.injects]
        indices = list(range(1, baseline.counted_total + 1))
        if unique_stacks:
            root_pids = {p.pid for p in roots}
            seen = set()
            keep = []
            for t in traces_of(base_raw.records):
                if t.pid not in root_pids:
                    continue
                trace_frames[t.index] = t.frames
                key = _stack_key(t.frames)
                if key in seen:
                    duplicates += 1
                    continue
                seen.add(key)
                keep.append(t.index)
            indices = sorted(keep)
        if max_points is not None:
            indices = indices[:max_points]
        elif not unique_stacks:
            indices.append(baseline.counted_total + 1)     # the stop condition: must be not-reached
        total = len(indices)
        if use_fork and indices:
            # children run side by side only for a target that starts no processes of its
            # own: its wait() calls could otherwise reap ours
            fork_jobs = jobs if len(base_raw.records.processes) == 1 else 1
            forked, interrupted = run.fork_pass(folder, indices, baseline, fork_jobs, 0, total)
            points.update(forked)
        if not interrupted:
            todo = [i for i in indices if i not in points]
            rerun, interrupted = run_points(
                todo, lambda i: run.rerun_one(folder, i, baseline), jobs=jobs, not_reached=not_reached,
                progress=progress, done_before=len(points), total=total, detail="re-runs")
            points.update(rerun)
    points = until_not_reached(points)
    return _report(run, points, trace_frames, baseline, duplicates, unique_stacks, persistent, jobs,
                   interrupted, time.perf_counter() - start)


def _report(run: _Sweep, points: Dict[int, _Point], trace_frames, baseline: Baseline, duplicates: int,
            unique_stacks: bool, persistent: bool, jobs: int, interrupted: bool, elapsed: float) -> SweepReport:
    # which frames are shown: the caller, the site (the first frame outside libc and the shims,
    # chosen by module) and where it died; one symbolization for them all (none when
    # interrupted: leave at once, with module+offset)
    shown = {}
    for i, p in points.items():
        frames = p.frames or trace_frames.get(i, ())
        site = user_frame(frames) if frames else (user_frame((p.caller,)) if p.caller else None)
        shown[i] = (p.caller, site, user_frame(p.crash_frames) if p.crash_frames else None)
    table: Dict = {}
    if not interrupted:
        faulting = [p.crash_frames[0] for p in points.values() if p.crash_frames]
        table = symbolize([f for trio in shown.values() for f in trio], exact=faulting)
    out: List[SweepPoint] = []
    for i in sorted(points):
        p = points[i]
        caller, site, crash_site = (with_symbols(f, table) for f in shown[i])
        oc = p.outcome or Outcome("harness-error", None, "no result")
        replay = None
        if oc.class_name in BUG_CLASSES:
            replay = replay_command(point_spec(run.spec, i, persistent), run.options, run.argv)
        out.append(SweepPoint(i, p.function, p.size, site, caller, oc, p.exit_status, p.method, replay, crash_site))
    by_class, forked = count_classes(out, CLASSES)
    sites = summarize_sites(out, ("crash", "abort", "hang", "leak", "harness-error", "clean-error", "absorbed"),
                            lambda p: str(p.site) if p.site else (str(p.caller) if p.caller else "?"))
    return SweepReport(tuple(run.argv), run.target.path, run.cwd or os.getcwd(), run.spec.cli_args(), persistent,
                       unique_stacks, jobs, baseline, baseline.counted_total, len(out), forked, len(out) - forked,
                       by_class.get("not-reached", 0), duplicates, dict(run.fallbacks), by_class, sites, tuple(out),
                       tuple(run.warnings), round(elapsed, 3), interrupted)
