"""``mltools elf check``: what ld.so would reject, found without running the file."""
from __future__ import annotations

import os
import sys
from typing import Optional

import click

from mltools.cli._options import fail_on_option, json_option, python_option, quiet_option
from mltools.cli._output import emit


def _is_library(path: str) -> bool:
    """An ELF file without a program interpreter: a shared library, not a Python executable."""
    from mltools.elf.files import looks_like_elf
    from mltools.elf.reader import ElfFormatError, read_elf

    if not os.path.isfile(path) or not looks_like_elf(path):
        return False
    try:
        return read_elf(path).interp is None
    except (ElfFormatError, OSError):
        return False


@click.command("check")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@python_option("--as-python", bare_means_running=True,
               help_text="Check inside this Python interpreter, as an import would load it: "
                         "--as-python=EXE, or bare for the one running mltools. Automatic for "
                         "*.cpython-*.so and *.abi3.so files.")
@click.option("--after", "after", default="", metavar="MODULE,...",
              help="Import these modules first (in a child interpreter) and treat the libraries "
                   "they loaded as already loaded, e.g. --after torch (implies --as-python).")
@fail_on_option(examples=("MISSING", "VERSION_MISSING", "VERSION_MISSING_WEAK", "UNDEFINED"))
@json_option
@quiet_option
@click.pass_context
def check_cmd(ctx: click.Context, files, python: Optional[str], after: str, fail_on,
              as_json: bool) -> None:
    """Check FILEs statically as ld.so would load them.

    Resolves each FILE's dependency tree with the loader's rules, then checks
    every version need against the library that actually resolves (ld.so's
    "version `X' not found (required by F)") and every undefined non-weak
    symbol against the lookup scope in load order, with symbol versions.
    Missing C++ symbols that exist with the other std::string ABI are
    ABI_MISMATCH. Nothing is run, except a child interpreter for --after.

    Codes: MISSING, FATAL_CANDIDATE, VERSION_MISSING, VERSION_MISSING_WEAK,
    UNDEFINED, ABI_MISMATCH, FRAGILE_ORDER, DUP_RUNTIME, UNREADABLE, and the
    resolver's own (LOAD_ORDER_DEPENDENT, ...).

    Exit status: 0 clean, 1 a finding matched --fail-on, 2 could not run.
    """
    from mltools.elf.check import check_files
    from mltools.elf.describe import render_check

    files = list(files)
    if python and _is_library(python):
        # "--as-python FILE": click took FILE as the interpreter; write --as-python=EXE for one
        files.insert(0, python)
        python = ""
    if not files:
        raise click.UsageError("Missing argument 'FILES...'.")
    modules = tuple(m.strip() for m in after.split(",") if m.strip())
    report = check_files(files, python=python, after=modules, fail_on=fail_on,
                         auto_python=sys.executable)
    emit(report, as_json, render_check)
    if report.failed:
        ctx.exit(1)
