"""One run of a target under the malloc-fail shim: environment, handshake, report."""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from typing import ClassVar, Dict, Mapping, Optional, Sequence, Tuple

from mltools import _native
from mltools.errors import MltoolsError, UsageError
from mltools.mallocfail.config import FUNCTIONS, FailSpec, RunOptions
from mltools.mallocfail.outcome import Outcome, classify
from mltools.mallocfail.report import InjectedFailure, failures_of
from mltools.preload.outcome import counting_outcome
from mltools.preload.records import Frame, ProcessRecord
from mltools.preload.runner import (RawRun, Shim, ShimNotLoaded, Stdin, dropped_notes, lost_shim_messages,
                                    private_dir, report_fields, require_handshake, run_under_shim, sum_counts)
from mltools.preload.symbols import symbolize_failures
from mltools.preload.target import Target, allocator_libs, resolve_target

__all__ = ["SHIM_NAME", "shim_path", "shim", "build_env", "run_raw", "run_target", "RunReport", "CallCounts",
           "ShimNotLoaded", "replay_command", "RawRun", "require_handshake"]

SHIM_NAME = "mallocfail._shim"


def shim_path() -> str:
    return _native.shared_object_path(SHIM_NAME)


def shim() -> Shim:
    return Shim("malloc-fail", "MLTOOLS_MF_", shim_path())


def build_env(spec: FailSpec, options: RunOptions, target: Target,
              base_env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The MLTOOLS_MF_* variables (and PYTHONMALLOC, ASAN_OPTIONS) for one run."""
    env = os.environ if base_env is None else base_env
    added: Dict[str, str] = {"MLTOOLS_MF_SCOPE": options.scope, "MLTOOLS_MF_FORWARD": options.forward,
                             "MLTOOLS_MF_MAX_RECORDS": str(options.max_records)}
    added.update(spec.shim_env())
    if options.python_malloc:
        added["PYTHONMALLOC"] = "malloc"
    if any(lib.startswith("libasan") for lib in allocator_libs(target)):
        # the shim comes first in the preload list, which ASan checks for
        asan = env.get("ASAN_OPTIONS", "")
        if "verify_asan_link_order" not in asan:
            added["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    added.update(dict(options.extra_env))
    return added


def check_allocator(target: Target, options: RunOptions) -> None:
    libs = allocator_libs(target)
    if libs and options.forward == "libc":
        raise UsageError(f"{target.path} links {', '.join(libs)}, which replaces malloc: "
                         "use --forward next so that the shim forwards to it (with ASan, mltools also sets "
                         "ASAN_OPTIONS=verify_asan_link_order=0)")


def run_raw(argv: Sequence[str], spec: FailSpec, options: RunOptions, target: Target, *, folder: str,
            cwd: Optional[str] = None, extra_env: Optional[Mapping[str, str]] = None,
            stdin: Stdin = Stdin(), timeout_s: Optional[float] = None, poll=None) -> RawRun:
    """Run ``argv`` once under the shim and collect its records."""
    check_allocator(target, options)
    env = build_env(spec, options, target)
    env.update(extra_env or {})
    return run_under_shim(shim(), argv, target, env, folder=folder, cwd=cwd, stdin=stdin,
                          timeout_s=options.timeout_s if timeout_s is None else timeout_s, poll=poll)


@dataclass(frozen=True)
class CallCounts:
    function: str
    calls: int         # every call the shim saw
    counted: int       # calls that passed the filters and got an index
    failed: int        # calls made to fail


@dataclass(frozen=True)
class RunReport:
    SCHEMA: ClassVar[str] = "mltools.malloc_fail"
    SCHEMA_VERSION: ClassVar[int] = 2

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
    failures: Tuple[InjectedFailure, ...]   # detailed records (at most --max-records per process)
    crash_site: Optional[Frame]             # where an injecting process died of a signal
    crash_frames: Tuple[Frame, ...]
    processes: Tuple[ProcessRecord, ...]    # every process the shim loaded into, with its own counts
    replay: str
    notes: Tuple[str, ...] = ()


def replay_command(spec: FailSpec, options: RunOptions, argv: Sequence[str]) -> str:
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


def run_target(argv: Sequence[str], spec: FailSpec, options: RunOptions, cwd: Optional[str] = None,
               stdin: Stdin = Stdin()) -> Tuple[RunReport, RawRun]:
    """Run the target once with ``spec``; raise ShimNotLoaded without a handshake."""
    if not argv:
        raise MltoolsError("no program given")
    target = resolve_target(argv[0], options.target_exe)
    with private_dir("mf") as folder:
        raw = run_raw(argv, spec, options, target, folder=folder, cwd=cwd, stdin=stdin)
    require_handshake(raw, target)
    injecting = [p for p in raw.records.processes if p.injects]
    recorded = failures_of(raw.records)
    counts, counted_total, failed_total = sum_counts(injecting, FUNCTIONS, CallCounts, len(recorded))
    failures = symbolize_failures(recorded)
    stderr = raw.stderr.decode("utf-8", "replace")
    outcome = classify(raw.returncode, raw.timed_out, stderr, injected=failed_total > 0) \
        if spec.injects else counting_outcome(raw.timed_out)
    notes = list(run_notes(raw, injecting, options))
    report = RunReport(
        argv=tuple(argv), spec=spec, scope=options.scope, forward=options.forward, outcome=outcome, counts=counts,
        counted_total=counted_total, failures_injected=failed_total, failures=tuple(failures),
        replay=replay_command(spec, options, argv), notes=tuple(notes), **report_fields(raw, target, injecting))
    return report, raw


def run_notes(raw: RawRun, injecting: Sequence[ProcessRecord], options: RunOptions) -> Tuple[str, ...]:
    notes = list(lost_shim_messages(raw.records))
    if raw.returncode >= 0 and not raw.timed_out and not any(p.exited_normally for p in injecting):
        notes.append("the target exited without the shim's exit record (it called _exit or exec'd): "
                     "counts may be incomplete")
    if options.scope == "tree":
        # every tree process counts its own calls since it started; the shared counter is the check
        shared = max((p.exit_values.get("index", 0) for p in injecting), default=0)
        own = sum(p.counted_total for p in injecting)
        if all(p.exited_normally for p in injecting) and shared != own:
            notes.append(f"the tree's shared counter reached {shared}, its processes report {own} "
                         "counted calls together (a process ended without its exit record?)")
    notes.extend(dropped_notes(raw.records))
    return tuple(notes)
