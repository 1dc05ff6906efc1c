"""``mltools bench sum``: speed and error of every summation method next to numpy."""
from __future__ import annotations

import click

from mltools.cli._bench import check_outputs, command_line, output_option, write_output
from mltools.cli._options import json_option, quiet_option
from mltools.cli._output import Progress, emit


@click.command("sum")
@click.option("--sizes", default=None,
              help="Comma-separated element counts [default: 1e3,1e4,1e5,1e6,1e7; 1e3,1e4 with "
                   "--quick] (1e8 needs 800 MB per float64 array).")
@click.option("--dtype", "dtypes", default="float64,float32", show_default=True,
              help="float64, float32 or both (float32 accumulates in float64).")
@click.option("--layout", "layouts", default="1d,axis0", show_default=True,
              help="1d (contiguous) and/or axis0 (a C-ordered (n/2, 2) array summed over axis 0).")
@click.option("--data", "datasets", default="uniform,ill", show_default=True,
              help="uniform (U[0,1)) and/or ill (±x pairs plus 1.0: exact sum 1, huge condition number).")
@click.option("--methods", default=",".join(("naive", "pairwise", "kahan", "neumaier", "sum2", "exact")),
              show_default=True, help="mltools methods to run (numpy.sum and math.fsum always run).")
@click.option("--repeats", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Timed batches per method, interleaved across methods.")
@click.option("--min-time", "min_time_s", type=click.FloatRange(0.0001, 10.0), default=0.02,
              show_default=True, help="Seconds a calibrated batch of calls lasts at least.")
@click.option("--clock", type=click.Choice(["wall", "cpu"]), default="wall", show_default=True,
              help="wall: elapsed time; cpu: this thread's CPU time (steadier on a crowded machine).")
@click.option("--quick", is_flag=True,
              help="A smoke run in a second or two: n = 1e3 and 1e4, 3 repeats, short batches.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the data.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, writable=True),
              help="Also draw error against condition number and time against size to this PNG "
                   "(needs matplotlib: pip install 'mltools[plot]').")
@output_option
@json_option
@quiet_option
def sum_cmd(sizes, dtypes, layouts, datasets, methods, repeats, min_time_s, clock, quick, seed,
            plot_path, output_path, as_json) -> None:
    """Speed and error of naive, pairwise, Kahan, Neumaier, Sum2 and exact sums.

    Every method of mltools.summation runs next to numpy.sum and math.fsum (and
    xsum/accupy when installed) on well- and ill-conditioned data, float64 and
    float32, 1-D and axis=0, with calibrated, interleaved timing; then a
    condition-number sweep (Ogita-Rump-Oishi data) of the errors. Prints ns per
    element (min and median), GB/s, the ratio to numpy.sum, the error in ulps
    and relative, and the condition number. The kernel ISA in use is printed
    (force one with MLTOOLS_SUM_ISA=sse2|avx2|avx512). Every repeat is kept
    (--output, --json) with the median, max and bootstrap 95% interval; a
    figure whose interval is wider than 10% of its median is marked noisy.

    Exit status 0; 2 when it cannot run; 130 (143 for SIGTERM) when
    interrupted, after printing the groups that had finished.
    """
    from mltools.errors import UsageError
    from mltools.summation import bench
    from mltools.summation.describe import render_bench_sum

    check_outputs(output_path, plot_path)
    try:
        if quick:
            config = bench.BenchConfig(sizes=bench.parse_sizes(sizes) if sizes else (10**3, 10**4),
                                       repeats=3, min_time_s=0.001,
                                       dtypes=bench.split_choices(dtypes, bench.DTYPES, "--dtype"),
                                       layouts=bench.split_choices(layouts, bench.LAYOUTS, "--layout"),
                                       datasets=bench.split_choices(datasets, bench.DATASETS, "--data"),
                                       methods=bench.split_choices(methods, bench.METHODS, "--methods"),
                                       cond_sweep_n=200, cond_sweep_exponents=(0, 8, 16, 24, 32),
                                       seed=seed, clock=clock)
        else:
            config = bench.BenchConfig(sizes=bench.parse_sizes(sizes) if sizes else bench.BenchConfig.sizes,
                                       repeats=repeats,
                                       min_time_s=min_time_s,
                                       dtypes=bench.split_choices(dtypes, bench.DTYPES, "--dtype"),
                                       layouts=bench.split_choices(layouts, bench.LAYOUTS, "--layout"),
                                       datasets=bench.split_choices(datasets, bench.DATASETS, "--data"),
                                       methods=bench.split_choices(methods, bench.METHODS, "--methods"),
                                       seed=seed, clock=clock)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        from mltools.summation import active_isa
        active_isa()
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    with Progress("bench sum") as bar:
        report = bench.run_bench(config, progress=bar, command=command_line())
    write_output(report, output_path)
    if plot_path and report.rows:
        bench.plot_report(report, plot_path)
    emit(report, as_json, render_bench_sum)
