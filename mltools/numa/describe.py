"""Text for people of ``mltools bench numa`` (its JSON is the dataclass itself)."""
from __future__ import annotations

from mltools._text import Table, findings_text, key_values
from mltools.results.describe import run_summary
from mltools.numa.cpulist import format_cpulist

__all__ = ["render_numa"]


def _gib(n):
    if not n:
        return "-"
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


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
        ("packages", _packages_line(topo)),
        ("allowed", f"CPUs {topo.allowed.cpus}, nodes {topo.allowed.mems} ({topo.allowed.source})"),
        ("THP", topo.thp or "-"),
        ("numa_balancing", topo.numa_balancing if topo.numa_balancing is not None else "-"),
    ]))
    t = Table(["node", "cpus", "memory", "packages", "hugepages", "HMAT read ns/MBps", "side cache"],
              title="\nNodes")
    for n in topo.nodes:
        hp = ", ".join(f"{k}: {v['total']}" for k, v in n.hugepages.items() if v["total"]) or "-"
        hm = n.hmat
        hmat = (f"{hm.read_latency_ns}/{hm.read_bandwidth_mbps}"
                if hm and (hm.read_latency_ns or hm.read_bandwidth_mbps) else "-")
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
    if topo.io is not None:
        out.append(render_io(topo.io))

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

    if r.gpu_transfers is not None:
        out.append(render_transfers(r.gpu_transfers))
    out.append(f"\nInference: {inf.mode} (confidence {inf.confidence})")
    out.extend(f"  - {e}" for e in inf.evidence)
    out.extend(f"  missing: {m}" for m in inf.missing)
    out.extend(f"  contradicts: {c}" for c in inf.contradictions)
    if inf.alternatives:
        out.append(f"  alternatives: {', '.join(inf.alternatives)}")
    empty = [c for c in inf.memory_nodes if c.value == "empty"]
    for c in [c for c in inf.memory_nodes if c.value != "empty"] + list(inf.other):
        out.append(f"{c.subject.capitalize()}: {c.value} ({c.confidence})")
        out.extend(f"  - {e}" for e in c.evidence)
        out.extend(f"  missing: {m}" for m in c.missing)
    if empty:
        ids = format_cpulist(c.node for c in empty)
        out.append(f"Node(s) {ids} memory: empty (high)")
        out.append("  - no CPUs and no memory: placeholders (GPU memory partitions, hot-plug slots)")
    if inf.signature:
        s = inf.signature
        parts = []
        if s.bandwidth_remote_over_local is not None:
            parts.append(f"{s.bandwidth_kernel} bandwidth remote/local {s.bandwidth_remote_over_local:.2f}")
        if s.latency_remote_over_local is not None:
            parts.append(f"latency remote/local {s.latency_remote_over_local:.2f}")
        out.append(f"  signature: {', '.join(parts)}: {s.consistent_with} ({s.confidence})")
    if r.binding_plan is not None:
        out.append(render_plan(r.binding_plan))
    if r.findings:
        out.append("\nFindings\n" + findings_text(r.findings))
    if r.machine is not None:
        out.append("\n" + run_summary(r.machine, r.run, r.interrupted))
    return "\n".join(out)


def _packages_line(topo) -> str:
    parts = []
    for p in topo.packages:
        label = str(p.id) if p.physical_id in (None, p.id) else f"{p.id} (id {p.physical_id})"
        parts.append(f"{label}: {p.cpu_count} CPUs, node(s) {','.join(map(str, p.nodes)) or '-'}, {p.l3_domains} L3")
    text = "; ".join(parts) or "-"
    if len(parts) > 8:
        text = f"{len(parts)} packages of " + "/".join(sorted({str(p.cpu_count) for p in topo.packages})) + " CPUs"
    if topo.package_source not in ("package_cpus masks", "core_siblings masks"):
        text += f" (from {topo.package_source})"
    return text


def _short(cpus: str, width: int = 24) -> str:
    return cpus if len(cpus) <= width else cpus[:width - 3] + "..."


def render_io(io) -> str:
    """The GPUs, NICs and NVMe drives with their node, and the GPU x NIC relations."""
    if not io.devices:
        return "\nPCI devices: " + ("; ".join(io.notes) if io.notes else
                                     f"no GPU, NIC or NVMe among {io.other_functions} PCI function(s)")
    t = Table(["device", "kind", "vendor:device", "node", "sure", "local CPUs", "link", "names", "path"],
              title="\nPCI devices (node: where the device sits; path: host bridge, bridges)")
    for d in io.devices:
        names = ", ".join(d.os_devices)
        if d.link_layers and d.kind != "nic_infiniband":
            names += f" [{'/'.join(sorted(set(d.link_layers)))}]"
        path = (d.host_bridge or "?") + (f" +{len(d.bridges)}" if d.bridges else "")
        t.add(d.busid, d.kind, f"{d.vendor_name or d.vendor}:{d.device[2:] if d.device else '?'}",
              d.node if d.node is not None else "?", d.locality_confidence, _short(d.local_cpus) or "-",
              d.link or "-", names or "-", path)
    out = [t.render()]
    extra = []
    if io.other_functions:
        extra.append(f"{io.other_functions} other PCI function(s) (bridges, chipset, ...)")
    if io.virtual_functions:
        extra.append(f"{io.virtual_functions} SR-IOV virtual function(s) left out")
    notes = [f"{d.busid}: {n}" for d in io.devices for n in d.locality_notes]
    if extra:
        out.append("; ".join(extra))
    out.extend(f"note: {n}" for n in list(io.notes) + notes)
    m = io.gpu_nic
    if m.gpus and m.nics:
        by_bus = {d.busid: d for d in io.devices}
        gt = Table(["GPU \\ NIC"] + [nic_label(by_bus[n]) for n in m.nics],
                   title="\nGPU <-> NIC (PIX one PCIe switch, PXB bridges, PHB host bridge, NODE same node, "
                         "SYS other node)")
        for g, row in zip(m.gpus, m.relations):
            gt.add(g, *row)
        out.append(gt.render())
    return "\n".join(out)


def nic_label(d) -> str:
    """The short name of a NIC: its RDMA device (mlx5_0) when it has one, else its interface."""
    if d.os_devices:
        return d.os_devices[-1] if d.link_layers else d.os_devices[0]
    return d.busid


def render_plan(plan) -> str:
    t = Table(["rank", "GPU", "NIC", "via", "node", "CPUs"],
              title=f"\nBinding plan for {plan.ranks} local rank(s)"
                    + ("" if plan.device_kind == "gpu" else " (no GPU: CPU-only ranks)"))
    for b in plan.bindings:
        nic = (b.nic or "-") + (f" {'/'.join(b.nic_names)}" if b.nic_names else "")
        t.add(b.rank, b.gpu or "-", nic, b.nic_relation or "-", b.node if b.node is not None else "?",
              b.cpus or "(not bound)")
    out = [t.render()]
    out.append("all local: " + ("yes" if plan.all_local else "no"))
    out.extend(f"warning: {w}" for w in plan.warnings)
    out.extend(f"rank {b.rank}: {n}" for b in plan.bindings for n in b.notes)
    out.append("\nAs a torchrun wrapper (or `taskset -c CPUs`, which binds the CPUs but not the memory):\n")
    out.append(plan.script.rstrip("\n"))
    return "\n".join(out)


def render_transfers(tr) -> str:
    if not tr.measured:
        return f"\nGPU transfers: skipped: {tr.skipped}"
    out = [f"\nGPU transfers, GB/s (1e9 B/s), best of {tr.rounds} rounds of {_gib(tr.bytes_per_copy)}, "
           f"pinned host memory on the CPU node ({tr.method})"]
    for title, best, spread in (("host -> device", tr.h2d_gbps, tr.h2d_spread),
                                ("device -> host", tr.d2h_gbps, tr.d2h_spread)):
        t = Table(["cpu node \\ GPU"] + [f"cuda:{g.index} (node {g.node if g.node is not None else '?'})"
                                          for g in tr.gpus], title=f"\n{title}")
        for node, row, srow in zip(tr.cpu_nodes, best, spread):
            t.add(f"node {node}", *[None if v is None else f"{v:.1f} ({s[0]:.1f}-{s[2]:.1f})"
                                    for v, s in zip(row, srow)])
        out.append(t.render())
    out.append("host pages on their node: " + "; ".join(
        f"node {n}: {f:.3f}" if f is not None else f"node {n}: -" for n, f in zip(tr.cpu_nodes, tr.pages_on_node)))
    return "\n".join(out)
