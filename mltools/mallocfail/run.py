"""One run of a target under the shim: environment, handshake, report."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import ClassVar, Dict, Mapping, Optional, Sequence, Tuple

from mltools import _native, _proc
from mltools.errors import MltoolsError, UsageError
from mltools.mallocfail.config import FUNCTIONS, FailSpec, RunOptions
from mltools.mallocfail.outcome import Outcome, classify
from mltools.mallocfail.report import (Frame, InjectedFailure, ProcessRecord, Records, parse_records,
                                       symbolize, symbolize_failures, user_frame, with_symbols)
from mltools.mallocfail.target import Target, resolve_target

SHIM_NAME = "mallocfail._shim"


class ShimNotLoaded(MltoolsError):
    """The target ran without the shim: no handshake came back."""


def shim_path() -> str:
    return _native.shared_object_path(SHIM_NAME)


@dataclass(frozen=True)
class RawRun:
    """A run's process result plus the shim's records (no symbolization)."""
    argv: Tuple[str, ...]
    cwd: str
    env_set: Dict[str, str]              # what mltools added to the environment
    returncode: int
    exit_status: int
    stdout: bytes
    stderr: bytes
    elapsed_s: float
    timed_out: bool
    records: Records


def build_env(spec: FailSpec, options: RunOptions, target: Target, report_fd: int, state_fd: int,
              base_env: Optional[Mapping[str, str]] = None, extra: Optional[Mapping[str, str]] = None
              ) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(full environment, the variables mltools set)."""
    env = dict(os.environ if base_env is None else base_env)
    for name in list(env):
        if name.startswith("MLTOOLS_MF_"):
            del env[name]
    added: Dict[str, str] = {}
    preload = shim_path()
    old = env.get("LD_PRELOAD", "").strip()
    # the shim comes first: in RTLD_NEXT mode it must sit in front of ASan or jemalloc
    added["LD_PRELOAD"] = preload + (" " + old if old else "")
    added["MLTOOLS_MF_FD"] = str(report_fd)
    added["MLTOOLS_MF_STATE_FD"] = str(state_fd)
    added["MLTOOLS_MF_SCOPE"] = options.scope
    added["MLTOOLS_MF_FORWARD"] = options.forward
    added["MLTOOLS_MF_MAX_RECORDS"] = str(options.max_records)
    if target.match:
        added["MLTOOLS_MF_TARGET"] = ",".join(target.match)
    if target.exclude:
        added["MLTOOLS_MF_EXCLUDE"] = ",".join(target.exclude)
    added.update(spec.shim_env())
    if options.python_malloc:
        added["PYTHONMALLOC"] = "malloc"
    if any(lib.startswith("libasan") for lib in target.allocator_libs):
        # the shim comes first in the preload list, which ASan checks for
        asan = env.get("ASAN_OPTIONS", "")
        if "verify_asan_link_order" not in asan:
            added["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    added.update(dict(options.extra_env))
    if extra:
        added.update(extra)
    env.update(added)
    return env, added


def check_allocator(target: Target, options: RunOptions) -> None:
    if target.allocator_libs and options.forward == "libc":
        raise UsageError(f"{target.path} links {', '.join(target.allocator_libs)}, which replaces malloc: "
                         "use --forward next so that the shim forwards to it (with ASan, mltools also sets "
                         "ASAN_OPTIONS=verify_asan_link_order=0)")


def run_raw(argv: Sequence[str], spec: FailSpec, options: RunOptions, target: Target, *,
            cwd: Optional[str] = None, extra_env: Optional[Mapping[str, str]] = None,
            base_env: Optional[Mapping[str, str]] = None, extra_fds: Sequence[int] = ()) -> RawRun:
    """Run ``argv`` once under the shim and collect its records. ``extra_fds``
    are passed on to the target too (named in ``extra_env``)."""
    check_allocator(target, options)
    with tempfile.TemporaryDirectory(prefix="mltools-mf-") as tmp:
        report_path = os.path.join(tmp, "records")
        state_path = os.path.join(tmp, "state")
        report_fd = os.open(report_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        state_fd = os.open(state_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(state_fd, 4096)
            env, added = build_env(spec, options, target, report_fd, state_fd, base_env, extra_env)
            res = _proc.run([target.path, *argv[1:]], timeout=options.timeout_s, env=env, cwd=cwd,
                            text=False, pass_fds=(report_fd, state_fd, *extra_fds))
        finally:
            os.close(report_fd)
            os.close(state_fd)
        with open(report_path, "rb") as fh:
            text = fh.read().decode("utf-8", "replace")
    records = parse_records(text)
    return RawRun(tuple(argv), cwd or os.getcwd(), added, res.returncode, res.exit_status,
                  res.stdout, res.stderr, res.elapsed_s, res.timed_out, records)


def require_handshake(raw: RawRun, target: Target) -> None:
    if not raw.records.processes:
        raise ShimNotLoaded(
            f"the shim did not load into {target.path} (no handshake): the result would prove "
            "nothing. Is it statically linked, setuid, or does it clear LD_PRELOAD?")
    if not any(p.injects for p in raw.records.processes):
        seen = ", ".join(sorted({os.path.basename(p.exe) for p in raw.records.processes}))
        raise ShimNotLoaded(
            f"the shim loaded (into {seen}) but no process ran the target ({target.description}); "
            "name it with --target-exe")


@dataclass(frozen=True)
class CallCounts:
    function: str
    calls: int         # every call the shim saw
    counted: int       # calls that passed the filters and got an index
    failed: int        # calls made to fail


@dataclass(frozen=True)
class RunReport:
    SCHEMA: ClassVar[str] = "mltools.malloc_fail"
    SCHEMA_VERSION: ClassVar[int] = 1

    argv: Tuple[str, ...]
    cwd: str
    program: str
    target: str
    spec: FailSpec
    scope: str
    forward: str
    environment_set: Dict[str, str]
    exit_status: int
    signal: Optional[str]
    timed_out: bool
    elapsed_s: float
    outcome: Outcome
    counts: Tuple[CallCounts, ...]          # summed over the injecting processes
    counted_total: int
    failures_injected: int
    failures: Tuple[InjectedFailure, ...]   # detailed records (at most --max-records)
    crash_site: Optional[Frame]             # where an injecting process died of a signal
    crash_frames: Tuple[Frame, ...]
    processes: Tuple[ProcessRecord, ...]
    replay: str
    notes: Tuple[str, ...] = ()


def _sum_counts(procs: Sequence[ProcessRecord]) -> Tuple[Tuple[CallCounts, ...], int, int]:
    rows = []
    total_failed = 0
    for fn in FUNCTIONS:
        c = sum(p.calls.get(fn, 0) for p in procs)
        n = sum(p.counted.get(fn, 0) for p in procs)
        f = sum(p.failed.get(fn, 0) for p in procs)
        total_failed += f
        rows.append(CallCounts(fn, c, n, f))
    return tuple(rows), sum(r.counted for r in rows), total_failed


def replay_command(spec: FailSpec, options: RunOptions, argv: Sequence[str]) -> str:
    import shlex
    parts = ["mltools", "malloc-fail", *spec.cli_args()]
    if options.scope != "root":
        parts += ["--scope", options.scope]
    if options.forward != "libc":
        parts += ["--forward", options.forward]
    if options.python_malloc:
        parts.append("--python-malloc")
    if options.target_exe:
        parts += ["--target-exe", options.target_exe]
    parts += ["--", *argv]
    return shlex.join(parts)


def run_target(argv: Sequence[str], spec: FailSpec, options: RunOptions,
               cwd: Optional[str] = None) -> Tuple[RunReport, RawRun]:
    """Run the target once with ``spec``; raise ShimNotLoaded without a handshake."""
    if not argv:
        raise MltoolsError("no program given")
    target = resolve_target(argv[0], options.target_exe)
    raw = run_raw(argv, spec, options, target, cwd=cwd)
    require_handshake(raw, target)
    injecting = [p for p in raw.records.processes if p.injects]
    counts, counted_total, failed_total = _sum_counts(injecting)
    # a process killed by a signal writes no X record: count its F records instead
    failed_total = max(failed_total, len(raw.records.failures))
    failures = symbolize_failures(raw.records.failures)
    crash_site, crash_frames = crash_location(raw.records, {p.pid for p in injecting})
    stderr = raw.stderr.decode("utf-8", "replace")
    outcome = classify(raw.returncode, raw.timed_out, stderr, injected=failed_total > 0) \
        if spec.injects else Outcome("not-reached" if not raw.timed_out else "hang", None,
                                     "nothing was asked to fail (a counting run)")
    from mltools._proc import ProcResult
    sig = ProcResult((), raw.returncode, "", "", 0.0, False).signal_name
    notes = []
    if raw.returncode >= 0 and not raw.timed_out and not any(p.exited_normally for p in injecting):
        notes.append("the target exited without the shim's exit record (it called _exit, or closed the "
                     "record descriptor): counts and failure records may be incomplete")
    report = RunReport(
        argv=tuple(argv), cwd=raw.cwd, program=target.path, target=target.description,
        spec=spec, scope=options.scope, forward=options.forward, environment_set=raw.env_set,
        exit_status=124 if raw.timed_out else raw.exit_status, signal=sig, timed_out=raw.timed_out,
        elapsed_s=round(raw.elapsed_s, 4), outcome=outcome, counts=counts, counted_total=counted_total,
        failures_injected=failed_total, failures=tuple(failures),
        crash_site=crash_site, crash_frames=crash_frames, processes=tuple(raw.records.processes),
        replay=replay_command(spec, options, argv), notes=tuple(notes))
    return report, raw


def crash_location(records: Records, pids) -> Tuple[Optional[Frame], Tuple[Frame, ...]]:
    """The symbolized user frame (and stack) where an injecting process died."""
    for k in records.crashes:
        if k.pid in pids:
            table = symbolize(k.frames)
            frames = tuple(with_symbols(f, table) for f in k.frames)
            return user_frame(frames), frames
    return None, ()


