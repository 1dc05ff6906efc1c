"""``mltools doctor``: diagnose a Python ML environment's native side."""
from __future__ import annotations

import click

from mltools.cli._options import fail_on_option, json_option, python_option, quiet_option
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
@click.option("--gpu-arch", "gpu_arch", metavar="SM,...", multiple=True,
              help="Judge the GPU code against these GPUs (sm_90,sm_120 or 9.0) instead of the ones "
                   "nvidia-smi finds: for the machine the job will run on.")
@click.option("--env", "env_set", metavar="KEY=VALUE", multiple=True,
              help="Diagnose as if KEY were set to VALUE (repeatable), e.g. --env LD_LIBRARY_PATH=/usr/local/cuda/lib64.")
@click.option("--unset", "env_unset", metavar="VAR", multiple=True,
              help="Diagnose as if VAR were not set (repeatable).")
@fail_on_option(examples=("MISSING_LIBRARY", "DUP_RUNTIME"))
@json_option
@quiet_option
def doctor_cmd(python, imports, paths, gpu_arch, env_set, env_unset, fail_on, as_json) -> None:
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

    The CUDA stack, without running it: the NVIDIA libraries each library
    opens by name at run time, resolved as dlopen would (after torch's, JAX's
    and cuda-pathfinder's preloads), copies shadowed by LD_LIBRARY_PATH,
    versioned symbols one NVIDIA library needs from a copy that lacks them,
    the wheels' Requires-Dist against what is installed, and the GPU code
    (SASS and PTX from the fatbin headers) against the GPUs nvidia-smi finds
    or --gpu-arch names.

    Exit status: 0 nothing matches --fail-on; 1 something does; 2 could not run.
    """
    from mltools.doctor import diagnose
    from mltools.doctor.describe import render_doctor
    from mltools.errors import UsageError
    changes = {}
    for item in env_set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env expects KEY=VALUE, got {item!r}")
        changes[key] = value
    for key in env_unset:
        changes[key] = None
    with Progress("doctor: static pass") as bar:
        report = diagnose(python, imports=_split_imports(imports), paths=paths, fail_on=fail_on,
                          env_changes=changes, gpu_arch=_split_imports(gpu_arch), progress=bar)
    emit(report, as_json, render_doctor)
    if report.failed:
        click.get_current_context().exit(1)
