"""``mltools doctor``: diagnose a Python ML environment's native side."""
from __future__ import annotations

import click

from mltools.cli._options import fail_on_option, jobs_option, json_option, python_option, quiet_option
from mltools.cli._output import Progress, emit


def _split_imports(values) -> tuple:
    mods = []
    for v in values:
        mods.extend(m.strip() for m in v.split(",") if m.strip())
    return tuple(mods)


@click.command("doctor")
@python_option(help_text="Diagnose the environment of this interpreter (default: the one running mltools).")
@click.option("--import", "imports", metavar="MOD,...", multiple=True,
              help="Also import these modules in a child process under the loader's tracer and "
                   "report what really loads (the dynamic pass).")
@click.option("--path", "paths", metavar="DIR", multiple=True, type=click.Path(file_okay=False),
              help="Also scan the ELF files under DIR (repeatable).")
@click.option("--cpu", metavar="NAME", default=None,
              help="Judge the CPU instructions against this CPU instead of this machine's: x86-64, x86-64-v2, "
                   "x86-64-v3, x86-64-v4, or a model such as haswell, skylake-avx512, icelake-server, "
                   "sapphirerapids, znver3.")
@click.option("--isa/--no-isa", "isa", default=True, show_default=True,
              help="Scan the CPU instructions every file uses (results cached by file content).")
@jobs_option(applies="CPU-instruction scan: ")
@fail_on_option(examples=("MISSING_LIBRARY", "DUP_RUNTIME"))
@json_option
@quiet_option
def doctor_cmd(python, imports, paths, cpu, isa, jobs, fail_on, as_json) -> None:
    """Diagnose the native side of a Python ML environment.

    Reads every ELF file under the interpreter's sys.path (and --path dirs)
    without running it: missing libraries, unmet symbol versions (GLIBC_,
    GLIBCXX_, CXXABI_), undefined symbols, C++ ABI mismatches, broken or
    Git-LFS-pointer .so files, several OpenMP/BLAS/CUDA runtimes that can
    end up in one process (and which packages bring them), a reference BLAS,
    identical copies; then the environment: LD_LIBRARY_PATH/LD_PRELOAD,
    PYTHONMALLOC, thread counts against the CPUs, the CUDA driver against the
    CUDA runtimes, a stale ld.so cache, transparent huge pages and NUMA
    balancing; and the CPU instructions each file uses, with the ones that
    run unguarded (at load, or with no CPU check in the file) judged against
    this CPU or --cpu. Each finding has a stable code, the package that owns
    the file and a fix.

    Exit status: 0 nothing matches --fail-on; 1 something does; 2 could not run.
    """
    from mltools.doctor import diagnose
    from mltools.doctor.describe import render_doctor
    with Progress("CPU instructions, bytes decoded") as progress:
        report = diagnose(python, imports=_split_imports(imports), paths=paths, fail_on=fail_on,
                          isa=isa, cpu=cpu, jobs=jobs, progress=progress)
    emit(report, as_json, render_doctor)
    if report.failed:
        click.get_current_context().exit(1)
