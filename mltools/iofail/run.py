"""One run of a target under the io-fail shim, the check of what it left, and its report."""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from typing import ClassVar, Dict, Mapping, Optional, Sequence, Tuple

from mltools import _native, _proc
from mltools.errors import MltoolsError, ToolNotFoundError
from mltools.iofail.config import FAMILIES, IoFailSpec, IoRunOptions
from mltools.iofail.outcome import CheckResult, Outcome, classify
from mltools.iofail.report import IoFailure, failures_of
from mltools.preload.symbols import symbolize_failures
from mltools.iofail.state import StateFolder
from mltools.preload.outcome import counting_outcome, last_line
from mltools.preload.records import Frame, ProcessRecord
from mltools.preload.runner import (RawRun, Shim, Stdin, dropped_notes, lost_shim_messages, private_dir,
                                    report_fields, require_handshake, run_under_shim, sum_counts)
from mltools.preload.target import Target, direct_io, resolve_target

__all__ = ["SHIM_NAME", "shim_path", "shim", "build_env", "run_raw", "run_check", "run_target", "RunReport",
           "CallCounts", "replay_command", "pystack_dir", "direct_io_notes"]

SHIM_NAME = "iofail._shim"
_PYTHON = re.compile(r"python[0-9.]*$")


def shim_path() -> str:
    return _native.shared_object_path(SHIM_NAME)


def shim() -> Shim:
    return Shim("io-fail", "MLTOOLS_IOF_", shim_path())


def is_cpython(target: Target) -> bool:
    """A CPython interpreter (its Python stack can be dumped at a failure)."""
    from mltools.elf.reader import ElfFormatError, read_elf
    exe = target.interpreter_chain[-1] if target.interpreter_chain else target.path
    if _PYTHON.match(os.path.basename(exe)):
        return True
    info = target.elf if target.elf is not None and target.elf.path == exe else None
    try:
        return any(n.startswith("libpython") for n in (info or read_elf(exe)).needed)
    except (ElfFormatError, OSError):
        return False


def pystack_dir(folder: str) -> str:
    path = os.path.join(folder, "pystack")
    os.makedirs(path, exist_ok=True)
    return path


def build_env(spec: IoFailSpec, options: IoRunOptions, folder: str, cpython: bool) -> Dict[str, str]:
    """The MLTOOLS_IOF_* variables for one run; ``cpython``: the target is CPython (:func:`is_cpython`)."""
    env = {"MLTOOLS_IOF_SCOPE": options.scope, "MLTOOLS_IOF_MAX_RECORDS": str(options.max_records)}
    env.update(spec.shim_env())
    if cpython:
        env["MLTOOLS_IOF_PYSTACK"] = pystack_dir(folder)
    env.update(dict(options.extra_env))
    return env


def run_raw(argv: Sequence[str], spec: IoFailSpec, options: IoRunOptions, target: Target, *, folder: str,
            cpython: bool, cwd: Optional[str] = None, extra_env: Optional[Mapping[str, str]] = None,
            stdin: Stdin = Stdin(), timeout_s: Optional[float] = None, poll=None, on_start=None) -> RawRun:
    env = build_env(spec, options, folder, cpython)
    env.update(extra_env or {})
    return run_under_shim(shim(), argv, target, env, folder=folder, cwd=cwd, stdin=stdin,
                          timeout_s=options.timeout_s if timeout_s is None else timeout_s, poll=poll,
                          on_start=on_start)


def run_check(options: IoRunOptions, cwd: Optional[str] = None) -> Optional[CheckResult]:
    """The --check command (not under the shim), or None without one."""
    if not options.check:
        return None
    try:
        res = _proc.run(list(options.check), timeout=options.check_timeout_s, cwd=cwd)
    except ToolNotFoundError as exc:
        raise MltoolsError(f"--check: {exc.message}") from None
    detail = last_line(res.stderr) or last_line(res.stdout)
    if res.timed_out:
        detail = f"the check timed out after {options.check_timeout_s:g} s"
    return CheckResult(res.returncode == 0 and not res.timed_out, 124 if res.timed_out else res.exit_status,
                       detail, round(res.elapsed_s, 3), res.timed_out)


@dataclass(frozen=True)
class CallCounts:
    function: str
    calls: int         # every call of the family the shim saw
    eligible: int      # calls that passed --only/--path and got an index
    failed: int


@dataclass(frozen=True)
class RunReport:
    SCHEMA: ClassVar[str] = "mltools.io_fail"
    SCHEMA_VERSION: ClassVar[int] = 1

    argv: Tuple[str, ...]
    cwd: str
    program: str
    target: str
    spec: IoFailSpec
    scope: str
    check: Optional[str]
    state: Optional[str]
    environment_set: Dict[str, str]
    exit_status: int
    signal: Optional[str]
    timed_out: bool
    elapsed_s: float
    outcome: Outcome
    check_before: Optional[CheckResult]      # the check on the state before the run
    check_after: Optional[CheckResult]       # and on what the run left
    counts: Tuple[CallCounts, ...]           # summed over the injecting processes
    eligible_total: int
    failures_injected: int
    failures: Tuple[IoFailure, ...]
    crash_site: Optional[Frame]
    crash_frames: Tuple[Frame, ...]
    processes: Tuple[ProcessRecord, ...]
    replay: str
    notes: Tuple[str, ...] = ()


def replay_command(spec: IoFailSpec, options: IoRunOptions, argv: Sequence[str]) -> str:
    parts = ["mltools", "io-fail", *spec.cli_args()]
    if options.state_dir:
        parts += ["--state", options.state_dir]
    if options.check:
        parts += ["--check", options.check_text]
    if options.scope != "root":
        parts += ["--scope", options.scope]
    if options.target_exe:
        parts += ["--target-exe", options.target_exe]
    parts += ["--", *argv]
    return shlex.join(parts)


def direct_io_notes(target: Target) -> Tuple[str, ...]:
    reasons = direct_io(target.image, target.elf) if target.image is not None else ()
    return tuple(f"{target.path}: {why}; io-fail does not see those calls" for why in reasons)


def run_target(argv: Sequence[str], spec: IoFailSpec, options: IoRunOptions, cwd: Optional[str] = None,
               stdin: Stdin = Stdin()) -> Tuple[RunReport, RawRun]:
    """Run the target once with ``spec``, then the check. With a state folder, the
    folder is put back as it was afterwards."""
    if not argv:
        raise MltoolsError("no program given")
    target = resolve_target(argv[0], options.target_exe)
    io_notes = direct_io_notes(target)
    cpython = is_cpython(target)
    with private_dir("iof") as folder:
        state = StateFolder(options.state_dir, folder) if options.state_dir else None
        try:
            before = run_check(options, cwd)
            raw = run_raw(argv, spec, options, target, folder=folder, cpython=cpython, cwd=cwd, stdin=stdin)
            after = run_check(options, cwd)
        finally:
            if state is not None:
                state.restore()
        failures = symbolize_failures(failures_of(raw.records, pystack_dir(folder)))
    require_handshake(raw, target)
    injecting = [p for p in raw.records.processes if p.injects]
    counts, eligible_total, failed_total = sum_counts(injecting, FAMILIES, CallCounts, len(failures))
    stderr = raw.stderr.decode("utf-8", "replace")
    if spec.injects:
        outcome = classify(raw.returncode, raw.timed_out, stderr, failed_total > 0, after,
                           before.passed if before else None)
    else:
        outcome = counting_outcome(raw.timed_out)
    notes = list(io_notes) + list(lost_shim_messages(raw.records)) + list(dropped_notes(raw.records))
    if spec.injects and eligible_total == 0 and any(p.exited_normally for p in injecting):
        notes.append("no eligible call: nothing matched --path/--only, or the program's I/O does not go "
                     "through the C library (static, Go, io_uring, raw system calls)")
    report = RunReport(
        argv=tuple(argv), spec=spec, scope=options.scope, check=options.check_text, state=options.state_dir,
        outcome=outcome, check_before=before, check_after=after, counts=counts, eligible_total=eligible_total,
        failures_injected=failed_total, failures=tuple(failures), replay=replay_command(spec, options, argv),
        notes=tuple(notes), **report_fields(raw, target, injecting))
    return report, raw
