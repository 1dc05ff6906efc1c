"""``mltools bench compare``: per case, faster or slower than a baseline, and is it significant."""
from __future__ import annotations

import click

from mltools.cli._options import json_option, quiet_option
from mltools.cli._output import emit, warn


@click.command("compare")
@click.argument("baseline", type=click.Path(dir_okay=False))
@click.argument("others", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--fail-if-slower", "fail_if_slower", type=click.FloatRange(min=0), default=None, metavar="PCT",
              help="Exit 1 when a case is significantly slower than the baseline by more than PCT percent "
                   "(for CI).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also draw the speed-ups with their 95% intervals to this PNG "
                   "(needs matplotlib: pip install 'mltools[plot]').")
@json_option
@quiet_option
def compare_cmd(baseline, others, fail_if_slower, plot_path, as_json) -> None:
    """Compare benchmark results with a baseline: BASELINE.json OTHER.json [...].

    Reads the files `mltools bench sum|numa|shakeshake --output FILE` writes
    (and pyperf's JSON files). Per case: the speed-up over the baseline (its
    median over this one for times; this over its for rates such as GB/s),
    a 95% interval from bootstrapping both sets of samples, and a verdict:
    "1.23x faster, significant" when the interval excludes 1, else "not
    significant". Cases found in one file only are listed; results from
    different machines are compared with a warning that says what differs.

    Exit status 0; 1 with --fail-if-slower when a case is significantly slower
    by more than PCT percent, or when a file could not be read; 2 when the
    baseline (or every other file) cannot be read.
    """
    from mltools.cli._bench import check_outputs
    from mltools.results.compare import compare_results, plot_compare
    from mltools.results.describe import render_compare

    check_outputs(plot_path=plot_path)
    report = compare_results(baseline, others, fail_if_slower)
    for fc in report.comparisons:
        for d in fc.machine_differences:
            warn(f"{fc.path}: different machine from the baseline: {d}")
        for m in fc.unit_mismatch:
            warn(f"{fc.path}: not compared, the unit differs: {m}")
    if plot_path:
        plot_compare(report, plot_path)
    emit(report, as_json, render_compare)
    if report.failed or report.errors:
        click.get_current_context().exit(1)
