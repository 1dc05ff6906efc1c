"""``mltools cython``: pointer-cast pitfalls in Cython code."""
from __future__ import annotations

import click

from mltools.cli import MltoolsGroup
from mltools.cli._options import fail_on_option, jobs_option, json_option, quiet_option
from mltools.cli._output import emit, warn


@click.group("cython", cls=MltoolsGroup)
def cython_group() -> None:
    """Pointer-cast pitfalls in Cython code, found with Cython's own type analysis."""


@cython_group.command("check")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-I", "--include-dir", "include_dirs", multiple=True, metavar="DIR",
              help="Search DIR for cimported .pxd files (repeatable).")
@click.option("-E", "--compile-time-env", "env", multiple=True, metavar="NAME=VALUE",
              help="Define a compile-time name for DEF/IF (repeatable).")
@click.option("--cplus", is_flag=True, default=None, help="Analyse in C++ mode.")
@click.option("--select", multiple=True, metavar="CODES",
              help="Only these rule codes or prefixes (comma-separated, repeatable).")
@click.option("--ignore", multiple=True, metavar="CODES",
              help="Leave out these rule codes or prefixes (comma-separated, repeatable).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default=None,
              help="Output format: text (default), json, or github workflow annotations.")
@json_option
@quiet_option
@fail_on_option(None, examples=("CYP001", "CYP004"), default_text="warning, or fail-on in pyproject.toml")
@click.option("--no-types", is_flag=True,
              help="Syntax only: skip Cython's type analysis (fewer, weaker findings).")
@jobs_option()
def check_cmd(paths, include_dirs, env, cplus, select, ignore, fmt, as_json, fail_on, no_types, jobs) -> None:
    """Check Cython code (.pyx, .pxd inline code, .pxi through their includers, and
    pure-Python-mode .py) for pointer pitfalls.

    Runs Cython's parser and type analysis (no C is generated) and reports
    casts such as <void*>obj.ptr (the int object's address, not the address it
    holds), <void*>arr.data on an untyped array, pointers kept in integers
    narrower than a pointer, and pointers into Python objects that die first.
    Directories are searched for *.pyx, *.pxd and pure-Python-mode *.py,
    skipping build directories and virtual environments; files are spread over
    worker processes (-j) and the report does not depend on how many. Settings
    can also live in pyproject.toml under [tool.mltools.cython]. Suppress a
    finding with `# noqa: CYP001` (or a bare `# noqa`) on its line.

    A file Cython cannot parse (a missing -E name, a syntax error) is reported
    at its line and the other files are still checked.

    Exit status: 0 nothing matches --fail-on; 1 findings, or a file that could
    not be checked; 2 usage error, or no file could be checked; 130/143
    interrupted (the files finished so far are reported).
    """
    from mltools.cli._output import Progress
    from mltools.cythoncheck import CheckSettings, check_paths, parse_env
    from mltools.cythoncheck.describe import render_github, render_text
    from mltools.cythoncheck.config import load_config
    from mltools.errors import UsageError
    from mltools.findings import parse_fail_on

    if as_json and fmt not in (None, "json"):
        raise UsageError(f"--json conflicts with --format {fmt}")
    fmt = "json" if as_json else (fmt or "text")
    cfg = load_config(paths)
    settings = CheckSettings(
        include_dirs=tuple(cfg.include_dirs) + tuple(include_dirs),
        compile_time_env=tuple(dict(list(cfg.compile_time_env) + list(parse_env(env))).items()),
        cplus=cfg.cplus if cplus is None else cplus,
        select=tuple(select) or cfg.select,
        ignore=tuple(ignore) or cfg.ignore,
        types=not no_types,
        jobs=jobs or 0,
    )
    fail_on = fail_on or cfg.fail_on or parse_fail_on("warning")
    with Progress("cython check") as bar:
        report = check_paths(paths, settings, progress=bar if bar.enabled else None)
    for n in report.notes:
        warn(n)
    if fmt == "json":
        from mltools.cythoncheck.check import CheckJson
        emit(CheckJson.of(report), True)
    elif fmt == "github":
        emit(report, False, render_github)
    else:
        emit(report, False, render_text)
    if report.errors or fail_on.matches(report.findings):
        click.get_current_context().exit(1)


@cython_group.command("demo")
@json_option
@quiet_option
def demo_cmd(as_json: bool) -> None:
    """Compile and run the pitfalls for real, next to their fixes.

    Builds a tiny module with the installed Cython and C compiler in a
    temporary directory and runs it in a child process: <void*> of a Python int
    holding an address (the wrong address, and a write that changes the int
    instead of the array), .data of an untyped numpy array (a temporary
    memoryview), and <void*> of a bytes object. Needs a C compiler and the
    Python headers.

    Exit status: 0 every case showed the pitfall and its fix; 1 one did not.
    """
    from mltools.cythoncheck.demo import run_demo
    from mltools.cythoncheck.describe import render_demo

    report = run_demo()
    emit(report, as_json, render_demo)
    if not report.all_shown:
        click.get_current_context().exit(1)
