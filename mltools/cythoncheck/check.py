"""``check_paths``: find the .pyx/.pxd files, run the rules, apply noqa,
selection and the severity threshold, and return a frozen report."""
from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import re
import warnings
from dataclasses import dataclass
from typing import ClassVar, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from mltools.cythoncheck.rules import RULES, expand_codes
from mltools.errors import InputError, UsageError
from mltools.findings import Finding, Severity

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


@dataclass(frozen=True)
class FileError:
    """A file that could not be checked: it does not parse."""
    path: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"


@dataclass(frozen=True)
class CheckReport:
    SCHEMA: ClassVar[str] = "mltools.cython.check"
    SCHEMA_VERSION: ClassVar[int] = 1
    findings: Tuple[CythonFinding, ...]
    files_checked: int
    errors: Tuple[FileError, ...] = ()        # files that do not parse
    notes: Tuple[str, ...] = ()               # e.g. files checked without types


@dataclass(frozen=True)
class CheckJson:
    """What ``--format json`` prints: the findings and the number of files."""
    SCHEMA: ClassVar[str] = "mltools.cython.check"
    SCHEMA_VERSION: ClassVar[int] = 1
    findings: Tuple[CythonFinding, ...]
    files_checked: int


@dataclass(frozen=True)
class CheckSettings:
    include_dirs: Tuple[str, ...] = ()
    compile_time_env: Tuple[Tuple[str, object], ...] = ()
    cplus: bool = False
    select: Tuple[str, ...] = ()      # empty: all rules
    ignore: Tuple[str, ...] = ()
    types: bool = True
    jobs: int = 0                     # worker processes; 0: one per 8 files, up to 4 and the CPUs


def find_sources(paths: Sequence[str]) -> List[str]:
    """The .pyx and .pxd files under ``paths`` (files are taken as given), sorted, unique."""
    out: List[str] = []
    for p in paths:
        if not os.path.exists(p):
            raise InputError(f"{p}: no such file or directory")
        if os.path.isdir(p):
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames
                                     if d not in SKIP_DIRS and not d.endswith(".egg-info")
                                     and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg")))
                for f in sorted(filenames):
                    if f.endswith((".pyx", ".pxd")):
                        out.append(os.path.join(dirpath, f))
        else:
            if not p.endswith((".pyx", ".pxd", ".pxi")):
                raise InputError(f"{p}: not a Cython source (.pyx, .pxd or .pxi)")
            if not os.access(p, os.R_OK):
                raise InputError(f"{p}: cannot read it")
            out.append(p)
    seen, unique = set(), []
    for p in out:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


_INCLUDE = re.compile(r"""^\s*include\s+["']([^"']+)["']""", re.M)


def _included_files(files: Sequence[str], include_dirs: Sequence[str]) -> set:
    """Real paths of the listed files that another listed file includes."""
    listed = {os.path.realpath(f) for f in files}
    out = set()
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
                    out.add(cand)
                    break
    return out


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


def check_paths(paths: Sequence[str], settings: Optional[CheckSettings] = None) -> CheckReport:
    """Check every .pyx (typed) and .pxd (syntax only) under ``paths``."""
    settings = settings or CheckSettings()
    select = set(expand_codes(settings.select, "select")) if settings.select else set(RULES)
    select -= set(expand_codes(settings.ignore, "ignore"))
    for d in settings.include_dirs:
        if not os.path.isdir(d):
            raise InputError(f"include directory {d}: no such directory")
    files = find_sources(paths)
    included = _included_files(files, settings.include_dirs)

    from mltools.cythoncheck import typed
    opts = typed.CythonOptions(tuple(os.path.abspath(d) for d in settings.include_dirs),
                               settings.compile_time_env, settings.cplus)
    work = [p for p in files if os.path.realpath(p) not in included]   # included: checked through the includer
    jobs = settings.jobs if settings.jobs > 0 else _auto_jobs(len(work))
    if jobs > 1 and len(work) >= 2 * jobs and "fork" in multiprocessing.get_all_start_methods():
        # Round-robin chunks, one Cython context pool per worker process.
        chunks = [work[i::jobs] for i in range(jobs)]
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs) as workers:
            parts = workers.starmap(_check_chunk, [(c, opts, settings.types) for c in chunks])
    else:
        parts = [_check_chunk(work, opts, settings.types)]
    raw: List = []
    errors: List[FileError] = []
    notes: List[str] = []
    for r, e, n in parts:
        raw.extend(r)
        errors.extend(e)
        notes.extend(n)
    errors.sort(key=lambda e: (e.path, e.line, e.col))
    unresolved = sorted(n for n in notes if n.startswith(_UNRESOLVED_MARK))
    notes = [n for n in notes if not n.startswith(_UNRESOLVED_MARK)]
    if unresolved:
        first = unresolved[0][len(_UNRESOLVED_MARK):]
        notes.append(f"{len(unresolved)} file(s) use declarations Cython could not resolve "
                     f"(first: {first}); their findings are marked not verified: pass -I, -E or "
                     "--cplus, or install the packages whose .pxd files they cimport")
    if not files:
        notes.append("no .pyx or .pxd files under " + ", ".join(paths))
    return _finish(raw, select, files, errors, notes)


_UNRESOLVED_MARK = "\0unresolved:"


def _auto_jobs(n_files: int) -> int:
    """Worker processes for ``n_files``: one per 8 files, at most the usable CPUs and 4."""
    from mltools._sysfs import usable_cpus

    return max(1, min(usable_cpus(), 4, n_files // 8))


def _check_chunk(paths, opts, types: bool):
    """Check ``paths`` in this process; positions become plain (path, line, col0)."""
    from mltools.cythoncheck import typed
    pool = typed.ContextPool(opts) if types else None
    raw: List = []
    errors: List[FileError] = []
    notes: List[str] = []
    # Cython writes warnings and progress chatter; none of it may reach our output.
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in paths:
            _check_one(path, pool, opts, raw, errors, notes)
    for f in raw:
        desc, line, col0 = f.pos
        f.pos = (getattr(desc, "filename", None) or str(desc), line, col0)
    return raw, errors, notes


def _check_one(path, pool, opts, raw, errors, notes) -> None:
    from mltools.cythoncheck import syntax, typed
    is_pxd = path.endswith(".pxd")
    if pool is not None and not is_pxd:
        try:
            res = typed.check_file_typed(path, pool)
        except typed.AnalysisStopped as exc:
            notes.append(f"{_display(path)}: {exc}; checked without types")
            res = syntax.check_file_syntax(path, opts)
        except Exception as exc:  # noqa: BLE001 - Cython internals may fail on odd input
            notes.append(f"{_display(path)}: Cython's type analysis failed "
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
        errors.append(FileError(_display(ppath), line, col, " ".join(str(msg).split())))
        return
    raw.extend(res.findings)
    if getattr(res, "unresolved", None):
        notes.append(_UNRESOLVED_MARK + res.unresolved)


def _finish(raw, select, files, errors, notes) -> CheckReport:
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
    return CheckReport(tuple(out), len(files), tuple(errors), tuple(notes))


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
