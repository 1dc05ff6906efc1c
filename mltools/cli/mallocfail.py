"""``mltools malloc-fail``: make allocations of a program fail, once or in a sweep."""
from __future__ import annotations

import sys

import click

from mltools.cli import TargetCommand
from mltools.cli._options import jobs_option, json_option, quiet_option


def _size(ctx, param, value):
    if value is None:
        return None
    from mltools.mallocfail.config import parse_size
    try:
        return parse_size(value)
    except Exception as exc:   # UsageError -> click's usage error (exit 125)
        raise click.BadParameter(str(exc)) from None


@click.command("malloc-fail", cls=TargetCommand,
               context_settings={"allow_interspersed_args": False, "ignore_unknown_options": False})
@click.option("--after", type=click.IntRange(min=0), metavar="N",
              help="The first N counted calls succeed, every later one fails.")
@click.option("--fail-at", type=click.IntRange(min=1), metavar="N",
              help="Only the N-th counted call fails (1-based).")
@click.option("--count", type=click.IntRange(min=1), metavar="K",
              help="Fail K calls from the first one chosen (with --probability: at most K).")
@click.option("--probability", type=click.FloatRange(0.0, 1.0), metavar="P",
              help="Each counted call fails with probability P (reproducible with --seed).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --probability.")
@click.option("--min-size", callback=_size, metavar="SIZE",
              help="Count only calls of at least SIZE bytes (4096, 64k, 1MB, 1MiB).")
@click.option("--max-size", callback=_size, metavar="SIZE", help="Count only calls of at most SIZE bytes.")
@click.option("--only", metavar="FUNC,...",
              help="Count only these functions (malloc, calloc, realloc, reallocarray, "
                   "posix_memalign, aligned_alloc, memalign, valloc, pvalloc).")
@click.option("--per-thread", is_flag=True,
              help="Count per thread: every thread fails its own N-th call (no shared counter).")
@click.option("--scope", type=click.Choice(["root", "tree", "each"]), default="root", show_default=True,
              help="root: only the first process running the target; tree: it and every process "
                   "started after it, one shared counter; each: every process running the target, "
                   "each with its own counter.")
@click.option("--forward", type=click.Choice(["libc", "next"]), default="libc", show_default=True,
              help="libc: call glibc's __libc_* directly; next: RTLD_NEXT (ASan, jemalloc, tcmalloc).")
@click.option("--target-exe", metavar="PATH",
              help="The executable that is the target (for wrappers that run helper programs first).")
@click.option("--python-malloc", is_flag=True,
              help="Set PYTHONMALLOC=malloc so that Python's small objects go through malloc.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.001), default=600.0, show_default=True,
              help="Seconds before a run counts as a hang (single run), exit status 124.")
@click.option("--max-records", type=click.IntRange(min=1), default=64, show_default=True,
              help="Failures recorded in detail (with a stack) per run.")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Also write the JSON report to FILE.")
@click.option("--sweep", is_flag=True,
              help="Fail each counted call in turn (1, 2, …) until one is not reached; classify each.")
@click.option("--persistent", is_flag=True, help="Sweep: from the chosen index on, every call fails.")
@click.option("--fork/--no-fork", "fork", default=None,
              help="Sweep: fork at each allocation instead of re-running (default: on for --scope root).")
@click.option("--unique-stacks", is_flag=True,
              help="Sweep: test each distinct call stack (8 frames) once.")
@jobs_option(applies="Sweep: ")
@click.option("--max-points", type=click.IntRange(min=1), help="Sweep: test at most this many indices.")
@click.option("--point-timeout", type=click.FloatRange(min=0.001), default=20.0, show_default=True,
              help="Sweep: seconds per point before it counts as a hang.")
@json_option
@quiet_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="PROGRAM [ARGS]...")
@click.pass_context
def malloc_fail_cmd(ctx, after, fail_at, count, probability, seed, min_size, max_size, only, per_thread,
                    scope, forward, target_exe, python_malloc, timeout_s, max_records, report_file, sweep,
                    persistent, fork, unique_stacks, jobs, max_points, point_timeout, as_json, command):
    """Run PROGRAM with an LD_PRELOAD shim that makes chosen allocations fail.

    \b
    mltools malloc-fail --after 1000 ./a.out        calls 1..1000 succeed, later ones fail
    mltools malloc-fail --fail-at 7 ./a.out         only the 7th counted call fails
    mltools malloc-fail --min-size 1MB --fail-at 1 -- python3 train.py
    mltools malloc-fail --sweep ./a.out             fail 1, 2, … and classify each outcome

    The target runs in the current directory with our stdin; its stdout and
    stderr are passed on when it has exited, then the report for people
    follows on stderr. With --json, stdout holds only the report document and
    the target's stdout goes to stderr. A sweep reads stdin once (unless it is
    a terminal) and gives every point the same bytes. Exit status: the
    target's own (128+N for signal N; 124 on --timeout), 125 when malloc-fail
    could not run it, 127 when PROGRAM does not exist. --sweep exits 1 when a
    point crashed, aborted, hung or leaked, else 0; 130 when interrupted,
    after printing the points it had finished.
    """
    from mltools.cli._output import Progress
    from mltools.cli._shimcmd import check_options, finish_run, finish_sweep, name_list, program_errors
    from mltools.errors import UsageError
    from mltools.mallocfail.config import FailSpec, RunOptions
    from mltools.preload.runner import stdin_for_single_run, stdin_for_sweep

    check_options(report_file, persistent, sweep)
    spec = FailSpec(after=after, fail_at=fail_at, count=count, probability=probability, seed=seed,
                    min_size=min_size or 0, max_size=max_size,
                    only=name_list(only),
                    per_thread=per_thread)
    options = RunOptions(scope=scope, forward=forward, python_malloc=python_malloc, target_exe=target_exe,
                         timeout_s=timeout_s, max_records=max_records)
    if spec.count is not None and not spec.injects:
        raise UsageError("--count needs --after, --fail-at or --probability")

    with program_errors(ctx):
        if sweep:
            from mltools.mallocfail.describe import render_sweep
            from mltools.mallocfail.outcome import BUG_CLASSES
            from mltools.mallocfail.sweep import sweep as run_sweep
            stdin = stdin_for_sweep(sys.stdin)
            with Progress("sweep") as bar:
                rep = run_sweep(list(command), spec, options, persistent=persistent, jobs=jobs, fork=fork,
                                unique_stacks=unique_stacks, max_points=max_points,
                                point_timeout_s=point_timeout, progress=bar, stdin=stdin)
            finish_sweep(ctx, rep, as_json, render_sweep, report_file, BUG_CLASSES)

        from mltools.mallocfail.describe import render_report
        from mltools.mallocfail.run import run_target
        report, raw = run_target(list(command), spec, options, stdin=stdin_for_single_run(sys.stdin))
    finish_run(ctx, report, raw, as_json, render_report, report_file)
