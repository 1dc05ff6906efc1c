"""Sweep: fail each eligible file-system call in turn, check what the target left, classify.

Before every point the state folder (``--state``) is put back as it was, so
every point starts from the same files; after it, ``--check`` judges what
the target left. Points run one at a time (they share the folder).

Fork mode (default with ``--scope root``): the target runs once up to its
first eligible call, where every point starts out the same, and waits there;
for each point mltools puts the state folder back as it was at that moment
and the waiting process forks a child that fails the point's call. This
saves the target's start-up (``import torch``, data loading, the training
steps before the first checkpoint) for every point but the first. It is not
forking at the failing call itself, as malloc-fail does: a child shares its
parent's files and open file descriptions, so what a child writes would
change what the parent does next. The waiting process refuses (and every
point is re-run) when it has more than one thread (forking then can deadlock
the child) or holds a file of the state folder open (putting the folder back
would leave it holding the old file).
"""
from __future__ import annotations

import os
import select
import time
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple

from mltools import _proc
from mltools.errors import MltoolsError, UsageError
from mltools.iofail.config import IoFailSpec, IoRunOptions
from mltools.iofail.outcome import BUG_CLASSES, CLASSES, CheckResult, Outcome, classify
from mltools.iofail.report import IoFailure, calls_of, failures_of, site_of
from mltools.iofail.run import direct_io_notes, is_cpython, pystack_dir, replay_command, run_check, run_raw
from mltools.iofail.state import StateFolder
from mltools.preload.outcome import decode_wait_status
from mltools.preload.records import (ChannelReader, Frame, Records, first_failure_by_pid, parse_records,
                                     parse_wait_status, user_frame)
from mltools.preload.runner import RawRun, Stdin, private_dir, require_handshake, run_plain
from mltools.preload.sweep import (ProgressFn, SiteSummary, SweepRun, baseline_total, baseline_warnings,
                                   check_against_plain, child_stderr, count_classes, first_not_reached,
                                   not_reached, point_spec, run_points, summarize_sites, until_not_reached,
                                   use_fork_mode)
from mltools.preload.symbols import symbolize, with_symbols

__all__ = ["sweep", "IoSweepReport", "IoSweepPoint", "IoBaseline"]


@dataclass(frozen=True)
class IoSweepPoint:
    index: int
    function: Optional[str]          # the call family that failed
    path: Optional[str]
    path2: Optional[str]
    errno_name: Optional[str]
    short: bool
    site: str                        # the innermost Python frame, or the first frame outside libc
    caller: Optional[Frame]
    python_stack: Tuple[str, ...]
    outcome: Outcome
    exit_status: int
    check: Optional[CheckResult]
    method: str                      # "fork" or "rerun"
    replay: Optional[str]            # for the bug classes
    crash_site: Optional[Frame]


@dataclass(frozen=True)
class IoBaseline:
    exit_status: int
    plain_exit_status: int           # the same run without the shim
    eligible_total: int
    elapsed_s: float
    check_before: Optional[CheckResult]   # on the state as it was
    check_after: Optional[CheckResult]    # after the baseline (must pass)


@dataclass(frozen=True)
class IoSweepReport:
    SCHEMA: ClassVar[str] = "mltools.io_fail.sweep"
    SCHEMA_VERSION: ClassVar[int] = 1

    argv: Tuple[str, ...]
    program: str
    cwd: str
    filters: Tuple[str, ...]
    persistent: bool
    check: Optional[str]
    state: Optional[str]
    baseline: IoBaseline
    points_total: int                # eligible calls in the baseline
    points_run: int
    forked: int
    rerun: int
    not_reached: int
    fork_mode: str                   # "used", "off", or why it could not be used
    by_class: Dict[str, int]
    sites: Tuple[SiteSummary, ...]
    points: Tuple[IoSweepPoint, ...]
    warnings: Tuple[str, ...]
    elapsed_s: float
    interrupted: bool = False


def _filters_only(spec: IoFailSpec) -> IoFailSpec:
    return IoFailSpec(only=spec.only, path=spec.path, errno_name=spec.errno_name, short_write=spec.short_write)


@dataclass
class _Point:
    index: int
    failure: Optional[IoFailure] = None
    outcome: Optional[Outcome] = None
    exit_status: int = 0
    check: Optional[CheckResult] = None
    method: str = "rerun"
    crash_frames: Tuple[Frame, ...] = ()


_FORK_REFUSALS = {"threads": "the process had more than one thread at its first eligible call",
                  "open-file-in-state": "the process held a file of the state folder open at its first "
                                        "eligible call",
                  "no-proc": "/proc/self/fd could not be read"}


class _Sweep(SweepRun):
    def __init__(self, argv, spec, options, *, persistent, point_timeout_s, progress, cwd, stdin, folder):
        super().__init__(argv, spec, options, _filters_only(spec), persistent=persistent,
                         point_timeout_s=point_timeout_s, progress=progress, cwd=cwd, stdin=stdin)
        self.folder = folder
        self.warnings.extend(direct_io_notes(self.target))
        self.cpython = is_cpython(self.target)
        self.state: Optional[StateFolder] = None
        self.before_passed: Optional[bool] = None

    def put_back(self) -> None:
        if self.state is not None:
            self.state.restore()

    def baseline(self) -> Tuple[IoBaseline, RawRun]:
        self.status("the checks, a plain run and the baseline (nothing failing)")
        before = run_check(self.options, self.cwd)
        self.before_passed = before.passed if before else None
        if before is not None and not before.passed:
            self.warnings.append("the check fails on the state before any run (" + (before.detail or "no detail")
                                 + "): there is no good state to lose, so a failed point is 'reported'")
        plain = run_plain(self.argv, self.target, folder=self.folder, timeout_s=self.options.timeout_s,
                          cwd=self.cwd, stdin=self.stdin)
        self.put_back()
        base = run_raw(self.argv, self.filters, self.options, self.target, folder=self.folder, cpython=self.cpython,
                       cwd=self.cwd, stdin=self.stdin, extra_env={"MLTOOLS_IOF_TRACE": "1"})
        after = run_check(self.options, self.cwd)
        self.put_back()
        require_handshake(base, self.target)
        check_against_plain("io-fail", plain.exit_status, plain.timed_out, base.exit_status, base.timed_out,
                            self.options.timeout_s)
        if after is not None and not after.passed:
            raise MltoolsError("the check fails after a run with nothing failing ("
                               + (after.detail or f"exit {after.exit_status}") + "): fix the check or the target first")
        total = baseline_total(base)
        again = run_raw(self.argv, self.filters, self.options, self.target, folder=self.folder, cpython=self.cpython,
                        cwd=self.cwd, stdin=self.stdin)
        self.put_back()
        self.warnings.extend(baseline_warnings(base, total, again))
        if total == 0:
            self.warnings.append("no eligible call in the baseline: nothing matched --path/--only, or the "
                                 "program's I/O does not go through the C library (static, Go, io_uring, raw "
                                 "system calls)")
        return IoBaseline(base.exit_status, plain.exit_status, total, round(base.elapsed_s, 4), before, after), base

    def _point(self, index: int, method: str, returncode: int, timed_out: bool, stderr: str,
               failure: Optional[IoFailure], records: Records, pids: Sequence[int]) -> _Point:
        check = run_check(self.options, self.cwd)
        pt = _Point(index, failure=failure, method=method, check=check)
        pt.crash_frames = next((k.frames for k in records.crashes if k.pid in pids), ())
        pt.outcome = classify(returncode, timed_out, stderr, failure is not None, check, self.before_passed)
        pt.exit_status = 124 if timed_out else _proc.exit_status(returncode)
        return pt

    def rerun_one(self, index: int) -> _Point:
        self.put_back()
        opts = replace(self.options, timeout_s=self.point_timeout_s)
        raw = run_raw(self.argv, point_spec(self.filters, index, self.persistent), opts, self.target,
                      folder=self.folder, cpython=self.cpython, cwd=self.cwd, stdin=self.stdin,
                      extra_env={"MLTOOLS_IOF_NO_CORE": "1"})
        if not raw.records.processes:
            self.put_back()
            return _Point(index, outcome=Outcome("harness-error", None, "no handshake from the shim"),
                          exit_status=raw.exit_status)
        roots = [p.pid for p in raw.records.processes if p.injects]
        fails = [f for f in failures_of(raw.records, pystack_dir(self.folder)) if f.pid in roots]
        failure = min(fails, key=lambda f: f.index) if fails else None
        pt = self._point(index, "rerun", raw.returncode, raw.timed_out, raw.stderr.decode("utf-8", "replace"),
                         failure, raw.records, roots)
        self.put_back()
        return pt

    def fork_pass(self, indices: Sequence[int], done_before: int, total: int) -> Tuple[Dict[int, _Point], bool, str]:
        """Points run in children of the process waiting at its first eligible call.
        Returns (points, interrupted, fork mode: "used" or why not)."""
        from mltools._lifecycle import thread_pool

        zdir = os.path.join(self.folder, "zygote")
        os.mkdir(zdir)
        ctl, ack = os.path.join(zdir, "ctl"), os.path.join(zdir, "ack")
        os.mkfifo(ctl, 0o600)
        os.mkfifo(ack, 0o600)
        # both ends held here: the target's opens never block, and its reads see EOF only when we are gone
        ctl_fd = os.open(ctl, os.O_RDWR)
        ack_fd = os.open(ack, os.O_RDWR)
        extra = {"MLTOOLS_IOF_ZYGOTE": zdir, "MLTOOLS_IOF_STATE_DIR": self.options.state_dir or "",
                 "MLTOOLS_IOF_FORK_TIMEOUT_MS": str(int(self.point_timeout_s * 1000)), "MLTOOLS_IOF_NO_CORE": "1"}
        if self.persistent:
            extra["MLTOOLS_IOF_PERSISTENT"] = "1"
        points: Dict[int, _Point] = {}
        started: Dict[str, str] = {}
        acks = _AckReader(ack_fd)
        budget = self.options.timeout_s + len(indices) * (self.point_timeout_s + 5)
        try:
            with thread_pool(1) as pool:
                self.put_back()
                fut = pool.submit(run_raw, self.argv, self.filters, self.options, self.target, folder=self.folder,
                                  cpython=self.cpython, cwd=self.cwd, stdin=self.stdin, extra_env=extra,
                                  timeout_s=budget, on_start=lambda path: started.setdefault("records", path))
                first = acks.line(fut, self.options.timeout_s)
                if first is None or not first.startswith("ready"):
                    # refused: the process runs on with nothing failing; no answer: it is ended
                    _finish(fut, 0 if first is None else self.options.timeout_s)
                    why = first.split()[1] if first and first.startswith("refused") else "no-first-call"
                    return points, False, _FORK_REFUSALS.get(why, "the run never reached an eligible call")
                at_fork = self.state.snapshot("zygote-state") if self.state else None
                reader = ChannelReader(started["records"])
                for k in indices:
                    if at_fork is not None:
                        at_fork.restore()
                    os.write(ctl_fd, f"P {k}\n".encode())
                    line = acks.line(fut, self.point_timeout_s + 30)
                    if line is None or not line.startswith("C "):
                        self.warnings.append(f"the fork point stopped answering at point {k}: the rest is re-run")
                        break
                    _, _, status, timed_out, child = line.split()[:5]
                    records = parse_records(reader.read())
                    child_pid = int(child)
                    failure = first_failure_by_pid(failures_of(records, pystack_dir(self.folder))).get(child_pid)
                    stderr = child_stderr(zdir, k)
                    rc = decode_wait_status(parse_wait_status(status))     # a lost child: -9
                    pt = self._point(k, "fork", rc, timed_out == "1", stderr, failure, records, [child_pid])
                    points[k] = pt
                    if self.progress is not None:
                        self.progress(done_before + len(points), total, "forked children")
                    if not_reached(pt):
                        break
                os.write(ctl_fd, b"Q\n")
                _finish(fut, 10.0)
        except KeyboardInterrupt:
            return points, True, "used"
        finally:
            os.close(ctl_fd)
            os.close(ack_fd)
            self.put_back()
        return points, False, "used"


def _finish(fut: Future, wait_s: float) -> None:
    """Let the run end by itself within ``wait_s``, else end it (and what it started)."""
    from concurrent.futures import TimeoutError as FutureTimeout
    from mltools._lifecycle import end_owned_processes

    try:
        fut.result(timeout=wait_s)
    except FutureTimeout:
        end_owned_processes(grace_s=0.5)
        fut.result()


class _AckReader:
    """Lines from the fork point's ack FIFO, waiting while the run is alive."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = b""

    def line(self, fut: Future, timeout_s: float) -> Optional[str]:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buf:
            if time.monotonic() > deadline:
                return None
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                self.buf += os.read(self.fd, 4096)
            elif fut.done():
                return None       # the run ended without (another) answer
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()


def sweep(argv: Sequence[str], spec: IoFailSpec, options: IoRunOptions, *, persistent: bool = False,
          fork: Optional[bool] = None, max_points: Optional[int] = None, point_timeout_s: float = 60.0,
          progress: ProgressFn = None, cwd: Optional[str] = None, stdin: Stdin = Stdin()) -> IoSweepReport:
    """Sweep ``argv``; the state folder is put back as it was at the end, interrupted or not."""
    if spec.injects:
        raise UsageError("--sweep chooses the failing index itself: drop --after/--fail-at")
    use_fork = use_fork_mode(fork, options.scope)
    start = time.perf_counter()
    points: Dict[int, _Point] = {}
    interrupted = False
    fork_mode = "off"
    with private_dir("iof") as folder:
        run = _Sweep(argv, spec, options, persistent=persistent, point_timeout_s=point_timeout_s,
                     progress=progress, cwd=cwd, stdin=stdin, folder=folder)
        if options.state_dir:
            run.state = StateFolder(options.state_dir, folder)
        try:
            baseline, base_raw = run.baseline()
            traced = {c.index: c for c in calls_of(base_raw.records)}
            indices = list(range(1, baseline.eligible_total + 1))
            if max_points is not None:
                indices = indices[:max_points]
            else:
                indices.append(baseline.eligible_total + 1)      # the stop condition: must be not-reached
            total = len(indices)
            if use_fork and baseline.eligible_total:
                found, interrupted, fork_mode = run.fork_pass(indices, 0, total)
                points.update(found)
                if fork_mode != "used":
                    run.warnings.append(f"fork mode not used ({fork_mode}): every point was re-run")
            if not interrupted:
                stop = first_not_reached(points)
                todo = [i for i in indices if i not in points and (stop is None or i < stop)]
                found, interrupted = run_points(
                    todo, run.rerun_one, jobs=1, not_reached=not_reached,
                    progress=progress, done_before=len(points), total=total, detail="re-runs")
                points.update(found)
        finally:
            run.put_back()
    points = until_not_reached(points)
    return _report(run, baseline, points, traced, persistent, fork_mode, interrupted, time.perf_counter() - start)


def _report(run: _Sweep, baseline: IoBaseline, points: Dict[int, _Point], traced, persistent: bool,
            fork_mode: str, interrupted: bool, elapsed: float) -> IoSweepReport:
    # the frames shown (the caller, the first frame outside libc and the shims, where it died),
    # named in one pass; none when interrupted: leave at once, with module+offset
    shown = {}
    for i, p in points.items():
        call = traced.get(i)
        caller = p.failure.caller if p.failure else (call.caller if call else None)
        frames = p.failure.frames if p.failure else ()
        shown[i] = (caller, user_frame(frames or ((caller,) if caller else ())),
                    user_frame(p.crash_frames) if p.crash_frames else None)
    table: Dict = {}
    if not interrupted:
        faulting = [p.crash_frames[0] for p in points.values() if p.crash_frames]
        table = symbolize([f for trio in shown.values() for f in trio], exact=faulting)
    out: List[IoSweepPoint] = []
    for i in sorted(points):
        p = points[i]
        f = p.failure
        call = traced.get(i)
        caller, user_site, crash_site = (with_symbols(x, table) for x in shown[i])
        stack = f.python_stack if f else ()
        site = site_of(stack, user_site, caller)
        replay = None
        if p.outcome.class_name in BUG_CLASSES:
            replay = replay_command(point_spec(run.spec, i, persistent), run.options, run.argv)
        out.append(IoSweepPoint(
            i, f.function if f else (call.function if call else None), f.path if f else (call.path if call else None),
            f.path2 if f else (call.path2 if call else None), f.errno_name if f else None, f.short if f else False,
            site, caller, stack, p.outcome, p.exit_status, p.check, p.method, replay, crash_site))
    by_class, forked = count_classes(out, CLASSES)
    sites = summarize_sites(out, ("crash", "hang", "silent-corruption", "old-state-lost", "harness-error",
                                  "reported", "recovered", "completed"), lambda p: p.site)
    return IoSweepReport(tuple(run.argv), run.target.path, run.cwd or os.getcwd(), run.spec.cli_args(), persistent,
                         run.options.check_text, run.options.state_dir, baseline, baseline.eligible_total, len(out),
                         forked, len(out) - forked, by_class.get("not-reached", 0), fork_mode, by_class, sites,
                         tuple(out), tuple(run.warnings), round(elapsed, 3), interrupted)
