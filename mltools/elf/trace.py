"""``mltools elf trace``: run a command under ``LD_DEBUG`` and report what ld.so did.

ld.so writes its debug lines to ``LD_DEBUG_OUTPUT.<pid>`` files in a private
temporary directory, never into the program's own stderr. Each file is parsed
(see ``lddebug``) into programs (one per ``exec``), and each program into the
libraries it loaded (search steps, where each was found, who needed or
dlopen'ed it), version checks, loader errors and, with ``bindings``, which
library each symbol bound to and where the same symbol is defined more than
once (interposition: the first object in the lookup scope wins).
"""
from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

from mltools._lifecycle import temp_dir
from mltools._target import elf_interp, find_program, privilege_reason, run_attached, shebang
from mltools.elf import lddebug
from mltools.elf.runtimes import duplicate_copies
from mltools.errors import InputError, MltoolsError
from mltools.findings import Finding, Severity

DEFAULT_CATEGORIES = ("libs", "files", "versions")
_OUTPUT_PREFIX = "ld"


# --------------------------------------------------------------------------
# The target before it runs

@dataclass(frozen=True)
class TargetInfo:
    argv: Tuple[str, ...]
    path: Optional[str]             # the file that will be executed (after PATH lookup)
    kind: str                       # "dynamic", "static", "script", "unknown"
    interpreter: Optional[str]      # PT_INTERP, or the script's #! line
    secure_mode: bool               # ld.so would run in secure mode (AT_SECURE)
    secure_reason: Optional[str]


def inspect_target(argv: Sequence[str]) -> TargetInfo:
    """Find the program a shell would run for ``argv`` and say what it is.

    Raises TargetStartError with 127 (not found) or 126 (not executable), as a shell does.
    """
    if not argv:
        raise InputError("no command given (usage: mltools elf trace -- CMD ARGS...)")
    path = find_program(argv[0])
    reason = privilege_reason(path)
    secure = reason is not None
    bang = shebang(path)
    if bang is not None:
        return TargetInfo(tuple(argv), path, "script", " ".join(bang) or None, secure, reason)
    is_elf, interp = elf_interp(path)
    if not is_elf:
        return TargetInfo(tuple(argv), path, "unknown", None, secure, reason)
    return TargetInfo(tuple(argv), path, "dynamic" if interp else "static", interp, secure, reason)


# --------------------------------------------------------------------------
# The report

@dataclass(frozen=True)
class Interposition:
    """A symbol defined in several loaded objects; ``bound_to`` won."""
    symbol: str
    bound_to: str
    also_defined_in: Tuple[str, ...]


@dataclass(frozen=True)
class BindingSummary:
    total: int
    symbols: int                                   # distinct symbol@version names bound
    by_provider: Tuple[Tuple[str, int], ...]       # most bindings first
    several_providers: Tuple[Tuple[str, Tuple[str, ...]], ...]   # same symbol bound to >1 object
    interpositions: Tuple[Interposition, ...]
    unreadable: Tuple[str, ...]                    # loaded objects whose symbols could not be read
    bound_to: Mapping[str, Tuple[str, ...]]        # symbol[@version] -> the object(s) it bound to


@dataclass(frozen=True)
class ProgramReport:
    pid: int
    index: int                      # 0 = first program of this PID, 1 = after the first exec, ...
    forked_from: Optional[int]      # a child forked without exec, whose lines were in this PID's file
    name: Optional[str]
    started: bool                   # ld.so reached "initialize program"
    libraries: Tuple[lddebug.LibraryLoad, ...]
    version_checks: int
    unloaded: Tuple[str, ...]       # objects unmapped again (dlclose, or a failed dlopen rolled back)
    version_failures: Tuple[lddebug.LoaderError, ...]
    errors: Tuple[lddebug.LoaderError, ...]
    bindings: Optional[BindingSummary]
    line_count: int
    unparsed_count: int
    unparsed: Tuple[str, ...]       # the first lines not understood (all of them counted)


@dataclass(frozen=True)
class TraceReport:
    SCHEMA: ClassVar[str] = "mltools.elf.trace"
    SCHEMA_VERSION: ClassVar[int] = 1

    command: Tuple[str, ...]
    categories: Tuple[str, ...]
    exit_status: int                # the target's, as a shell reports it (128+N on signal N)
    signal: Optional[str]
    elapsed_s: float
    target: TargetInfo
    processes: int                  # PID files written
    programs: Tuple[ProgramReport, ...]
    line_count: int
    unparsed_count: int
    raw_dir: Optional[str]          # where the raw LD_DEBUG files were kept (--keep)
    notes: Tuple[str, ...]
    findings: Tuple[Finding, ...]


# --------------------------------------------------------------------------
# Symbols defined by loaded objects (for interpositions)

def _defined_symbols(path: str) -> Optional[frozenset]:
    """Names of the global/weak symbols ``path`` defines in its dynamic symbol table, or None."""
    from mltools.elf.reader import read_symbols

    try:
        syms = read_symbols(path).symbols
    except (MltoolsError, OSError):
        return None
    return frozenset(s.name for s in syms
                     if s.defined and s.name and s.binding in ("GLOBAL", "WEAK", "GNU_UNIQUE"))


def _summarize_bindings(program: lddebug.ProgramTrace, cwd: str) -> BindingSummary:
    providers = sorted(program.bindings_by_provider.items(), key=lambda kv: (-kv[1], kv[0]))
    several = tuple(sorted((sym, tuple(sorted(per))) for sym, per in program.symbol_providers.items()
                           if len(per) > 1))
    # Which loaded objects define each bound symbol? Read every object once.
    objects = []
    for name in [program.name or ""] + program.objects:
        if name and name not in objects and name != "linux-vdso.so.1":
            objects.append(name)
    wanted = {sym.split("@", 1)[0] for sym in program.symbol_providers}
    definers: Dict[str, List[str]] = {}      # bound symbol -> loaded objects defining it, in order
    unreadable = []
    for name in objects:
        path = name if os.path.isabs(name) else os.path.join(cwd, name)
        if "/" not in name:                   # the main program named by argv[0] only
            found = shutil.which(name)
            path = found or path
        syms = _defined_symbols(path)
        if syms is None:
            unreadable.append(name)
            continue
        for sym in syms & wanted:
            definers.setdefault(sym, []).append(name)
    interpositions = []
    for sym, per in program.symbol_providers.items():
        defs = definers.get(sym.split("@", 1)[0])
        if not defs:
            continue
        winner = max(per.items(), key=lambda kv: kv[1])[0]
        others = tuple(o for o in defs if o != winner and o not in per)
        if others:
            interpositions.append(Interposition(sym, winner, others))
    interpositions.sort(key=lambda i: i.symbol)
    bound_to = {sym: tuple(sorted(per, key=lambda o: -per[o]))
                for sym, per in sorted(program.symbol_providers.items())}
    return BindingSummary(program.binding_count, len(program.symbol_providers), tuple(providers),
                          several, tuple(interpositions), tuple(unreadable), bound_to)


# --------------------------------------------------------------------------
# Findings

def _program_label(p: ProgramReport) -> str:
    return f"{p.name or '?'} [pid {p.pid}]"


def _findings_for(p: ProgramReport) -> List[Finding]:
    out: List[Finding] = []
    where = _program_label(p)
    for lib in p.libraries:
        if lib.path is None:
            fatal = lib.at_startup
            dirs = [d for step in lib.search for d in step.dirs]
            out.append(Finding(
                "MISSING" if fatal else "DLOPEN_FAILED",
                Severity.ERROR if fatal else Severity.WARNING,
                f"{lib.name}: not found (needed by {lib.requested_by or '?'}) in {where}"
                if fatal else f"{lib.name}: dlopen by {lib.requested_by or '?'} found nothing in {where}",
                fix="put its directory on LD_LIBRARY_PATH or in the requester's RUNPATH, or run ldconfig",
                details={"searched": [s.source for s in lib.search], "dirs": len(dirs)}))
    for err in p.version_failures:
        out.append(Finding("VERSION_MISSING", Severity.ERROR,
                           f"{err.object}: {err.message} in {where}",
                           fix="load a newer copy of that library first (check which copy wins with "
                               "this trace), or rebuild against the older one"))
    for err in p.errors:
        if err.kind == "version lookup error":
            continue
        code = "UNDEFINED" if err.kind == "symbol lookup error" else "LOADER_ERROR"
        out.append(Finding(code, Severity.ERROR, f"{err.object}: {err.kind}: {err.message} in {where}"))
    for fam, paths in duplicate_copies(lib.path for lib in p.libraries if lib.path):
        out.append(Finding("DUP_RUNTIME", Severity.WARNING,
                           f"{len(paths)} copies of {fam} loaded in {where}: {', '.join(paths)}",
                           fix="make every package use one copy (preload the one you want)",
                           details={"runtime": fam, "paths": list(paths)}))
    if p.unparsed_count:
        out.append(Finding("UNPARSED_LINES", Severity.INFO,
                           f"{p.unparsed_count} LD_DEBUG line(s) not understood in {where} (--verbose shows them)"))
    return out


# --------------------------------------------------------------------------
# Running the target

def _program_report(p: lddebug.ProgramTrace, with_bindings: bool, cwd: str) -> ProgramReport:
    return ProgramReport(
        pid=p.pid, index=p.index, forked_from=p.forked_from, name=p.name, started=p.started, libraries=tuple(p.libraries),
        version_checks=p.version_checks, unloaded=tuple(p.unloaded), version_failures=tuple(p.version_failures),
        errors=tuple(p.errors),
        bindings=_summarize_bindings(p, cwd) if with_bindings else None,
        line_count=p.line_count, unparsed_count=p.unparsed_count, unparsed=tuple(p.unparsed))


def parse_output_dir(directory: str, prefix: str = _OUTPUT_PREFIX, *, with_bindings: bool,
                     cwd: Optional[str] = None) -> List[ProgramReport]:
    """Parse every ``<prefix>.<pid>`` file in ``directory`` into program reports."""
    cwd = cwd or os.getcwd()
    reports = []
    for pid, path in lddebug.iter_pid_files(directory, prefix):
        for p in lddebug.parse_pid_file(path, pid, keep_symbols=with_bindings):
            reports.append(_program_report(p, with_bindings, cwd))
    return reports


def trace_command(argv: Sequence[str], *, categories: Sequence[str] = DEFAULT_CATEGORIES,
                  keep_dir: Optional[str] = None, target_stdout_fd: Optional[int] = None,
                  env: Optional[Mapping[str, str]] = None) -> TraceReport:
    """Run ``argv`` with LD_DEBUG, wait for it, and parse what ld.so wrote.

    ``target_stdout_fd``: where the target's stdout goes (None: inherited).
    ``keep_dir``: copy the raw ``ld.<pid>`` files there.
    """
    target = inspect_target(argv)
    categories = lddebug.parse_categories(",".join(categories))
    run_env = dict(os.environ if env is None else env)
    notes: List[str] = []
    findings: List[Finding] = []
    for name in ("LD_DEBUG", "LD_DEBUG_OUTPUT"):
        if name in run_env:
            notes.append(f"{name}={run_env[name]} from the environment was replaced")
    if target.kind == "static":
        findings.append(Finding("STATIC_BINARY", Severity.INFO,
                                f"{target.path} is statically linked: ld.so never runs, so LD_DEBUG "
                                "prints nothing for it (programs it starts are still traced)"))
    if target.secure_mode:
        findings.append(Finding("SECURE_MODE", Severity.WARNING,
                                f"{target.path} runs in secure mode ({target.secure_reason}): ld.so ignores "
                                "LD_DEBUG_OUTPUT (and this glibc ignores LD_DEBUG), so it cannot be traced",
                                fix="trace a copy without the set-ID bit, or run it as its owner"))
    if keep_dir is not None:
        if os.path.exists(keep_dir) and not os.path.isdir(keep_dir):
            raise InputError(f"--keep {keep_dir}: exists and is not a directory")
        os.makedirs(keep_dir, exist_ok=True)
    with temp_dir(prefix="mltools-trace-") as workdir:
        prefix = os.path.join(workdir, _OUTPUT_PREFIX)
        run_env["LD_DEBUG"] = ",".join(categories)
        run_env["LD_DEBUG_OUTPUT"] = prefix
        rc, elapsed = run_attached(argv, run_env, target_stdout_fd)
        raw_dir = None
        if keep_dir is not None:
            for _, path in lddebug.iter_pid_files(workdir, _OUTPUT_PREFIX):
                shutil.copy2(path, keep_dir)
            raw_dir = os.path.abspath(keep_dir)
        processes = sum(1 for _ in lddebug.iter_pid_files(workdir, _OUTPUT_PREFIX))
        programs = parse_output_dir(workdir, with_bindings="bindings" in categories)
    if processes == 0 and target.kind not in ("static",) and not target.secure_mode:
        findings.append(Finding("NO_OUTPUT", Severity.WARNING,
                                "ld.so wrote no debug output: the target is not dynamically linked, "
                                "runs in secure mode, or was replaced before ld.so ran"))
    for p in programs:
        findings.extend(_findings_for(p))
    signame = None
    if rc < 0:
        try:
            signame = signal.Signals(-rc).name
        except ValueError:
            signame = f"signal {-rc}"
    return TraceReport(
        command=tuple(argv), categories=tuple(categories),
        exit_status=128 - rc if rc < 0 else rc, signal=signame, elapsed_s=round(elapsed, 4),
        target=target, processes=processes, programs=tuple(programs),
        line_count=sum(p.line_count for p in programs),
        unparsed_count=sum(p.unparsed_count for p in programs),
        raw_dir=raw_dir, notes=tuple(notes), findings=tuple(findings))
