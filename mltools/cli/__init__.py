"""The ``mltools`` command.

One conversion point for errors: ``MltoolsGroup.invoke`` turns an MltoolsError
into ``Error: <message>`` on stderr and exit status 2 (125 for commands that
run a target program). ``MLTOOLS_DEBUG=1`` also prints the traceback. The
root group also handles SIGINT and SIGTERM for the whole command
(``mltools._lifecycle``): what mltools started is ended and removed, and the
exit status is 130 or 143.
Command modules import only click and light modules at top level, so
``mltools --help`` stays fast; the work is imported inside each command.
"""
from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Mapping, Optional

import click

from mltools import __version__
from mltools.errors import MltoolsError

EXIT_OK = 0
EXIT_FOUND_PROBLEMS = 1
EXIT_CANNOT_RUN = 2
EXIT_TARGET_RUNNER_FAILURE = 125   # as env(1) and timeout(1)


class _ExitError(click.ClickException):
    """Carries our one-line message and exit status through click."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file=None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


def _debug() -> bool:
    return os.environ.get("MLTOOLS_DEBUG", "") not in ("", "0")


def _convert(exc: BaseException, exit_code: int) -> _ExitError:
    if _debug():
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if isinstance(exc, MltoolsError):
        return _ExitError(exc.message, exit_code)
    # A bug in mltools: still one line, with a way to see more.
    return _ExitError(
        f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}"
        + ("" if _debug() else " (MLTOOLS_DEBUG=1 shows the traceback)"),
        exit_code,
    )


_RUNS_TARGET = "mltools.runs_target"


def _own_failure_code(ctx: click.Context) -> int:
    """125 when the command being run executes a target program, else 2."""
    return EXIT_TARGET_RUNNER_FAILURE if ctx.meta.get(_RUNS_TARGET) else EXIT_CANNOT_RUN


class MltoolsGroup(click.Group):
    """A click group whose errors follow the mltools exit-code contract.

    Nested groups use this class too; the innermost one converts the error.
    """

    def parse_args(self, ctx: click.Context, args):
        if ctx.parent is None:   # the command line as typed, for the records benchmarks keep
            ctx.meta["mltools.argv"] = tuple(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        if ctx.parent is None:
            return self._invoke_root(ctx)
        return self._invoke(ctx)

    def _invoke_root(self, ctx: click.Context):
        from mltools._lifecycle import report_interrupt, signals_handled
        from mltools.cli._output import set_quiet

        set_quiet(False)
        try:
            with signals_handled():
                return self._invoke(ctx)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(report_interrupt()) from None

    def _invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, _ExitError):
            raise
        except click.ClickException as exc:   # usage errors, click.BadParameter, ...
            exc.exit_code = _own_failure_code(ctx)
            raise
        except (BrokenPipeError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the one conversion point
            raise _convert(exc, _own_failure_code(ctx)) from None


class TargetCommand(click.Command):
    """A command that runs a target program: it passes on the target's exit
    status (``ctx.exit(status)``) and uses 125 for its own failures, usage
    errors included, as env(1) does."""

    def make_context(self, info_name, args, parent=None, **extra):
        if parent is not None:
            parent.meta[_RUNS_TARGET] = True   # meta is shared along the chain
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            exc.exit_code = EXIT_TARGET_RUNNER_FAILURE
            raise
        ctx.meta[_RUNS_TARGET] = True
        return ctx


class LazyGroup(MltoolsGroup):
    """A group whose subcommands are imported only when one is run (or listed
    for --help), so a command pays only for its own module at start-up."""

    def __init__(self, *args, lazy: Optional[Mapping[str, str]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})       # name -> "module:attribute"

    def list_commands(self, ctx: click.Context):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str):
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self.lazy:
            module, attribute = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]},
             lazy={
                 "bench": "mltools.cli.bench:bench",
                 "cython": "mltools.cli.cython:cython_group",
                 "doctor": "mltools.cli.doctor:doctor_cmd",
                 "elf": "mltools.cli.elf:elf",
                 "env": "mltools.cli.env:env_cmd",
                 "io-fail": "mltools.cli.iofail:io_fail_cmd",
                 "malloc-fail": "mltools.cli.mallocfail:malloc_fail_cmd",
             })
@click.version_option(__version__, "--version", prog_name="mltools",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """Tools for the people who make ML systems fast and debug them when they break.

    Exit status: 0 ran and all is well; 1 ran and found problems; 2 could not
    run. Commands that run a target program return its status (128+N for
    signal N) and 125 for their own failure. Every command has --json.
    """


def main(argv=None) -> None:
    cli.main(args=argv, prog_name="mltools")
