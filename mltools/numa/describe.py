"""Text for people of ``mltools bench numa`` (its JSON is the dataclass itself)."""
from __future__ import annotations

from mltools._text import Table, findings_text, key_values
from mltools.results.describe import run_summary

__all__ = ["render_numa"]


def _gib(n):
    if not n:
        return "-"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _matrix_table(title, rows, cols, matrix, fmt):
    t = Table(["cpu \\ mem"] + [f"node {m}" for m in cols], title=title)
    for c, row in zip(rows, matrix):
        t.add(f"node {c}", *[fmt(v) if v is not None else None for v in row])
    return t.render()


def _spread_cell(med, lo, hi, noisy):
    """``median (min-max)``, with ``noisy`` when the rounds disagree by more than 10%."""
    if med is None:
        return None
    return f"{med:.1f} ({lo:.1f}-{hi:.1f})" + (" noisy" if noisy else "")


def _spread_table(title, rows, cols, med, lo, hi, noisy):
    t = Table(["cpu \\ mem"] + [f"node {m}" for m in cols], title=title)
    for i, c in enumerate(rows):
        t.add(f"node {c}", *[_spread_cell(med[i][j], lo[i][j], hi[i][j], noisy[i][j] if noisy else False)
                             for j in range(len(cols))])
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
        out.append(f"\nBandwidth, GB/s (1e9 B/s, STREAM-counted bytes): median (min-max) of {cfg.repetitions} "
                   f"rounds, {r.threads} thread(s) per node, {_gib(cfg.buffer_bytes_per_thread)} per array per "
                   f"thread, {cfg.isa}, {cfg.page_mode} pages{tag}")
        for k, bw in r.bandwidth_gbps.items():
            out.append(_spread_table(f"\n{k} ({bw.counted_bytes_per_element} B/element counted, "
                                     f"~{bw.estimated_dram_bytes_per_element} B DRAM traffic)",
                                     rows, cols, bw.median, bw.min, bw.matrix, bw.noisy))
        if r.latency_ns:
            lat = r.latency_ns
            out.append(_spread_table(f"\nLatency, ns per load: median (min-max) of the samples; {lat.method}, "
                                     f"{_gib(lat.ring_bytes)} ring, {lat.page_mode} pages{tag}", rows, cols,
                                     lat.matrix, lat.min, lat.max, lat.noisy))
            if lat.other_pages:
                o = lat.other_pages
                out.append(_spread_table(f"\nLatency with {o.page_mode} pages, ns per load: median (min-max)",
                                         rows, cols, o.matrix, o.min, o.max, o.noisy))
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
    if r.machine is not None:
        out.append("\n" + run_summary(r.machine, r.run, r.interrupted))
    return "\n".join(out)
