"""``mltools io-fail``: make file-system calls of a program fail, once or in a sweep, and check what it left."""
from __future__ import annotations

import os
import sys

import click

from mltools.cli import TargetCommand
from mltools.cli._options import json_option, quiet_option


@click.command("io-fail", cls=TargetCommand,
               context_settings={"allow_interspersed_args": False, "ignore_unknown_options": False})
@click.option("--after", type=click.IntRange(min=0), metavar="N",
              help="The first N eligible calls succeed, every later one fails.")
@click.option("--fail-at", type=click.IntRange(min=1), metavar="N", help="Only the N-th eligible call fails (1-based).")
@click.option("--count", type=click.IntRange(min=1), metavar="K", help="Fail K calls from the first one chosen.")
@click.option("--only", metavar="FAMILY,...",
              help="Count only these calls: write, pwrite, writev, pwritev, sendfile, copy_file_range, fsync, "
                   "fdatasync, close, rename, open (for writing), ftruncate, fallocate, mkdir, fwrite, fflush, "
                   "fclose.")
@click.option("--path", "path_glob", metavar="GLOB",
              help="Count only calls on files whose path matches GLOB ('*' also matches '/'; relative to the "
                   "current directory), e.g. 'ckpt/*': stdout and the program's other files are untouched.")
@click.option("--errno", "errno_name", default="ENOSPC", show_default=True, metavar="NAME",
              help="The error a failed call returns: ENOSPC (disk full), EIO, EDQUOT, EINTR, or any errno name.")
@click.option("--short-write", is_flag=True,
              help="A failing write writes half of its bytes and returns that count (calls that cannot be "
                   "short fail with --errno).")
@click.option("--check", "check_cmd", metavar="CMD",
              help="After each run: a command (split as a shell would, run without a shell) that exits 0 "
                   "when what the target left on disk is good, e.g. \"python -c 'import torch; "
                   "torch.load(\\\"ckpt.pt\\\")'\".")
@click.option("--check-timeout", type=click.FloatRange(min=0.001), default=600.0, show_default=True,
              help="Seconds before --check counts as failed.")
@click.option("--state", "state_dir", type=click.Path(file_okay=False, exists=True), metavar="DIR",
              help="The folder the target writes: copied first and put back as it was before every point "
                   "and after the last run.")
@click.option("--scope", type=click.Choice(["root", "tree", "each"]), default="root", show_default=True,
              help="root: only the first process running the target; tree: it and every process started "
                   "after it, one counter; each: every process running the target, each with its own counter.")
@click.option("--target-exe", metavar="PATH",
              help="The executable that is the target (for wrappers that run helper programs first).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.001), default=600.0, show_default=True,
              help="Seconds before a run counts as a hang (exit status 124).")
@click.option("--max-records", type=click.IntRange(min=1), default=64, show_default=True,
              help="Failures recorded in detail (with a stack) per process.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Also write the JSON report to FILE.")
@click.option("--sweep", is_flag=True,
              help="Fail each eligible call in turn (1, 2, …) until one is not reached; check and classify each.")
@click.option("--persistent", is_flag=True, help="Sweep: from the chosen call on, every eligible call fails.")
@click.option("--fork/--no-fork", "fork", default=None,
              help="Sweep: fork each point from the process waiting at its first eligible call instead of "
                   "re-running the program (default: on for --scope root).")
@click.option("--max-points", type=click.IntRange(min=1), help="Sweep: test at most this many calls.")
@click.option("--point-timeout", type=click.FloatRange(min=0.001), default=60.0, show_default=True,
              help="Sweep: seconds per point before it counts as a hang.")
@json_option
@quiet_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="PROGRAM [ARGS]...")
@click.pass_context
def io_fail_cmd(ctx, after, fail_at, count, only, path_glob, errno_name, short_write, check_cmd, check_timeout,
                state_dir, scope, target_exe, timeout_s, max_records, report_file, sweep, persistent, fork,
                max_points, point_timeout, as_json, command):
    """Run PROGRAM with an LD_PRELOAD shim that makes chosen file-system calls fail.

    \b
    mltools io-fail --fail-at 3 -- python3 train.py         the 3rd eligible call fails (ENOSPC)
    mltools io-fail --path 'ckpt/*' --sweep --state ckpt \\
        --check "python3 -c 'import torch; torch.load(\\"ckpt/last.pt\\")'" -- python3 train.py

    A sweep fails each eligible call in turn, puts --state back before every
    point, runs --check on what the target left and classifies the point:
    crash, hang, silent-corruption (exit 0, the check fails), old-state-lost
    (the target failed and the previous good state no longer passes the
    check), reported (it failed, the check passes), recovered (exit 0, the
    check passes). Output and exit status as malloc-fail: the target's own
    status for one run, 125 when io-fail could not run it, 127 when PROGRAM
    does not exist; --sweep exits 1 when a point crashed, hung, corrupted
    silently or lost the old state, else 0; 130 when interrupted, after
    printing the points it had finished.
    """
    import shlex

    from mltools.cli._output import Progress
    from mltools.cli._shimcmd import check_options, finish_run, finish_sweep, name_list, program_errors
    from mltools.errors import UsageError
    from mltools.iofail.config import IoFailSpec, IoRunOptions
    from mltools.preload.runner import stdin_for_single_run, stdin_for_sweep

    check_options(report_file, persistent, sweep)
    try:
        check = tuple(shlex.split(check_cmd)) if check_cmd else ()
    except ValueError as exc:
        raise UsageError(f"--check: {exc}") from None
    if check_cmd is not None and not check:
        raise UsageError("--check: an empty command")
    spec = IoFailSpec(after=after, fail_at=fail_at, count=count,
                      only=name_list(only),
                      path=os.path.join(os.getcwd(), path_glob) if path_glob else None, errno_name=errno_name,
                      short_write=short_write)
    if spec.count is not None and not spec.injects:
        raise UsageError("--count needs --after or --fail-at")
    options = IoRunOptions(scope=scope, target_exe=target_exe, timeout_s=timeout_s, max_records=max_records,
                           check=check, check_timeout_s=check_timeout,
                           state_dir=os.path.abspath(state_dir) if state_dir else None)

    with program_errors(ctx):
        if sweep:
            from mltools.iofail.describe import render_sweep
            from mltools.iofail.outcome import BUG_CLASSES
            from mltools.iofail.sweep import sweep as run_sweep
            stdin = stdin_for_sweep(sys.stdin)
            with Progress("sweep") as bar:
                rep = run_sweep(list(command), spec, options, persistent=persistent, fork=fork,
                                max_points=max_points, point_timeout_s=point_timeout, progress=bar, stdin=stdin)
            finish_sweep(ctx, rep, as_json, render_sweep, report_file, BUG_CLASSES)

        from mltools.iofail.describe import render_report
        from mltools.iofail.run import run_target
        report, raw = run_target(list(command), spec, options, stdin=stdin_for_single_run(sys.stdin))
    finish_run(ctx, report, raw, as_json, render_report, report_file)
