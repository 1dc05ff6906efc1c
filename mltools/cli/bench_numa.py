"""``mltools bench numa``: memory bandwidth and latency per NUMA node pair."""
from __future__ import annotations

import click

from mltools.cli._options import json_option
from mltools.cli._output import Table, emit, findings_text, key_values, stderr_is_terminal


def _node_list(text):
    if text is None:
        return None
    from mltools.errors import UsageError
    from mltools.numa.topology import parse_cpulist
    try:
        ids = parse_cpulist(text)
    except ValueError:
        raise UsageError(f"expected a list such as 0,2-3, got {text!r}") from None
    if not ids:
        raise UsageError(f"empty list {text!r}")
    return ids


def _gib(n):
    if not n:
        return "-"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _matrix_table(title, rows, cols, matrix, fmt):
    t = Table(["cpu \\ mem"] + [f"node {m}" for m in cols], title=title)
    for c, row in zip(rows, matrix):
        t.add(f"node {c}", *[fmt(v) if v is not None else None for v in row])
    return t.render()


def render_numa(r) -> str:
    topo, inf = r.topology, r.inference
    out = []
    host = r.host
    out.append(key_values([
        ("cpu", f"{host.cpu_model or host.vendor or '-'} (family {host.family}, model {host.model})"
                + (f", under {host.hypervisor}" if host.virtualized else "")),
        ("root", topo.sysfs_root + ("" if topo.live else " (a dump, not this machine)")),
        ("packages", "; ".join(f"{p.id}: {p.cpu_count} CPUs, node(s) {','.join(map(str, p.nodes)) or '-'}, "
                               f"{p.l3_domains} L3" for p in topo.packages) or "-"),
        ("allowed", f"CPUs {topo.allowed.cpus}, nodes {topo.allowed.mems} ({topo.allowed.source})"),
        ("THP", topo.thp or "-"),
        ("numa_balancing", topo.numa_balancing if topo.numa_balancing is not None else "-"),
    ]))
    t = Table(["node", "cpus", "memory", "packages", "hugepages", "HMAT read ns/MBps", "side cache"],
              title="\nNodes")
    for n in topo.nodes:
        hp = ", ".join(f"{k}: {v['total']}" for k, v in n.hugepages.items() if v["total"]) or "-"
        hm = n.hmat
        hmat = (f"{hm['read_latency_ns']}/{hm['read_bandwidth_mbps']}"
                if hm.get("read_latency_ns") or hm.get("read_bandwidth_mbps") else "-")
        side = ", ".join(_gib(c.size_bytes) for c in n.memory_side_caches) or "-"
        t.add(n.id, n.cpus or "(none)", _gib(n.mem_total_bytes), ",".join(map(str, n.packages)) or "-", hp, hmat,
              side)
    out.append(t.render())
    d = topo.distance
    if len(d.nodes) > 1 or d.source != "slit":
        dt = Table([""] + [str(n) for n in d.nodes], title=f"\nDistances ({d.source})")
        for n, row in zip(d.nodes, d.matrix):
            dt.add(str(n), *row)
        out.append(dt.render())
    if topo.quirks:
        out.append("\nQuirks handled: " + "; ".join(topo.quirks))

    if r.measured:
        cfg = r.config
        cols, rows = cfg.mem_nodes, cfg.cpu_nodes
        tag = " [simulated pseudo-nodes]" if r.simulated else ""
        out.append(f"\nBandwidth, GB/s (1e9 B/s, STREAM-counted bytes), best of {cfg.repetitions}, "
                   f"{r.threads} thread(s) per node, {_gib(cfg.buffer_bytes_per_thread)} per array per thread, "
                   f"{cfg.isa}, {cfg.page_mode} pages{tag}")
        for k, bw in r.bandwidth_gbps.items():
            out.append(_matrix_table(f"\n{k} ({bw.counted_bytes_per_element} B/element counted, "
                                     f"~{bw.estimated_dram_bytes_per_element} B DRAM traffic)",
                                     rows, cols, bw.matrix, lambda v: round(v, 1)))
        if r.latency_ns:
            lat = r.latency_ns
            out.append(_matrix_table(f"\nLatency, ns per load (median; {lat.method}, {_gib(lat.ring_bytes)} ring, "
                                     f"{lat.page_mode} pages){tag}", rows, cols, lat.matrix, lambda v: round(v, 1)))
            if lat.other_pages:
                o = lat.other_pages
                out.append(_matrix_table(f"\nLatency with {o.page_mode} pages, ns per load (median)", rows, cols,
                                         o.matrix, lambda v: round(v, 1)))
        if r.latency_sweep:
            st = Table(["ring", "pages", "median ns", "p10", "p90"], title="\nLatency sweep")
            for p in r.latency_sweep:
                st.add(f"{p.ring_bytes >> 10} KiB", p.page_mode, round(p.median_ns, 2), round(p.p10_ns, 2),
                       round(p.p90_ns, 2))
            out.append(st.render())
        pc = r.placement_check
        out.append(f"\nPlacement: {pc.pages_sampled} pages checked with move_pages, fraction on the bound node: "
                   + "; ".join(f"cpu {c} mem {m}: {f:.3f}" for c, row in zip(rows, pc.fraction_on_expected_node)
                               for m, f in zip(cols, row) if f is not None))
        v = r.validation
        out.append(f"Validation: {'passed' if v.passed else 'FAILED'} (max relative error {v.max_rel_error:.3g})")
    elif r.jobs:
        jt = Table(["cpu node", "mem node", "bind node", "threads", "cpus"], title="\nPlanned jobs (dry run)")
        for j in r.jobs:
            jt.add(j.cpu_node, j.mem_node, j.bind_node, j.threads, ",".join(map(str, j.cpus)))
        out.append(jt.render())

    out.append(f"\nInference: {inf.mode} (confidence {inf.confidence})")
    out.extend(f"  - {e}" for e in inf.evidence)
    if inf.alternatives:
        out.append(f"  alternatives: {', '.join(inf.alternatives)}")
    if inf.signature:
        s = inf.signature
        parts = []
        if s.bandwidth_remote_over_local is not None:
            parts.append(f"{s.bandwidth_kernel} bandwidth remote/local {s.bandwidth_remote_over_local:.2f}")
        if s.latency_remote_over_local is not None:
            parts.append(f"latency remote/local {s.latency_remote_over_local:.2f}")
        out.append(f"  signature: {', '.join(parts)}: {s.consistent_with} ({s.confidence})")
    if r.findings:
        out.append("\nFindings\n" + findings_text(r.findings))
    return "\n".join(out)


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
@json_option
def numa_cmd(sysfs_root, topology_only, dry_run, nodes, cpus, threads, size, latency_size, kernels, reps,
             page_mode, isa, no_latency, sweep, quick, simulate_nodes, as_json) -> None:
    """Memory bandwidth and latency for every CPU node x memory node pair.

    Threads are pinned to a node's CPUs, memory is bound to a node with mbind
    before first touch, and move_pages checks where the pages really are.
    Bandwidth kernels (read, write, copy, triad; normal and non-temporal
    stores) are validated after every run; latency is a random pointer chase.
    The topology (packages, nodes, SLIT, HMAT, cpuset, THP) comes with an
    inference of the NUMA mode (SNC, COD, NPS, L3-as-NUMA, ...) and how sure it is.

    Exit status: 0 all well; 1 pages were not on the bound node (fraction below
    0.99) or a kernel's results were wrong; 2 could not run.
    """
    from mltools.findings import Severity, any_at_or_above
    from mltools.numa.bench import BenchOptions, parse_size, run_numa_bench

    opts = BenchOptions(
        sysfs_root=sysfs_root, nodes=_node_list(nodes), cpus=_node_list(cpus), threads=threads,
        size_bytes=parse_size(size) if size else None,
        latency_bytes=parse_size(latency_size) if latency_size else None,
        kernels=tuple(k.strip() for k in kernels.split(",") if k.strip()) if kernels else None,
        repetitions=reps, quick=quick, simulate_nodes=simulate_nodes, page_mode=page_mode, isa=isa,
        topology_only=topology_only, dry_run=dry_run, sweep=sweep, latency=not no_latency)
    def show_progress(msg):
        click.echo(f"\r\x1b[Kbench numa: {msg}", err=True, nl=False)

    progress = show_progress if stderr_is_terminal() else None
    result = run_numa_bench(opts, progress=progress)
    if progress:
        click.echo("\r\x1b[K", err=True, nl=False)
    emit(result, as_json, render_numa)
    if any_at_or_above(result.findings, Severity.ERROR):
        click.get_current_context().exit(1)
