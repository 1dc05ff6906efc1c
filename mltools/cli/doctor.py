"""``mltools doctor``: diagnose a Python ML environment's native side."""
from __future__ import annotations

import click

from mltools.cli import MltoolsGroup
from mltools.cli._options import fail_on_option, jobs_option, json_option, python_option, quiet_option
from mltools.cli._output import Progress, emit


def _split_imports(values) -> tuple:
    mods = []
    for v in values:
        mods.extend(m.strip() for m in v.split(",") if m.strip())
    return tuple(mods)


@click.group("doctor", cls=MltoolsGroup, invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})
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
@click.option("--cpu", metavar="NAME", default=None,
              help="Judge the CPU instructions against this CPU instead of this machine's: x86-64, x86-64-v2, "
                   "x86-64-v3, x86-64-v4, or a model such as haswell, skylake-avx512, icelake-server, "
                   "sapphirerapids, znver3.")
@click.option("--target", "targets", metavar="NAME,...", multiple=True,
              help="Also judge every versioned need (GLIBC_, GLIBCXX_, CXXABI_, GCC_) against another machine: "
                   "a manylinux policy (manylinux_2_17, manylinux2014, manylinux_2_28, ...) or a distribution "
                   "(debian-11, ubuntu-20.04, rhel-8, amazonlinux-2023, ...).")
@click.option("--wheel", "wheels", metavar="FILE.whl", multiple=True,
              help="Check this wheel before installing it (repeatable): its files read from the archive, "
                   "resolved inside the wheel first, then against --target (default: this machine), "
                   "the manylinux policy it satisfies, and its CPU instructions.")
@click.option("--isa/--no-isa", "isa", default=True, show_default=True,
              help="Scan the CPU instructions every file uses (results cached by file content).")
@jobs_option(applies="CPU-instruction scan: ")
@fail_on_option(examples=("MISSING_LIBRARY", "DUP_RUNTIME"))
@json_option
@quiet_option
def doctor_cmd(python, imports, paths, gpu_arch, env_set, env_unset, targets, cpu, wheels, isa, jobs, fail_on,
               as_json) -> None:
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

    `mltools doctor diff A.json B.json` compares two reports (two nodes).

    The CUDA stack, without running it: the NVIDIA libraries each library
    opens by name at run time, resolved as dlopen would (after torch's, JAX's
    and cuda-pathfinder's preloads), copies shadowed by LD_LIBRARY_PATH,
    versioned symbols one NVIDIA library needs from a copy that lacks them,
    the wheels' Requires-Dist against what is installed, and the GPU code
    (SASS and PTX from the fatbin headers) against the GPUs nvidia-smi finds
    or --gpu-arch names.

    Exit status: 0 nothing matches --fail-on; 1 something does; 2 could not run.
    """
    ctx = click.get_current_context()
    if ctx.invoked_subcommand:
        _no_own_options(ctx)
        return
    if wheels:
        _check_wheels(ctx, wheels, targets, cpu, isa, jobs, fail_on, as_json)
        return
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
    with Progress("doctor") as bar:
        report = diagnose(python, imports=_split_imports(imports), paths=paths, fail_on=fail_on,
                          env_changes=changes, gpu_arch=_split_imports(gpu_arch), isa=isa, cpu=cpu, jobs=jobs,
                          targets=_split_imports(targets), progress=bar)
    emit(report, as_json, render_doctor)
    if report.failed:
        click.get_current_context().exit(1)


def _no_own_options(ctx: click.Context) -> None:
    given = [p.opts[0] for p in ctx.command.params
             if ctx.get_parameter_source(p.name) not in (click.core.ParameterSource.DEFAULT, None)
             and p.expose_value]
    if given:
        raise click.UsageError(f"{', '.join(given)} belong{'s' if len(given) == 1 else ''} to `mltools doctor` itself, "
                               f"not to `mltools doctor {ctx.invoked_subcommand}`")


def _check_wheels(ctx, wheels, targets, cpu, isa, jobs, fail_on, as_json) -> None:
    from mltools.doctor.describe import render_wheels
    from mltools.doctor.wheel import check_wheels

    clash = [opt for opt, name in (("--python", "python"), ("--import", "imports"), ("--path", "paths"),
                                   ("--gpu-arch", "gpu_arch"), ("--env", "env_set"), ("--unset", "env_unset"))
             if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    if clash:
        raise click.UsageError(f"--wheel checks a wheel, not an environment: drop {', '.join(clash)}")
    with Progress("CPU instructions, bytes decoded") as progress:
        report = check_wheels(wheels, _split_imports(targets), cpu=cpu, isa=isa, fail_on=fail_on,
                              jobs=jobs, progress=progress)
    emit(report, as_json, render_wheels)
    if report.failed:
        ctx.exit(1)


@doctor_cmd.command("diff")
@click.argument("first", metavar="A.json", type=click.Path(dir_okay=False))
@click.argument("second", metavar="B.json", type=click.Path(dir_okay=False))
@click.option("--all", "show_all", is_flag=True, help="Also list the differences that are expected between "
              "nodes (host names, paths under different prefixes, timings).")
@json_option
@quiet_option
def doctor_diff_cmd(first, second, show_all, as_json) -> None:
    """Compare two `mltools doctor --json` reports (e.g. two nodes).

    What differs that matters, most important first: the CPU's instruction-set
    level and the instructions the environment needs, the resolved file or
    version of the same SONAME, packages and their versions, runtime libraries
    and their counts, the GPU and its driver, the variables that steer loading
    and threading, and the findings one side has and the other does not.

    Exit status: 0 nothing that matters differs; 1 something does; 2 a report
    could not be read.
    """
    from mltools.doctor.describe import render_diff
    from mltools.doctor.diff import diff_reports

    result = diff_reports(first, second, show_all=show_all)
    emit(result, as_json, render_diff)
    if result.differs:
        click.get_current_context().exit(1)
