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
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

from mltools.elf import lddebug
from mltools.errors import InputError, MltoolsError
from mltools.findings import Finding, Severity

DEFAULT_CATEGORIES = ("libs", "files", "versions")
_OUTPUT_PREFIX = "ld"


class TargetStartError(MltoolsError):
    """The target could not be started; ``exit_status`` is what a shell would return."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


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


def _read_head(path: str, size: int = 4096) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def _elf_interp(path: str) -> Tuple[bool, Optional[str]]:
    """(is ELF, PT_INTERP)."""
    from mltools.elf.reader import ElfFormatError, looks_like_elf, read_elf

    if not looks_like_elf(path):
        return False, None
    try:
        return True, read_elf(path).interp
    except (ElfFormatError, OSError):
        return True, None


def _secure_mode(path: str, st: os.stat_result) -> Tuple[bool, Optional[str]]:
    """Would the kernel set AT_SECURE for this exec (setuid/setgid to someone else, file caps)?"""
    if st.st_mode & stat.S_ISUID and st.st_uid != os.geteuid():
        return True, f"set-user-ID (owner uid {st.st_uid})"
    if st.st_mode & stat.S_ISGID and st.st_gid != os.getegid() and st.st_mode & stat.S_IXGRP:
        return True, f"set-group-ID (group gid {st.st_gid})"
    try:
        if os.getxattr(path, "security.capability"):
            return True, "file capabilities"
    except (OSError, AttributeError):
        pass
    return False, None


def inspect_target(argv: Sequence[str]) -> TargetInfo:
    """Find the program a shell would run for ``argv`` and say what it is.

    Raises TargetStartError with 127 (not found) or 126 (not executable), as a shell does.
    """
    if not argv:
        raise InputError("no command given (usage: mltools elf trace -- CMD ARGS...)")
    prog = argv[0]
    if "/" in prog:
        if not os.path.exists(prog):
            raise TargetStartError(f"{prog}: No such file or directory", 127)
        path = prog
    else:
        path = shutil.which(prog)
        if path is None:
            if any(os.path.exists(os.path.join(d or ".", prog))
                   for d in os.environ.get("PATH", "").split(os.pathsep)):
                raise TargetStartError(f"{prog}: Permission denied", 126)
            raise TargetStartError(f"{prog}: command not found", 127)
    if os.path.isdir(path):
        raise TargetStartError(f"{prog}: Is a directory", 126)
    if not os.access(path, os.X_OK):
        raise TargetStartError(f"{prog}: Permission denied", 126)
    st = os.stat(path)
    secure, reason = _secure_mode(path, st)
    head = _read_head(path, 256)
    if head.startswith(b"#!"):
        line = head[2:].split(b"\n", 1)[0].strip().decode("utf-8", "replace")
        return TargetInfo(tuple(argv), path, "script", line or None, secure, reason)
    is_elf, interp = _elf_interp(path)
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

_RUNTIME_FAMILIES = ("libgomp", "libiomp5", "libomp", "libopenblas", "libscipy_openblas",
                     "libmkl_rt", "libtbb", "libcudart", "libstdc++", "libgfortran")


def _runtime_family(path: str) -> Optional[str]:
    base = os.path.basename(path)
    for fam in _RUNTIME_FAMILIES:
        if base.startswith(fam) and (len(base) == len(fam) or base[len(fam)] in "-_."):
            return fam
    return None


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
    families: Dict[str, List[str]] = {}
    seen_real = set()
    for lib in p.libraries:
        if lib.path:
            fam = _runtime_family(lib.path)
            real = os.path.realpath(lib.path)
            if fam and real not in seen_real:
                seen_real.add(real)
                families.setdefault(fam, []).append(lib.path)
    for fam, paths in sorted(families.items()):
        if len(paths) > 1:
            out.append(Finding("DUP_RUNTIME", Severity.WARNING,
                               f"{len(paths)} copies of {fam} loaded in {where}: {', '.join(paths)}",
                               fix="make every package use one copy (preload the one you want)",
                               details={"paths": paths}))
    if p.unparsed_count:
        out.append(Finding("UNPARSED_LINES", Severity.INFO,
                           f"{p.unparsed_count} LD_DEBUG line(s) not understood in {where} (--verbose shows them)"))
    return out


# --------------------------------------------------------------------------
# Running the target

def _run_attached(argv: Sequence[str], env: Mapping[str, str], stdout_fd: Optional[int]) -> Tuple[int, float]:
    """Run the target on our terminal (stdin and stderr inherited), wait, return (returncode, seconds).

    mltools._proc.run captures output; a traced program must keep its terminal,
    its process group (so Ctrl-C reaches it) and its streaming output, so it is
    run here directly. While it runs SIGINT/SIGQUIT are caught and ignored by
    mltools (a handler, not SIG_IGN, so the target gets the default action) and
    the report is still written.
    """
    previous = {}
    for sig in (signal.SIGINT, signal.SIGQUIT):
        try:
            previous[sig] = signal.signal(sig, lambda *_: None)
        except ValueError:            # not the main thread
            pass
    start = time.perf_counter()
    try:
        try:
            proc = subprocess.Popen(list(argv), env=dict(env), stdout=stdout_fd, close_fds=True)
        except FileNotFoundError:
            raise TargetStartError(f"{argv[0]}: command not found", 127) from None
        except PermissionError:
            raise TargetStartError(f"{argv[0]}: Permission denied", 126) from None
        except OSError as exc:
            raise TargetStartError(f"{argv[0]}: {exc.strerror or exc}", 126) from None
        while True:
            try:
                rc = proc.wait()
                break
            except InterruptedError:
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return rc, time.perf_counter() - start


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
    workdir = tempfile.mkdtemp(prefix="mltools-trace-")
    try:
        prefix = os.path.join(workdir, _OUTPUT_PREFIX)
        run_env["LD_DEBUG"] = ",".join(categories)
        run_env["LD_DEBUG_OUTPUT"] = prefix
        rc, elapsed = _run_attached(argv, run_env, target_stdout_fd)
        raw_dir = None
        if keep_dir is not None:
            for _, path in lddebug.iter_pid_files(workdir, _OUTPUT_PREFIX):
                shutil.copy2(path, keep_dir)
            raw_dir = os.path.abspath(keep_dir)
        processes = sum(1 for _ in lddebug.iter_pid_files(workdir, _OUTPUT_PREFIX))
        programs = parse_output_dir(workdir, with_bindings="bindings" in categories)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
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
