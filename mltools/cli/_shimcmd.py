"""What the commands that run a target under a shim (malloc-fail, io-fail) share:
starting it as a shell would (127/126), passing its output on, --report, a sweep's
warnings and exit status."""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Optional, Sequence, Tuple

import click


def write_bytes(stream, data: bytes) -> None:
    """Pass the target's output on unchanged (bytes where the stream allows)."""
    if not data:
        return
    stream.flush()
    if hasattr(stream, "buffer"):
        stream.buffer.write(data)
    else:
        stream.write(data.decode("utf-8", "replace"))
    stream.flush()


def pass_output(raw, as_json: bool) -> None:
    """The target's own output, after it exited: stdout to stdout (stderr with --json)."""
    write_bytes(sys.stderr if as_json else sys.stdout, raw.stdout)
    write_bytes(sys.stderr, raw.stderr)


def check_options(report_file: Optional[str], persistent: bool, sweep: bool) -> None:
    """Before the target runs: --report can be written, and --persistent comes with --sweep."""
    from mltools.errors import UsageError

    if report_file:
        from mltools._files import check_writable
        check_writable(report_file, "--report")
    if persistent and not sweep:
        raise UsageError("--persistent is a --sweep option (for one run use --after N)")


def name_list(text: Optional[str]) -> Tuple[str, ...]:
    """--only's comma-separated names, blanks dropped."""
    return tuple(x.strip() for x in text.split(",") if x.strip()) if text else ()


def write_report(path: Optional[str], result) -> None:
    if path:
        from mltools import _jsonio
        with open(path, "w") as fh:
            fh.write(_jsonio.dumps(result, result.SCHEMA, result.SCHEMA_VERSION) + "\n")


@contextlib.contextmanager
def program_errors(ctx: click.Context) -> Iterator[None]:
    """A program that cannot be started exits as a shell says (127, 126)."""
    from mltools._target import TargetStartError
    from mltools.errors import ToolNotFoundError

    try:
        yield
    except TargetStartError as exc:       # the program itself
        click.echo(f"Error: {exc.message}", err=True)
        ctx.exit(exc.exit_status)
    except ToolNotFoundError as exc:      # its #! interpreter
        click.echo(f"Error: {exc.message}", err=True)
        ctx.exit(127)


def finish_sweep(ctx: click.Context, rep, as_json: bool, render, report_file: Optional[str],
                 bug_classes: Sequence[str]) -> None:
    """Warnings on stderr, the report, then exit 1 when a point found a bug (130/143 when interrupted)."""
    from mltools.cli._output import emit, warn

    for w in rep.warnings:
        warn(w)
    write_report(report_file, rep)
    emit(rep, as_json, render)
    ctx.exit(1 if any(rep.by_class.get(c) for c in bug_classes) else 0)


def finish_run(ctx: click.Context, report, raw, as_json: bool, render, report_file: Optional[str]) -> None:
    """One run: the target's own output first, then the report (stdout with --json, stderr
    for people, as the target's stdout stays on stdout), then the target's exit status."""
    from mltools.cli._output import emit, note

    pass_output(raw, as_json)
    write_report(report_file, report)
    if as_json:
        emit(report, True)
    else:
        note(render(report))
    ctx.exit(report.exit_status)
