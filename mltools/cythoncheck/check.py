"""``check_paths``: find the .pyx/.pxd files, run the rules, apply noqa,
selection and the severity threshold, and return a frozen report."""
from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from mltools._record import record
from mltools.cythoncheck.rules import RULES, expand_codes
from mltools.errors import InputError, UsageError
from mltools.findings import Finding, ItemError, Severity, require_some_processed

# Directories never searched: build output, caches, VCS data and virtual environments.
SKIP_DIRS = frozenset({"build", "dist", ".git", ".hg", ".svn", ".tox", ".nox", ".venv", "venv",
                       ".venv-ci", "__pycache__", "node_modules", "site-packages", ".eggs",
                       ".mypy_cache", ".pytest_cache", ".ruff_cache", "_skbuild", ".cache"})

_NOQA = re.compile(r"#\s*noqa(?::\s*(?P<codes>[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*))?", re.I)


@dataclass(frozen=True)
class CythonFinding:
    """One problem at a 1-based line:col of a .pyx/.pxi/.pxd file."""
    path: str
    line: int
    col: int
    code: str
    severity: Severity
    message: str
    fix: str
    verified: bool

    @property
    def finding(self) -> Finding:
        """The project-wide Finding shape (location in details)."""
        return Finding(self.code, self.severity, self.message, self.fix,
                       {"path": self.path, "line": self.line, "col": self.col, "verified": self.verified})


@record          # as ItemError, its base
class FileError(ItemError):
    """A file that could not be checked (it does not parse, cannot be read, or the process
    checking it died); ``message`` starts with the path and the position Cython gave (line and
    col are 0 when there is none). The other files are still checked."""
    line: int = 0
    col: int = 0

    @classmethod
    def at(cls, path: str, message: str, line: int = 0, col: int = 0) -> "FileError":
        where = f"{path}:{line}:{col}" if line else path
        return cls(path, f"{where}: {message}", line, col)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class CheckReport:
    SCHEMA: ClassVar[str] = "mltools.cython.check"
    SCHEMA_VERSION: ClassVar[int] = 2
    findings: Tuple[CythonFinding, ...]
    files_checked: int
    errors: Tuple[FileError, ...] = ()        # files that could not be checked
    notes: Tuple[str, ...] = ()               # e.g. files checked without types
    interrupted: bool = False                 # stopped by a signal: the files finished so far


@dataclass(frozen=True)
class CheckJson:
    """What ``--format json`` prints: the findings, the files that could not be checked, and
    the number of files."""
    SCHEMA: ClassVar[str] = CheckReport.SCHEMA
    SCHEMA_VERSION: ClassVar[int] = CheckReport.SCHEMA_VERSION
    findings: Tuple[CythonFinding, ...]
    errors: Tuple[FileError, ...]
    files_checked: int
    interrupted: bool = False

    @classmethod
    def of(cls, report: CheckReport) -> "CheckJson":
        return cls(report.findings, report.errors, report.files_checked, report.interrupted)


@dataclass(frozen=True)
class CheckSettings:
    include_dirs: Tuple[str, ...] = ()
    compile_time_env: Tuple[Tuple[str, object], ...] = ()
    cplus: bool = False
    select: Tuple[str, ...] = ()      # empty: all rules
    ignore: Tuple[str, ...] = ()
    types: bool = True
    jobs: int = 0                     # worker processes; 0: the usable CPUs, at most one per 4 files


CYTHON_SUFFIXES = (".pyx", ".pxd", ".pxi", ".py")
# A .py file in a directory is a Cython source when it is compiled in pure-Python mode: it
# imports the cython module, or an augmenting .pxd is beside it (and no .pyx of the same name,
# whose .pxd it would be; a package's __init__.pxd declares the package, not __init__.py).
_PURE_MODE = re.compile(rb"^\s*(?:import\s+cython\b|from\s+cython(?:\.cimports)?(?:\.\w+)*\s+import\b|cimport\b)",
                        re.M)


def _is_pure_mode(path: str) -> bool:
    from mltools._files import read_head
    stem = path[:-3]
    if os.path.basename(stem) != "__init__" and os.path.exists(stem + ".pxd") and not os.path.exists(stem + ".pyx"):
        return True
    return bool(_PURE_MODE.search(read_head(path, 65536)))


def find_sources(paths: Sequence[str], errors: Optional[List[FileError]] = None) -> List[str]:
    """The Cython sources under ``paths``, sorted, unique: in directories every .pyx and .pxd,
    and the .py files compiled in pure-Python mode; files are taken as given (.pyx, .pxd, .pxi,
    .py). A path that does not exist or cannot be read raises InputError, or, when ``errors``
    is a list, is appended to it and left out."""
    out: List[str] = []

    def problem(path: str, message: str) -> None:
        if errors is None:
            raise InputError(f"{path}: {message}")
        errors.append(FileError.at(_display(path), message))

    for p in paths:
        if not os.path.exists(p):
            problem(p, "no such file or directory")
            continue
        if os.path.isdir(p):
            def unreadable(exc: OSError) -> None:
                problem(exc.filename or p, f"cannot list it ({exc.strerror or exc})")

            for dirpath, dirnames, filenames in os.walk(p, onerror=unreadable):
                dirnames[:] = sorted(d for d in dirnames
                                     if d not in SKIP_DIRS and not d.endswith(".egg-info")
                                     and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg")))
                for f in sorted(filenames):
                    full = os.path.join(dirpath, f)
                    if f.endswith((".pyx", ".pxd")) or (f.endswith(".py") and _is_pure_mode(full)):
                        if os.access(full, os.R_OK):
                            out.append(full)
                        else:
                            problem(full, "cannot read it")
        else:
            if not p.endswith(CYTHON_SUFFIXES):
                raise InputError(f"{p}: not a Cython source (.pyx, .pxd, .pxi, or a pure-Python-mode .py)")
            if not os.access(p, os.R_OK):
                problem(p, "cannot read it")
                continue
            out.append(p)
    seen, unique = set(), []
    for p in out:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


_INCLUDE = re.compile(r"""^\s*include\s+["']([^"']+)["']""", re.M)


def _scan_sources(files: Sequence[str], include_dirs: Sequence[str]) -> Tuple[set, Dict[str, List[str]]]:
    """Each listed file read once: the real paths of the listed files that another listed file
    includes, and the names each listed file other than a .pxd cimports."""
    listed = {os.path.realpath(f) for f in files}
    included = set()
    cimports: Dict[str, List[str]] = {}
    for f in files:
        try:
            with open(f, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        for name in _INCLUDE.findall(text):
            for base in (os.path.dirname(f), *include_dirs):
                cand = os.path.realpath(os.path.join(base, name))
                if cand in listed and cand != os.path.realpath(f):
                    included.add(cand)
                    break
        if not f.endswith(".pxd"):
            cimports[f] = _cimported_names(text)
    return included, cimports


def _display(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


class _Lines:
    def __init__(self):
        self._cache: Dict[str, List[str]] = {}

    def get(self, path: str) -> List[str]:
        if path not in self._cache:
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    self._cache[path] = fh.read().splitlines()
            except OSError:
                self._cache[path] = []
        return self._cache[path]


def _suppressed(line_text: str, code: str) -> bool:
    m = _NOQA.search(line_text)
    if not m:
        return False
    codes = m.group("codes")
    if not codes:
        return True
    return code.upper() in {c.strip().upper() for c in codes.split(",")}


def _pos_parts(pos) -> Tuple[str, int, int]:
    desc, line, col0 = pos
    path = getattr(desc, "filename", None) or str(desc)
    return path, int(line), int(col0) + 1


def check_paths(paths: Sequence[str], settings: Optional[CheckSettings] = None,
                progress: Optional[Callable[..., None]] = None) -> CheckReport:
    """Check every .pyx and pure-Python-mode .py (typed) and .pxd (syntax only) under ``paths``.

    Files are spread over ``settings.jobs`` worker processes; the report does not depend on
    how many. A file that cannot be checked is a FileError and the others go on; when none
    can be, InputError. ``progress(done, total, detail)`` is called after each file. An
    interrupt (KeyboardInterrupt) ends the workers and returns the files finished so far,
    with ``interrupted`` set.
    """
    settings = settings or CheckSettings()
    select = set(expand_codes(settings.select, "select")) if settings.select else set(RULES)
    select -= set(expand_codes(settings.ignore, "ignore"))
    for d in settings.include_dirs:
        if not os.path.isdir(d):
            raise InputError(f"include directory {d}: no such directory")
    from mltools.cythoncheck import typed
    opts = typed.CythonOptions(tuple(os.path.abspath(d) for d in settings.include_dirs),
                               settings.compile_time_env, settings.cplus)
    errors: List[FileError] = []
    files: List[str] = []
    work: List[str] = []
    outcomes: Dict[int, _Outcome] = {}
    interrupted = False
    runs = None
    try:
        files = find_sources(paths, errors)
        included, cimports = _scan_sources(files, settings.include_dirs)
        work = [p for p in files if os.path.realpath(p) not in included]   # included: checked through the includer
        jobs = settings.jobs if settings.jobs > 0 else _auto_jobs(len(work))
        runs = _run_parallel(work, cimports, opts, settings.types, jobs) if jobs > 1 and len(work) > 1 \
            else _run_here(work, opts, settings.types)
        for index, outcome in runs:
            outcomes[index] = outcome
            if progress is not None:
                progress(len(outcomes), len(work), _display(work[index]))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if runs is not None:
            runs.close()
    total = len(files) + len(errors)       # what could not even be listed counts as an input too
    raw: List = []
    notes: List[str] = []
    for index in sorted(outcomes):
        outcome = outcomes[index]
        raw.extend(outcome.findings)
        notes.extend(outcome.notes)
        if outcome.error is not None:
            errors.append(outcome.error)
    if not interrupted:
        require_some_processed(errors, total, "files")
    errors.sort(key=lambda e: (e.path, e.line, e.col))
    unresolved = sorted(n for n in notes if n.startswith(_UNRESOLVED_MARK))
    notes = [n for n in notes if not n.startswith(_UNRESOLVED_MARK)]
    if unresolved:
        first = unresolved[0][len(_UNRESOLVED_MARK):]
        notes.append(f"{len(unresolved)} file(s) use declarations Cython could not resolve "
                     f"(first: {first}); their findings are marked not verified: pass -I, -E or "
                     "--cplus, or install the packages whose .pxd files they cimport")
    if not settings.types and any(p.endswith(".py") for p in work):
        notes.append("--no-types: the casts of pure-Python-mode .py files (cython.cast) are recognised "
                     "only with type analysis")
    if not files and not errors:
        notes.append("no .pyx, .pxd or pure-Python-mode .py files under " + ", ".join(paths))
    checked = len(files) if not interrupted else len(outcomes)
    return _finish(raw, select, checked, errors, notes, interrupted)


_UNRESOLVED_MARK = "\0unresolved:"


def _auto_jobs(n_files: int) -> int:
    """Worker processes for ``n_files``: the usable CPUs, but at least 4 files each (a worker
    analyses the shared .pxd files again)."""
    from mltools._sysfs import usable_cpus

    return max(1, min(usable_cpus(), n_files // 4))


@dataclass
class _Outcome:
    """What checking one file gave: findings (positions as plain (path, line, col0)), notes, or
    the error that stopped it."""
    findings: List = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    error: Optional[FileError] = None


class _Checker:
    """Checks files one at a time in this process, with one Cython context pool for all."""

    def __init__(self, opts, types: bool):
        from mltools.cythoncheck import typed
        self.opts = opts
        self.pool = typed.ContextPool(opts) if types else None

    def warm_up(self, work: Sequence[str] = (), cimports: Optional[Dict[str, List[str]]] = None) -> None:
        """Build the shared state before workers are forked: Cython's tables, and the .pxd
        files that more than one of ``work`` cimports (``cimports``: the names by path)."""
        if self.pool is None:
            return
        self.pool.warm_up()
        counts: Dict[str, int] = {}
        for path in work:
            if path.endswith(".pxd"):
                continue
            for name in (cimports or {}).get(path, ()):
                counts[name] = counts.get(name, 0) + 1
        self.pool.preload(sorted(n for n, c in counts.items() if c > 1))

    def check(self, path: str) -> _Outcome:
        outcome = _Outcome()
        # Cython writes warnings and progress chatter; none of it may reach our output.
        chatter = io.StringIO()
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _check_one(path, self.pool, self.opts, outcome)
        for f in outcome.findings:
            desc, line, col0 = f.pos
            f.pos = (getattr(desc, "filename", None) or str(desc), line, col0)
        return outcome


def _run_here(work: Sequence[str], opts, types: bool) -> Iterator[Tuple[int, _Outcome]]:
    checker = _Checker(opts, types)
    for index, path in enumerate(work):
        yield index, checker.check(path)


def _worker_main(conn, work: Sequence[str], checker: "_Checker") -> None:
    """A worker process: check the file indices it is sent, answer with their outcomes."""
    from mltools._lifecycle import worker_signals
    worker_signals()                                   # the parent decides; it ends us with SIGTERM
    while True:
        try:
            index = conn.recv()
        except EOFError:
            return
        if index is None:
            return
        conn.send((index, checker.check(work[index])))


def _run_parallel(work: Sequence[str], cimports: Dict[str, List[str]], opts, types: bool,
                  jobs: int) -> Iterator[Tuple[int, _Outcome]]:
    """Check ``work`` in ``jobs`` forked worker processes, the largest files first, each worker
    taking the next file when it is done; yields (index, outcome) as files finish. A worker that
    dies costs only the file it was on (an error) and is replaced."""
    import multiprocessing
    from multiprocessing.connection import wait

    from mltools._lifecycle import owned_process

    mp = multiprocessing.get_context("fork")
    checker = _Checker(opts, types)
    checker.warm_up(work, cimports)       # built once here, inherited by every worker
    pending = deque(sorted(range(len(work)), key=lambda i: (-_size(work[i]), i)))
    workers: Dict[object, list] = {}       # connection -> [process, file index or None]
    with contextlib.ExitStack() as owned:
        def start() -> None:
            parent_end, child_end = mp.Pipe()
            proc = mp.Process(target=_worker_main, args=(child_end, work, checker), daemon=True)
            proc.start()
            child_end.close()
            owned.enter_context(owned_process(proc.pid, own_group=False))
            workers[parent_end] = [proc, None]

        for _ in range(min(jobs, len(work))):
            start()
        while workers:
            for conn, state in list(workers.items()):
                if state[1] is None and pending:
                    index = pending.popleft()
                    try:
                        conn.send(index)
                    except OSError:          # it died idle: its file goes to another worker
                        pending.appendleft(index)
                        del workers[conn]
                        state[0].join()
                        start()
                        continue
                    state[1] = index
            busy = {conn: state for conn, state in workers.items() if state[1] is not None}
            if not busy:
                break
            ready = wait(list(busy) + [state[0].sentinel for state in busy.values()])
            for conn, (proc, index) in busy.items():
                if conn in ready:
                    try:
                        done, outcome = conn.recv()
                    except EOFError:
                        pass                 # it ended without answering
                    else:
                        workers[conn][1] = None
                        yield done, outcome
                        continue
                elif proc.sentinel not in ready or conn.poll():
                    continue                 # busy, or it ended with its answer still to read
                proc.join()
                del workers[conn]
                conn.close()
                code = proc.exitcode
                why = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                yield index, _Outcome(error=FileError.at(_display(work[index]),
                                                         f"the process checking it ended ({why})"))
                if pending:
                    start()
        for conn in workers:
            try:
                conn.send(None)
            except OSError:
                pass
        for conn, (proc, _index) in workers.items():
            proc.join()
            conn.close()


_CIMPORT = re.compile(r"^[ \t]*(?:cimport[ \t]+([\w.]+(?:[ \t]*,[ \t]*[\w.]+)*)|from[ \t]+([\w.]+)[ \t]+cimport\b)", re.M)


def _cimported_names(text: str) -> List[str]:
    """The absolute module names a source's ``text`` cimports (relative cimports left out)."""
    names = []
    for plain, from_name in _CIMPORT.findall(text):
        for name in (plain.split(",") if plain else [from_name]):
            name = name.strip()
            if name and not name.startswith(".") and name not in ("cython",):
                names.append(name)
    return names


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


_MISSING_NAME = re.compile(r"Compile-time name '(\w+)' not defined")


def _check_one(path, pool, opts, outcome: _Outcome) -> None:
    from mltools.cythoncheck import syntax, typed
    is_pxd = path.endswith(".pxd")
    if pool is not None and not is_pxd:
        try:
            res = typed.check_file_typed(path, pool)
        except typed.AnalysisStopped as exc:
            outcome.notes.append(f"{_display(path)}: {exc}; checked without types")
            res = syntax.check_file_syntax(path, opts)
        except Exception as exc:  # noqa: BLE001 - Cython internals may fail on odd input
            outcome.notes.append(f"{_display(path)}: Cython's type analysis failed "
                                 f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                                 "checked without types")
            res = syntax.check_file_syntax(path, opts)
    else:
        res = syntax.check_file_syntax(path, opts)
    if res.parse_error is not None:
        pos, msg = res.parse_error
        if pos is not None:
            ppath, line, col = _pos_parts(pos)
        else:
            ppath, line, col = path, 1, 1
        msg = " ".join(str(msg).split())
        missing = _MISSING_NAME.search(msg)
        if missing:
            msg += f" (pass -E {missing.group(1)}=VALUE, as the project's build does)"
        if os.path.realpath(ppath) == os.path.realpath(path):
            outcome.error = FileError.at(_display(path), f"Cython cannot parse it: {msg}", line, col)
        else:   # its .pxd, a cimported .pxd or an include: name the file that was not checked
            outcome.error = FileError.at(_display(path), f"Cython cannot parse {_display(ppath)}:{line}:{col}, "
                                                         f"which it needs: {msg}")
        return
    outcome.findings.extend(res.findings)
    if getattr(res, "unresolved", None):
        outcome.notes.append(_UNRESOLVED_MARK + res.unresolved)


def _finish(raw, select, files_checked, errors, notes, interrupted=False) -> CheckReport:
    lines = _Lines()
    seen = set()
    out: List[CythonFinding] = []
    for f in raw:
        if f.code not in select:
            continue
        path, line, col = _pos_parts(f.pos)
        key = (os.path.realpath(path), line, col, f.code)
        if key in seen:       # .pxi included twice, fused specialisations
            continue
        seen.add(key)
        text = lines.get(path)
        if 0 < line <= len(text) and _suppressed(text[line - 1], f.code):
            continue
        out.append(CythonFinding(_display(path), line, col, f.code, f.severity, f.message,
                                 RULES[f.code].fix, f.verified))
    out.sort(key=lambda f: (f.path, f.line, f.col, f.code))
    return CheckReport(tuple(out), files_checked, tuple(errors), tuple(notes), interrupted)


def parse_env(items: Iterable[str]) -> Tuple[Tuple[str, object], ...]:
    """``NAME=VALUE`` compile-time definitions; VALUE is a Python literal or a plain string."""
    import ast
    out = []
    for item in items:
        name, sep, value = str(item).partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise UsageError(f"-E {item!r}: expected NAME=VALUE")
        try:
            val = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            val = value.strip()
        out.append((name, val))
    return tuple(out)


def env_from_mapping(mapping: Mapping[str, object]) -> Tuple[Tuple[str, object], ...]:
    return tuple((str(k), v) for k, v in mapping.items())
