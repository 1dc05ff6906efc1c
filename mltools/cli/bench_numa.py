"""``mltools bench numa``: memory bandwidth and latency per NUMA node pair."""
from __future__ import annotations

import click

from mltools.cli._bench import check_outputs, command_line, output_option, write_output
from mltools.cli._options import json_option, quiet_option
from mltools.cli._output import Progress, emit


def _node_list(text):
    if text is None:
        return None
    from mltools.errors import UsageError
    from mltools.numa.cpulist import parse_cpulist
    try:
        ids = parse_cpulist(text)
    except ValueError:
        raise UsageError(f"expected a list such as 0,2-3, got {text!r}") from None
    if not ids:
        raise UsageError(f"empty list {text!r}")
    return ids


@click.command("numa")
@click.option("--sysfs-root", default="/", show_default=True, metavar="DIR",
              help="Read sys/ and proc/ under DIR (an hwloc-gather-topology dump) instead of this machine.")
@click.option("--topology-only", is_flag=True, help="Print topology and inference, measure nothing.")
@click.option("--dry-run", is_flag=True, help="Print the job list (CPU node x memory node) without running it.")
@click.option("--nodes", metavar="LIST", help="Nodes to include, e.g. 0,2-3 (default: all).")
@click.option("--cpus", metavar="LIST", help="Only these CPUs (must be in the affinity mask).")
@click.option("--threads", type=int, help="Threads per node (default: every usable CPU of the smallest node).")
@click.option("--size", metavar="BYTES", help="Bytes per array per thread, e.g. 256M (default 256M, 64M with --quick).")
@click.option("--latency-size", metavar="BYTES", help="Bytes in the pointer-chase ring (default 256M, 128M with --quick).")
@click.option("--kernels", metavar="LIST",
              help="Comma list of read, write, write_nt, copy, copy_nt, triad, triad_nt (default: all).")
@click.option("--reps", type=int, help="Repetitions per kernel (default 10, 3 with --quick).")
@click.option("--pages", "page_mode", type=click.Choice(["thp", "4k"]), default="thp", show_default=True,
              help="Page size asked for with madvise before first touch.")
@click.option("--isa", default="auto", show_default=True, help="Kernel ISA: auto, avx512, avx2, sse2, portable.")
@click.option("--no-latency", is_flag=True, help="Skip the pointer chase.")
@click.option("--sweep", is_flag=True, help="Also sweep the chase ring size (16 KiB up to --latency-size), THP and 4 KiB.")
@click.option("--quick", is_flag=True, help="Small buffers and few repetitions (a few seconds).")
@click.option("--simulate-nodes", type=int, default=0, metavar="N",
              help="Split the usable CPUs into N pseudo-nodes bound to one real node (tests the multi-node path).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also draw the bandwidth and latency matrices as heat maps to this PNG "
                   "(needs matplotlib: pip install 'mltools[plot]').")
@click.option("--plan", "plan_ranks", type=click.IntRange(min=1), metavar="N",
              help="A binding plan for N local ranks: rank -> GPU, nearest NIC, node, CPUs, and the numactl/taskset "
                   "prefix of each, with a torchrun wrapper script; measures nothing.")
@click.option("--gpu", is_flag=True,
              help="Also measure pinned host->device and device->host bandwidth from each node's memory to each GPU "
                   "(torch with CUDA; skipped, with the reason, without it). With --topology-only, only that.")
@output_option
@json_option
@quiet_option
def numa_cmd(sysfs_root, topology_only, dry_run, nodes, cpus, threads, size, latency_size, kernels, reps,
             page_mode, isa, no_latency, sweep, quick, simulate_nodes, plot_path, plan_ranks, gpu, output_path,
             as_json) -> None:
    """Memory bandwidth and latency for every CPU node x memory node pair.

    Threads are pinned to a node's CPUs, memory is bound to a node with mbind
    before first touch, and move_pages checks where the pages really are.
    Bandwidth kernels (read, write, copy, triad; normal and non-temporal
    stores) are validated after every run; latency is a random pointer chase.
    The topology (packages, nodes, SLIT, HMAT, cpuset, THP, and where the
    GPUs, NICs and NVMe drives sit) comes with an inference of the NUMA mode
    (SNC, COD, NPS, L3-as-NUMA, ...), how sure it is, and why.
    Every figure is the median of its rounds with min and max; one whose spread
    or bootstrap 95% interval is wider than 10% of its median is marked noisy.

    Exit status: 0 all well; 1 pages were not on the bound node (fraction below
    0.99) or a kernel's results were wrong; 2 could not run; 130 (143 for
    SIGTERM) when interrupted, after printing the pairs that had finished.
    """
    from mltools.findings import FailOn, Severity
    from mltools.numa.bench import BenchOptions, parse_size, run_numa_bench
    from mltools.numa.describe import render_numa

    opts = BenchOptions(
        sysfs_root=sysfs_root, nodes=_node_list(nodes), cpus=_node_list(cpus), threads=threads,
        size_bytes=parse_size(size) if size else None,
        latency_bytes=parse_size(latency_size) if latency_size else None,
        kernels=tuple(k.strip() for k in kernels.split(",") if k.strip()) if kernels else None,
        repetitions=reps, quick=quick, simulate_nodes=simulate_nodes, page_mode=page_mode, isa=isa,
        topology_only=topology_only, dry_run=dry_run, sweep=sweep, latency=not no_latency,
        plan_ranks=plan_ranks, gpu=gpu)
    if plot_path and (topology_only or dry_run or plan_ranks is not None):
        from mltools.errors import UsageError
        raise UsageError("--plot draws measured matrices: drop --topology-only, --dry-run or --plan")
    check_outputs(output_path, plot_path)
    with Progress("bench numa") as bar:
        result = run_numa_bench(opts, progress=bar, command=command_line())
    write_output(result, output_path)
    if plot_path and result.measured:
        from mltools.numa.bench import plot_numa
        plot_numa(result, plot_path)
    emit(result, as_json, render_numa)
    if FailOn.at(Severity.ERROR).matches(result.findings):
        click.get_current_context().exit(1)
