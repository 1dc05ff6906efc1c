"""Options shared by many commands, declared once, with one meaning each.

- ``--json``: one JSON document on stdout; ``--quiet``: no progress or warnings on stderr.
- ``--fail-on``: when the run "found problems" (exit 1): the grammar of
  :func:`mltools.findings.parse_fail_on` (severities, finding codes, none).
- ``-j/--jobs``: at most N parallel workers; unset or 0 lets the command choose
  from the usable CPUs. The output never depends on it.
- ``--root``: a sysroot whose files stand for /.
- ``--python``: a Python interpreter, resolved by :func:`mltools.python.resolve_interpreter`.
"""
from typing import Optional, Sequence

import click

json_option = click.option(
    "--json", "as_json", is_flag=True,
    help="Print one JSON document (with schema and version keys) on stdout.",
)


def _set_quiet(ctx, param, value):
    if value:
        from mltools.cli._output import set_quiet
        set_quiet(True)


quiet_option = click.option(
    "-q", "--quiet", is_flag=True, expose_value=False, is_eager=True, callback=_set_quiet,
    help="No progress lines and no warnings on stderr (errors still).")


class FailOnType(click.ParamType):
    """``--fail-on`` values, parsed into a :class:`mltools.findings.FailOn`."""
    name = "fail-on"

    def __init__(self, examples: Sequence[str] = ("MISSING", "UNDEFINED")):
        self.examples = tuple(examples)

    def convert(self, value, param, ctx):
        from mltools.findings import FailOn, parse_fail_on

        if isinstance(value, FailOn):
            return value
        try:
            return parse_fail_on(str(value), self.examples)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def fail_on_option(default: Optional[str] = "error", *, examples: Sequence[str] = ("MISSING", "UNDEFINED"),
                   default_text: Optional[str] = None):
    """``--fail-on``; ``default`` None leaves the choice to the command (a config file),
    with ``default_text`` saying what it is."""
    return click.option(
        "--fail-on", "fail_on", type=FailOnType(examples), default=default, metavar="LEVEL,CODE",
        show_default=default_text or True,
        help="Exit 1 when a finding is at or above this severity (info, warning, error) or has one of "
             "these codes; comma-separated, e.g. warning or " + ",".join(examples[:2]) + "; none never.")


def _no_zero(ctx, param, value):
    return value or None


def jobs_option(*, applies: str = ""):
    """``-j/--jobs N``; ``applies`` names the part of the command it affects (e.g. "Sweep: ")."""
    return click.option(
        "-j", "--jobs", "jobs", type=click.IntRange(min=0), default=None, metavar="N", callback=_no_zero,
        help=f"{applies}Run at most N workers in parallel (default: chosen from the usable CPUs); "
             "the output does not depend on it.")


def root_option(help_text: str = "Resolve inside the sysroot DIR (its ld.so.cache and directories)."):
    return click.option("--root", default=None, type=click.Path(file_okay=False), metavar="DIR",
                        help=help_text)


def python_option(name: str = "--python", *, bare_means_running: bool = False, help_text: str = ""):
    """A Python interpreter: a path or a name on PATH. With ``bare_means_running`` the option
    may be given without a value (``--as-python``) for the interpreter running mltools."""
    extra = {"is_flag": False, "flag_value": ""} if bare_means_running else {}
    return click.option(name, "python", default=None, metavar="[EXE]" if bare_means_running else "EXE",
                        help=help_text, **extra)
