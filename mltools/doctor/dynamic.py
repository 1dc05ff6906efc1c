"""The dynamic pass (``--import MOD,...``): import the modules in a child
interpreter under ``mltools.elf.trace`` (LD_DEBUG) and report what really
loaded, from where, in what order, ``dlopen``ed libraries included, and the
runtime copies actually mapped together."""
from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

from mltools.elf import runtimes as rt
from mltools.python import InterpreterInfo
from mltools.doctor.model import LoadedLibrary
from mltools.doctor.owners import OwnerIndex
from mltools.elf.files import is_extension_name
from mltools.findings import Finding, Severity

# Runs in the target interpreter: stderr is silenced (tracebacks and warnings
# would land on mltools' own stderr), each import's outcome goes to a file.
_IMPORTER = r"""
import json, os, signal, sys
signal.alarm(int(sys.argv[2]))      # a hanging import ends as SIGALRM, not as a hung doctor
fd = os.open(os.devnull, os.O_WRONLY)
os.dup2(fd, 2)
results = []
for name in sys.argv[3:]:
    try:
        __import__(name)
        results.append({"module": name, "error": None})
    except BaseException as exc:
        results.append({"module": name, "error": "%s: %s" % (type(exc).__name__, exc)})
with open(sys.argv[1], "w") as fh:
    json.dump(results, fh)
"""

# Loader findings of elf trace kept as they are; runtime duplicates are
# recomputed here with doctor's own runtime families.
_KEEP_TRACE_CODES = {"MISSING", "DLOPEN_FAILED", "VERSION_MISSING", "UNDEFINED", "LOADER_ERROR"}


@dataclass(frozen=True)
class DynamicResult:
    loaded: Tuple[LoadedLibrary, ...]
    findings: Tuple[Finding, ...]
    scope: Tuple[str, ...]


def _kind_label(kind) -> str:
    return f"{kind.family}/{kind.major or kind.implementation}"


def dynamic_pass(interp: InterpreterInfo, modules: Sequence[str], owners: OwnerIndex,
                 environ: Mapping[str, str], *, timeout_s: int = 300) -> DynamicResult:
    from mltools.elf.trace import trace_command

    findings: List[Finding] = []
    scope: List[str] = []
    from mltools._lifecycle import temp_dir

    with temp_dir(prefix="mltools-doctor-") as tmp:
        result_file = os.path.join(tmp, "imports.json")
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            report = trace_command([interp.executable, "-c", _IMPORTER, result_file, str(int(timeout_s)), *modules],
                                   categories=("libs", "files", "versions"),
                                   target_stdout_fd=devnull, env=environ)
        finally:
            os.close(devnull)
        try:
            with open(result_file) as fh:
                outcomes = json.load(fh)
        except (OSError, ValueError):
            outcomes = []
    if not outcomes:
        timed_out = report.signal == "SIGALRM"
        findings.append(Finding(
            "IMPORT_CRASHED", Severity.ERROR,
            f"the interpreter importing {', '.join(modules)} "
            + (f"did not finish within {timeout_s} s" if timed_out else
               f"died before reporting (exit status {report.exit_status}"
               f"{', ' + report.signal if report.signal else ''})"),
            fix="run the import by hand to see the crash; a segfault at import often means two "
                "incompatible copies of a runtime (see the findings above)",
            details={"exit_status": report.exit_status, "signal": report.signal}))
    failed_any = False
    for o in outcomes:
        if o.get("error"):
            failed_any = True
            findings.append(Finding(
                "IMPORT_FAILED", Severity.ERROR, f"import {o['module']} failed: {o['error']}",
                fix=_import_fix(o["error"]), details={"module": o["module"], "error": o["error"]}))

    loaded: List[LoadedLibrary] = []
    seen = set()
    for prog in report.programs:
        for lib in prog.libraries:
            if not lib.path:
                continue
            real = os.path.realpath(lib.path)
            if real in seen:
                continue
            seen.add(real)
            name = lib.name.rsplit("/", 1)[-1] if "/" in lib.name else lib.name
            kind = rt.classify_file(lib.path, name)
            loaded.append(LoadedLibrary(
                soname=name, path=os.path.normpath(lib.path), package=owners.label(lib.path),
                loaded_by=lib.requested_by or None, dlopened=lib.how == "dlopen",
                runtime=_kind_label(kind) if kind else None,
                extension_module=lib.how == "dlopen" and is_extension_name(os.path.basename(lib.path))))

    for f in report.findings:
        if f.code not in _KEEP_TRACE_CODES:
            continue
        if f.code == "UNDEFINED" and not failed_any:
            continue            # judged one by one below
        if f.code == "DLOPEN_FAILED" and not failed_any:
            # optional libraries probed with dlopen (libcuda on a CPU box, cuda-pathfinder's
            # RTLD_NOLOAD checks): the import still worked
            f = Finding(f.code, Severity.INFO, f.message, f.fix, dict(f.details))
        findings.append(f)
    if not failed_any:
        for prog in report.programs:
            findings += _symbol_errors(prog, owners)
    findings += _loaded_runtime_findings(loaded)
    if report.unparsed_count:
        n = report.unparsed_count
        scope.append(f"{n} LD_DEBUG line{'s' if n != 1 else ''} of the dynamic pass {'were' if n != 1 else 'was'} "
                     "not understood (mltools elf trace --verbose shows them)")
    return DynamicResult(tuple(loaded), tuple(findings), tuple(scope))


def _symbol_errors(prog, owners: OwnerIndex) -> List[Finding]:
    """The loader's "symbol lookup error" lines of a run whose imports all worked.

    glibc writes one for every failed ``dlsym`` too (libcusparseLt probes
    ``InitializeInjectionCaskEnhanced``, jaxlib the ``MPITRAMPOLINE_*`` names):
    the caller gets NULL and goes on. A library that fails to load names a
    symbol it has as undefined in its own dynamic symbol table; a probe names a
    symbol the object that reports it never references. Only the first is
    a problem, and as the import worked, the library was an optional one.
    """
    from mltools.elf.reader import read_symbols

    out: List[Finding] = []
    where = f"{prog.name or '?'} [pid {prog.pid}]"
    for err in prog.errors:
        if err.kind != "symbol lookup error":
            continue
        m = re.search(r"undefined symbol: ([^\s,]+)", err.message)
        symbol = m.group(1) if m else None
        needs_it = False
        if symbol and err.object and os.path.isfile(err.object):
            try:
                needs_it = any(sym.name == symbol and not sym.defined for sym in read_symbols(err.object).symbols)
            except Exception:   # noqa: BLE001 - unreadable: then we do not know; keep it a warning
                needs_it = True
        if needs_it:
            out.append(Finding(
                "UNDEFINED", Severity.WARNING,
                f"{err.object}: {err.kind}: {err.message} in {where}: it could not be loaded, though the "
                "import went on without it (an optional library)",
                fix="the library was built against another version of the one that defines the symbol: "
                    "install matching versions (VERSION_SKEW above, if any, names them)",
                details={"path": err.object, "package": owners.label(err.object), "symbol": symbol}))
        else:
            out.append(Finding(
                "DLSYM_PROBE", Severity.INFO,
                f"{symbol or err.message}: looked up with dlsym in {where} and not found; the caller checks "
                "for it and goes on (glibc logs every failed lookup as a 'symbol lookup error')",
                fix="nothing to do",
                details={"path": err.object, "symbol": symbol}))
    return out


def _import_fix(error: str) -> str:
    """What to do, from the loader's own words in the ImportError."""
    from mltools.doctor.fixes import install_hint

    m = re.search(r"([\w.+-]+\.so[\w.]*): cannot open shared object file", error)
    if m:
        hint = install_hint(m.group(1))
        return hint or (f"make {m.group(1)} findable: install the package that ships it, or add its "
                        "directory to LD_LIBRARY_PATH (MISSING_LIBRARY above says who needs it)")
    if "version `" in error and "not found" in error:
        return "a newer copy of that library must load first (VERSION_MISSING above names the copy that loads)"
    if "undefined symbol" in error:
        return ("the module was built against another version of a library it uses, or needs another "
                "module imported first (see UNDEFINED or ABI_MISMATCH above)")
    if error.startswith("ModuleNotFoundError"):
        return "this interpreter has no such module: check the name, or install its package into this environment"
    return "run the import by hand for the full traceback"


def _loaded_runtime_findings(loaded: Sequence[LoadedLibrary]) -> List[Finding]:
    out: List[Finding] = []
    by_family: Dict[str, List[LoadedLibrary]] = defaultdict(list)
    for lib in loaded:
        if lib.runtime:
            by_family[lib.runtime.split("/", 1)[0]].append(lib)
    omp = by_family.get("openmp", [])
    if len(omp) > 1:
        kmp = [lib for lib in omp if lib.runtime.split("/", 1)[1] in ("intel", "llvm", "intel-or-llvm")]
        out.append(Finding(
            "LOADED_DUP_OPENMP", Severity.ERROR if len(kmp) > 1 else Severity.WARNING,
            f"{len(omp)} OpenMP runtimes were mapped into one process: "
            + ", ".join(f"{lib.path} ({lib.package or '-'})" for lib in omp),
            fix="make the packages share one OpenMP runtime; until then set OMP_NUM_THREADS",
            details={"paths": [lib.path for lib in omp]}))
    cuda = by_family.get("cuda-runtime", [])
    if len({lib.runtime for lib in cuda}) > 1:
        out.append(Finding(
            "LOADED_DUP_CUDA_MAJOR", Severity.WARNING,
            "several CUDA runtime majors were mapped into one process: "
            + ", ".join(f"{lib.path} ({lib.package or '-'})" for lib in cuda),
            fix="install one CUDA flavour of every package",
            details={"paths": [lib.path for lib in cuda]}))
    return out
