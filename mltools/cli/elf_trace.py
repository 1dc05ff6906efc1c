"""``mltools elf trace``: a structured LD_DEBUG report of a command."""
from __future__ import annotations

from typing import Optional

import click

from mltools.cli import TargetCommand
from mltools.cli._options import json_option, quiet_option

@click.command("trace", cls=TargetCommand,
               context_settings={"allow_interspersed_args": False, "ignore_unknown_options": False})
@click.option("--categories", default="libs,files,versions", show_default=True,
              help="LD_DEBUG categories: libs, files, versions, bindings, or all "
                   "(libs and files are always added).")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, writable=True),
              help="Write the report to FILE and leave the target's stdout on stdout.")
@click.option("--keep", "keep_dir", type=click.Path(file_okay=False),
              help="Also copy the raw LD_DEBUG files (ld.<pid>) into DIR.")
@click.option("--symbol", "symbol_patterns", multiple=True, metavar="PATTERN",
              help="With bindings: list the objects these symbols (shell patterns, e.g. 'omp_*') "
                   "bound to; repeatable. --json always has every symbol.")
@click.option("-v", "--verbose", is_flag=True,
              help="Every library, every path tried, and the lines not understood.")
@json_option
@quiet_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def trace_cmd(ctx: click.Context, categories: str, report_file: Optional[str],
              keep_dir: Optional[str], symbol_patterns, verbose: bool, as_json: bool, command) -> None:
    """Run COMMAND under LD_DEBUG and report what ld.so did.

    Per process and per program (an exec starts a new one in the same
    process): each library loaded, the paths searched and where it was found,
    who needed or dlopen'ed it, failed version checks and loader errors, and
    with --categories ...,bindings which object each symbol bound to and the
    interpositions. ld.so writes to a private temporary directory, never into
    the program's stderr.

    Where things go: the report (text, or JSON with --json) is written to
    stdout after COMMAND exits, and COMMAND's own stdout is sent to stderr so
    that stdout holds only the report. With --report FILE the report goes to
    FILE and COMMAND's stdout stays on stdout.

    Exit status: COMMAND's (128+N if signal N killed it); 127 if COMMAND does
    not exist, 126 if it cannot be executed, 125 if mltools itself failed.

    Example: mltools elf trace --categories libs,bindings -- python -c 'import numpy'
    """
    from mltools.cli._output import emit, render_result
    from mltools.elf import lddebug
    from mltools.elf.describe import render_trace
    from mltools._target import TargetStartError
    from mltools.elf.trace import trace_command

    try:
        cats = lddebug.parse_categories(categories)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--categories") from None
    if symbol_patterns and "bindings" not in cats:
        raise click.BadParameter("needs bindings in --categories", param_hint="--symbol")
    if report_file:
        from mltools._files import check_writable
        check_writable(report_file, "--report")     # refuse before running the command, not after
    try:
        report = trace_command(list(command), categories=cats, keep_dir=keep_dir,
                               target_stdout_fd=None if report_file else 2)
    except TargetStartError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        ctx.exit(exc.exit_status)
        return
    def render(r):
        return render_trace(r, verbose, tuple(symbol_patterns))

    if report_file:
        text = render_result(report, as_json, render)
        try:
            with open(report_file, "w", encoding="utf-8") as fh:
                fh.write(text.rstrip("\n") + "\n")
        except OSError as exc:
            click.echo(f"Error: cannot write --report {report_file}: {exc.strerror}", err=True)
            ctx.exit(125)
            return
    else:
        emit(report, as_json, render)
    ctx.exit(report.exit_status)
