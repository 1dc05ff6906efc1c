"""``mltools doctor``: diagnose a Python ML environment's native side."""
from __future__ import annotations

import os

import click

from mltools.cli._options import json_option
from mltools.cli._output import Table, emit, key_values

_SEVERITY_TITLES = (("error", "Errors"), ("warning", "Warnings"), ("info", "Notes"))


def _short(path: str, base: str) -> str:
    if path and base and path.startswith(base.rstrip("/") + "/"):
        return path[len(base.rstrip("/")) + 1:]
    return path


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _rel(text: str, base: str) -> str:
    """Paths under the first site dir, shown relative to it (JSON keeps them absolute)."""
    return text.replace(base.rstrip("/") + "/", "") if base else text


def _needed_by_text(paths, base: str) -> str:
    if not paths:
        return "-"
    if len(paths) == 1:
        return _short(paths[0], base)
    def top(p):
        short = _short(p, base)
        return short.split("/", 1)[0] if short != p else os.path.dirname(p)
    tops = sorted({top(p) for p in paths})
    return f"{len(paths)} files under {', '.join(tops[:4])}" + (", ..." if len(tops) > 4 else "")


def render_doctor(r) -> str:
    py = r.python
    base = py.site_dirs[0] if py.site_dirs else ""
    out = [key_values([
        ("python", f"{py.executable} ({py.implementation} {py.version}"
                   + (f", virtualenv {py.prefix}" if py.in_virtualenv else f", prefix {py.prefix}") + ")"),
        ("scanned", f"{_n(r.elf_files, 'ELF file')} ({_n(r.extension_modules, 'extension module')}) under "
                    f"{_n(len(r.scanned_dirs), 'dir')}, {_n(r.distributions, 'distribution')}"),
        ("site dir", base or "-"),
        ("took", f"{r.timings_s.get('total', 0):.2f} s"),
    ])]
    if r.runtimes:
        t = Table(["family", "impl", "soname", "package", "path", "needed by"], title="\nRuntime libraries")
        for c in r.runtimes:
            fam = c.family + (f" {c.major}" if c.major else "")
            t.add(fam, c.implementation, c.soname, c.package or "-", _short(c.path, base) or "not found",
                  _needed_by_text(c.needed_by, base))
        out.append(t.render())
    if r.imported:
        libs = [lib for lib in r.loaded if not lib.extension_module]
        n_ext = len(r.loaded) - len(libs)
        t = Table(["#", "library", "package", "how", "path"],
                  title=f"\nShared libraries loaded by `import {', '.join(r.imported)}`, in load order "
                        f"(and {n_ext} extension modules)")
        for i, lib in enumerate(libs, 1):
            how = "dlopen" if lib.dlopened else "needed"
            if lib.dlopened and lib.loaded_by:
                how += f" by {os.path.basename(lib.loaded_by)}"
            if lib.runtime:
                how += f" [{lib.runtime}]"
            t.add(i, lib.soname, lib.package or "-", how, _short(lib.path, base))
        out.append(t.render())
    if r.scope:
        out.append("\nNot checked:\n" + "\n".join(f"  - {s}" for s in r.scope))
    if not r.findings:
        out.append("\nNo problems found.")
        return "\n".join(out)
    counts = {s: sum(1 for f in r.findings if f.severity.value == s) for s, _ in _SEVERITY_TITLES}
    nouns = {"error": "error", "warning": "warning", "info": "note"}
    out.append("\n" + ", ".join(f"{n} {nouns[s]}{'s' if n != 1 else ''}" for s, n in counts.items() if n))
    for sev, title in _SEVERITY_TITLES:
        group = [f for f in r.findings if f.severity.value == sev]
        if not group:
            continue
        out.append(f"\n{title}")
        for f in group:
            out.append(f"  {f.code}: {_rel(f.message, base)}")
            pkg = f.details.get("package") if isinstance(f.details, dict) else None
            if pkg:
                out.append(f"      package: {pkg}")
            if f.fix:
                out.append(f"      fix: {_rel(f.fix, base)}")
    if r.failed:
        out.append(f"\nexit status 1: findings at or above --fail-on {r.fail_on}")
    return "\n".join(out)


def _split_imports(values) -> tuple:
    mods = []
    for v in values:
        mods.extend(m.strip() for m in v.split(",") if m.strip())
    return tuple(mods)


@click.command("doctor")
@click.option("--python", "python", metavar="EXE",
              help="Diagnose the environment of this interpreter (default: the one running mltools).")
@click.option("--import", "imports", metavar="MOD,...", multiple=True,
              help="Also import these modules in a child process under the loader's tracer and "
                   "report what really loads (the dynamic pass).")
@click.option("--path", "paths", metavar="DIR", multiple=True, type=click.Path(file_okay=False),
              help="Also scan the ELF files under DIR (repeatable).")
@click.option("--fail-on", type=click.Choice(["error", "warning", "info"]), default="error", show_default=True,
              help="Exit 1 when a finding at or above this severity is found.")
@json_option
def doctor_cmd(python, imports, paths, fail_on, as_json) -> None:
    """Diagnose the native side of a Python ML environment.

    Reads every ELF file under the interpreter's sys.path (and --path dirs)
    without running it: missing libraries, unmet symbol versions (GLIBC_,
    GLIBCXX_, CXXABI_), undefined symbols, C++ ABI mismatches, broken or
    Git-LFS-pointer .so files, several OpenMP/BLAS/CUDA runtimes that can
    end up in one process (and which packages bring them), a reference BLAS,
    identical copies; then the environment: LD_LIBRARY_PATH/LD_PRELOAD,
    PYTHONMALLOC, thread counts against the CPUs, the CUDA driver against the
    CUDA runtimes, a stale ld.so cache, transparent huge pages and NUMA
    balancing. Each finding has a stable code, the package that owns the file
    and a fix.

    Exit status: 0 nothing at or above --fail-on; 1 something is; 2 could not run.
    """
    from mltools.doctor import diagnose
    from mltools.findings import Severity

    report = diagnose(python, imports=_split_imports(imports), paths=paths,
                      fail_on=Severity.parse(fail_on))
    emit(report, as_json, render_doctor)
    if report.failed:
        click.get_current_context().exit(1)
