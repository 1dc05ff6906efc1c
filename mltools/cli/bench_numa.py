"""``mltools bench numa``: memory bandwidth and latency per NUMA node pair."""
from __future__ import annotations

import click

from mltools.cli._options import json_option, quiet_option
from mltools.cli._output import emit, stderr_is_terminal


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
@click.option("--plan", "plan_ranks", type=click.IntRange(min=1), metavar="N",
              help="A binding plan for N local ranks: rank -> GPU, nearest NIC, node, CPUs, and the numactl/taskset "
                   "prefix of each, with a torchrun wrapper script; measures nothing.")
@click.option("--gpu", is_flag=True,
              help="Also measure pinned host->device and device->host bandwidth from each node's memory to each GPU "
                   "(torch with CUDA; skipped, with the reason, without it). With --topology-only, only that.")
@json_option
@quiet_option
def numa_cmd(sysfs_root, topology_only, dry_run, nodes, cpus, threads, size, latency_size, kernels, reps,
             page_mode, isa, no_latency, sweep, quick, simulate_nodes, plan_ranks, gpu, as_json) -> None:
    """Memory bandwidth and latency for every CPU node x memory node pair.

    Threads are pinned to a node's CPUs, memory is bound to a node with mbind
    before first touch, and move_pages checks where the pages really are.
    Bandwidth kernels (read, write, copy, triad; normal and non-temporal
    stores) are validated after every run; latency is a random pointer chase.
    The topology (packages, nodes, SLIT, HMAT, cpuset, THP, and where the
    GPUs, NICs and NVMe drives sit) comes with an inference of the NUMA mode
    (SNC, COD, NPS, L3-as-NUMA, ...), how sure it is, and why.

    Exit status: 0 all well; 1 pages were not on the bound node (fraction below
    0.99) or a kernel's results were wrong; 2 could not run.
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
    def show_progress(msg):
        click.echo(f"\r\x1b[Kbench numa: {msg}", err=True, nl=False)

    progress = show_progress if stderr_is_terminal() else None
    result = run_numa_bench(opts, progress=progress)
    if progress:
        click.echo("\r\x1b[K", err=True, nl=False)
    emit(result, as_json, render_numa)
    if FailOn.at(Severity.ERROR).matches(result.findings):
        click.get_current_context().exit(1)
