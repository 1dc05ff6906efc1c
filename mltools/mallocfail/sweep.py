"""Sweep: fail each counted allocation in turn and classify what happens.

A baseline run counts the calls (N). Then index 1, 2, … N each fails once
(``persistent``: from there on), and the sweep stops at the first index that
is ``not-reached``. Two ways to run a point:

- fork mode (default where safe): the target runs once; at each index the
  shim forks, the child gets the failure and the parent waits for it, then
  goes on. The shim falls back (an ``S`` record) when the caller is inside
  libc or the loader, or the process has more than one thread: forking while
  libc holds an internal lock can deadlock the child. Those points, and any
  the single run did not reach, are re-run.
- re-run mode: one fresh process per index, in parallel over the cores, each
  in its own temporary directory and with its own timeout.
"""
from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

from mltools import _proc
from mltools._sysfs import usable_cpus
from mltools.errors import MltoolsError, UsageError
from mltools.mallocfail.config import FailSpec, RunOptions
from mltools.mallocfail.outcome import BUG_CLASSES, CLASSES, Outcome, classify
from mltools.mallocfail.report import Frame, symbolize, user_frame, with_symbols
from mltools.mallocfail.run import RawRun, replay_command, require_handshake, run_raw
from mltools.mallocfail.target import resolve_target


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
class SiteSummary:
    class_name: str
    reason: Optional[str]
    site: str
    points: int
    first_index: int
    replay: Optional[str]
    crash_site: Optional[str]


@dataclass(frozen=True)
class Baseline:
    exit_status: int
    counted_total: int
    live_blocks: Optional[int]
    elapsed_s: float


@dataclass(frozen=True)
class SweepReport:
    SCHEMA: ClassVar[str] = "mltools.malloc_fail.sweep"
    SCHEMA_VERSION: ClassVar[int] = 1

    argv: Tuple[str, ...]
    program: str
    filters: Tuple[str, ...]
    persistent: bool
    unique_stacks: bool
    jobs: int
    baseline: Baseline
    points_total: int              # counted calls in the baseline
    points_tested: int
    duplicates_skipped: int
    forked: int
    rerun: int
    by_class: Dict[str, int]
    sites: Tuple[SiteSummary, ...]
    points: Tuple[SweepPoint, ...]
    elapsed_s: float


def _filters_only(spec: FailSpec) -> FailSpec:
    return FailSpec(min_size=spec.min_size, max_size=spec.max_size, only=spec.only,
                    per_thread=spec.per_thread)


def _point_spec(base: FailSpec, index: int, persistent: bool) -> FailSpec:
    if persistent:
        return replace(base, after=index - 1)
    return replace(base, fail_at=index)


def _decode_status(status: int) -> int:
    """A waitpid status as a Popen return code (-N for signal N)."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return -9


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


def sweep(argv: Sequence[str], spec: FailSpec, options: RunOptions, *, persistent: bool = False,
          jobs: Optional[int] = None, fork: Optional[bool] = None, unique_stacks: bool = False,
          max_points: Optional[int] = None, point_timeout_s: float = 20.0,
          progress: Optional[Callable[[int, int], None]] = None) -> SweepReport:
    """Sweep ``argv``. ``fork=None`` uses fork mode when the scope is ``root``."""
    if spec.injects:
        raise UsageError("--sweep chooses the failing index itself: drop --after/--fail-at/--probability")
    import time
    start = time.perf_counter()
    jobs = jobs or usable_cpus()
    target = resolve_target(argv[0], options.target_exe)
    filters = _filters_only(spec)
    use_fork = (options.scope == "root") if fork is None else fork
    # no core files from hundreds of aborting runs
    options = replace(options, extra_env=tuple(options.extra_env) + (("MLTOOLS_MF_NO_CORE", "1"),))
    if use_fork and options.scope != "root":
        raise UsageError("fork mode needs --scope root")

    with tempfile.TemporaryDirectory(prefix="mltools-mf-sweep-") as work:
        base_cwd = os.path.join(work, "baseline")
        os.mkdir(base_cwd)
        base_raw = run_raw(argv, filters, options, target, cwd=base_cwd,
                           extra_env={"MLTOOLS_MF_TRACE": "1"} if unique_stacks else None)
        require_handshake(base_raw, target)
        if base_raw.timed_out:
            raise MltoolsError(f"the baseline run (no failure) timed out after {options.timeout_s:g} s")
        roots = [p for p in base_raw.records.processes if p.injects]
        if not any(p.exited_normally for p in roots):
            raise MltoolsError(f"the baseline run (no failure) did not exit normally "
                               f"(status {base_raw.exit_status}): fix that first")
        total = sum(p.counted_total for p in roots)
        live = sum(p.live_blocks or 0 for p in roots)
        baseline = Baseline(base_raw.exit_status, total, live, round(base_raw.elapsed_s, 4))

        indices = list(range(1, total + 1))
        duplicates = 0
        trace_frames: Dict[int, Tuple[Frame, ...]] = {}
        if unique_stacks:
            root_pids = {p.pid for p in roots}
            seen = set()
            keep = []
            for t in base_raw.records.traces:
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
            indices.append(total + 1)     # confirms the stop condition: must be not-reached

        points: Dict[int, _Point] = {}
        if use_fork and indices:
            # children run side by side only for a target that never starts
            # processes of its own: its wait() calls could otherwise reap ours
            fork_jobs = jobs if len(base_raw.records.processes) == 1 else 1
            points.update(_fork_pass(argv, filters, options, target, work, indices, persistent,
                                     baseline, point_timeout_s, fork_jobs))
        todo = [i for i in indices if i not in points]
        forked = len(points)
        points.update(_rerun_pass(argv, filters, options, target, work, todo, persistent, baseline,
                                  point_timeout_s, jobs, progress))

    # symbolize every site in one batch per module
    all_frames: List[Frame] = []
    for p in points.values():
        if p.caller:
            all_frames.append(p.caller)
        all_frames.extend(p.frames)
        all_frames.extend(p.crash_frames)
    table = symbolize(all_frames)
    out: List[SweepPoint] = []
    for i in sorted(points):
        p = points[i]
        frames = tuple(with_symbols(f, table) for f in p.frames)
        if not frames and i in trace_frames:
            frames = tuple(with_symbols(f, table) for f in trace_frames[i])
        caller = with_symbols(p.caller, table)
        site = user_frame(frames) if frames else (user_frame((caller,)) if caller else None)
        oc = p.outcome or Outcome("harness-error", None, "no result")
        replay = None
        if oc.class_name in BUG_CLASSES:
            replay = replay_command(_point_spec(spec, i, persistent), options, argv)
        crash_site = user_frame(tuple(with_symbols(f, table) for f in p.crash_frames)) if p.crash_frames else None
        out.append(SweepPoint(i, p.function, p.size, site, caller, oc, p.exit_status, p.method, replay,
                              crash_site))
    by_class = {c: 0 for c in CLASSES}
    for p in out:
        by_class[p.outcome.class_name] += 1
    sites = _summarize(out)
    return SweepReport(tuple(argv), target.path, spec.cli_args(), persistent, unique_stacks, jobs, baseline,
                       total, len([p for p in out if p.outcome.class_name != "not-reached"]), duplicates, forked,
                       len(out) - forked, {k: v for k, v in by_class.items() if v}, sites, tuple(out),
                       round(time.perf_counter() - start, 3))


def _summarize(points: Sequence[SweepPoint]) -> Tuple[SiteSummary, ...]:
    groups: Dict[Tuple[str, Optional[str], str], List[SweepPoint]] = {}
    for p in points:
        if p.outcome.class_name == "not-reached":
            continue
        site = str(p.site) if p.site else (str(p.caller) if p.caller else "?")
        groups.setdefault((p.outcome.class_name, p.outcome.reason, site), []).append(p)
    rank = {c: i for i, c in enumerate(("crash", "abort", "hang", "leak", "harness-error", "clean-error",
                                        "absorbed"))}
    rows = []
    for (cls, reason, site), ps in groups.items():  # noqa: B007
        first = min(ps, key=lambda x: x.index)
        rows.append(SiteSummary(cls, reason, site, len(ps), first.index, first.replay,
                                str(first.crash_site) if first.crash_site else None))
    rows.sort(key=lambda r: (rank.get(r.class_name, 99), r.first_index))
    return tuple(rows)


def _fork_pass(argv, filters, options, target, work, indices, persistent, baseline,
               point_timeout_s, fork_jobs=1) -> Dict[int, _Point]:
    # children write their stderr and get a cwd here: tmpfs when there is one
    # (creating files on an overlay /tmp cost more than the fork itself, measured)
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    fork_tmp = tempfile.TemporaryDirectory(prefix="mltools-mf-fork-", dir=shm)
    fork_dir = fork_tmp.name
    try:
        return _fork_pass_in(argv, filters, options, target, work, fork_dir, indices, persistent, baseline,
                             point_timeout_s, fork_jobs)
    finally:
        fork_tmp.cleanup()


def _fork_pass_in(argv, filters, options, target, work, fork_dir, indices, persistent, baseline,
                  point_timeout_s, fork_jobs) -> Dict[int, _Point]:
    run_cwd = os.path.join(work, "fork-parent")
    os.mkdir(run_cwd)
    wanted = set(indices)
    extra = {"MLTOOLS_MF_FORK_DIR": fork_dir, "MLTOOLS_MF_FIRST": str(indices[0]),
             "MLTOOLS_MF_LAST": str(indices[-1]),
             "MLTOOLS_MF_FORK_TIMEOUT_MS": str(int(point_timeout_s * 1000)),
             "MLTOOLS_MF_FORK_JOBS": str(max(1, fork_jobs)),
             "MLTOOLS_MF_MAX_RECORDS": str(len(indices) + 16)}
    if persistent:
        extra["MLTOOLS_MF_PERSISTENT"] = "1"
    budget = baseline.elapsed_s * 4 + 10 + len(indices) * (point_timeout_s + 0.05)
    opts = replace(options, timeout_s=max(options.timeout_s, budget))
    # only the chosen indices fork (a bitmap, bit i-1 for index i)
    bitmap = bytearray((indices[-1] + 7) // 8)
    for i in indices:
        bitmap[(i - 1) >> 3] |= 1 << ((i - 1) & 7)
    set_path = os.path.join(work, "fork-set")
    with open(set_path, "wb") as fh:
        fh.write(bytes(bitmap))
    set_fd = os.open(set_path, os.O_RDONLY)
    try:
        extra["MLTOOLS_MF_FORK_SET_FD"] = str(set_fd)
        raw = run_raw(argv, filters, opts, target, cwd=run_cwd, extra_env=extra, extra_fds=(set_fd,))
    finally:
        os.close(set_fd)
    failures_by_pid = {}
    for f in raw.records.failures:
        failures_by_pid.setdefault(f.pid, f)
    out: Dict[int, _Point] = {}
    for fp in raw.records.fork_points:
        if fp.index not in wanted or fp.child_pid is None or fp.wait_status is None:
            continue
        if fp.wait_status == (2 ** 32 - 1):
            continue
        pt = _Point(fp.index, method="fork")
        f = failures_by_pid.get(fp.child_pid)
        if f is not None:
            pt.function, pt.size, pt.caller, pt.frames = f.function, f.size, f.caller, f.frames
        rc = _decode_status(fp.wait_status)
        try:
            with open(os.path.join(fork_dir, f"{fp.index}.err"), "rb") as fh:
                err = fh.read().decode("utf-8", "replace")
        except OSError:
            err = ""
        pt.crash_frames = next((k.frames for k in raw.records.crashes if k.pid == fp.child_pid), ())
        x = raw.records.raw_exit.get(fp.child_pid)
        child_live = (x["allocs"] - x["frees"]) if x else None
        pt.outcome = classify(rc, fp.timed_out, err, injected=f is not None,
                              live_blocks=child_live, baseline_live_blocks=baseline.live_blocks)
        pt.exit_status = 124 if fp.timed_out else _proc.exit_status(rc)
        out[fp.index] = pt
    return out


def _rerun_pass(argv, filters, options, target, work, todo, persistent, baseline, point_timeout_s, jobs,
                progress) -> Dict[int, _Point]:
    out: Dict[int, _Point] = {}
    if not todo:
        return out
    opts = replace(options, timeout_s=point_timeout_s)
    stop_at = [None]

    def one(index: int) -> _Point:
        if stop_at[0] is not None and index > stop_at[0]:
            return _Point(index, outcome=Outcome("not-reached", None, "beyond the last reached index"))
        cwd = os.path.join(work, f"run-{index}")
        os.mkdir(cwd)
        raw: RawRun = run_raw(argv, _point_spec(filters, index, persistent), opts, target, cwd=cwd)
        pt = _Point(index)
        if not raw.records.processes:
            pt.outcome = Outcome("harness-error", None, "no handshake from the shim")
            pt.exit_status = raw.exit_status
            return pt
        roots = {p.pid: p for p in raw.records.processes if p.injects}
        fails = [f for f in raw.records.failures if f.pid in roots]
        if fails:
            f = min(fails, key=lambda x: x.index)
            pt.function, pt.size, pt.caller, pt.frames = f.function, f.size, f.caller, f.frames
        pt.crash_frames = next((k.frames for k in raw.records.crashes if k.pid in roots), ())
        live = sum(p.live_blocks or 0 for p in roots.values()) if all(
            p.exited_normally for p in roots.values()) else None
        pt.outcome = classify(raw.returncode, raw.timed_out, raw.stderr.decode("utf-8", "replace"),
                              injected=bool(fails), live_blocks=live,
                              baseline_live_blocks=baseline.live_blocks)
        pt.exit_status = 124 if raw.timed_out else raw.exit_status
        if pt.outcome.class_name == "not-reached":
            if stop_at[0] is None or index < stop_at[0]:
                stop_at[0] = index
        return pt

    done = 0
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for pt in pool.map(one, todo):
            out[pt.index] = pt
            done += 1
            if progress:
                progress(done, len(todo))
    # the sweep ends at the first not-reached index
    if stop_at[0] is not None:
        out = {i: p for i, p in out.items() if i <= stop_at[0]}
    return out


