"""The node x node bandwidth and latency matrix: plan, measure, verify, report.

``plan_jobs`` is the scheduler: one job per (CPU node, memory node) pair with
its CPU list, the real node its memory is bound to, and its thread count. It
touches nothing, so tests run it on fixture topologies of multi-node machines.
``run_numa_bench`` runs the jobs for real on the live machine: mmap, mbind,
first touch from pinned threads, the C kernels, STREAM-style validation, the
pointer chase, and a move_pages check of where the pages really are.
``--simulate-nodes N`` splits the usable CPUs into N pseudo-nodes whose memory
is all bound to one real node, so the whole multi-node path runs on a
one-node machine (results tagged simulated; no inference).

Every live figure keeps its rounds: min, median and max per cell, and as a
``case`` (``mltools.results``) with its bootstrap 95% interval. A figure whose
spread (max - min) or interval is wider than 10% of its median is marked
noisy in the text and the JSON, and noisy figures are not used for the
measured mode signature. Ctrl-C returns the pairs finished so far, marked
``interrupted``.
"""
from __future__ import annotations

import dataclasses
import os
import re
import statistics
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple

from mltools.env.machine import Machine
from mltools.errors import UsageError
from mltools.findings import Finding, Severity
from mltools.results.run import HIGHER, LOWER, Case, Recorder, RunInfo
from mltools.numa.binding import BindingPlan, plan_with_findings
from mltools.numa.gpu_transfer import GpuTransfers
from mltools.numa.infer import Inference, infer_mode, measured_signature, refused
from mltools.numa.topology import Topology, format_cpulist, parse_cpulist, read_topology

KERNEL_NAMES = ("read", "write", "write_nt", "copy", "copy_nt", "triad", "triad_nt")
DEFAULT_KERNELS = KERNEL_NAMES
QUICK_KERNELS = ("read", "copy", "copy_nt", "triad")

# Bytes per element: STREAM-counted, and what DRAM really moves (a normal store
# first reads the line: write-allocate; a non-temporal store does not).
COUNTED_BYTES = {"read": 8, "write": 8, "copy": 16, "triad": 24}
DRAM_BYTES = {"read": 8, "write": 16, "copy": 24, "triad": 32}
DRAM_BYTES_NT = {"write": 8, "copy": 16, "triad": 24}

MiB = 1 << 20
DEFAULT_SIZE = 256 * MiB
QUICK_SIZE = 64 * MiB
DEFAULT_LATENCY_SIZE = 256 * MiB
QUICK_LATENCY_SIZE = 128 * MiB
LINE = 64
PAGE = 4096
PLACEMENT_PAGES = 4096
PLACEMENT_THRESHOLD = 0.99
# a, b and c start at different offsets within a 4 KiB page (in 64 B lines), so a
# load of a[i] and a store to c[i] never share page-offset bits (4K aliasing)
ARRAY_OFFSETS = (0, 17 * 64, 34 * 64)


def kernel_base(name: str) -> Tuple[str, bool]:
    """"copy_nt" -> ("copy", True)."""
    return (name[:-3], True) if name.endswith("_nt") else (name, False)


def counted_bytes(name: str) -> int:
    return COUNTED_BYTES[kernel_base(name)[0]]


def dram_bytes(name: str) -> int:
    base, nt = kernel_base(name)
    return DRAM_BYTES_NT[base] if nt else DRAM_BYTES[base]


def parse_size(text: str) -> int:
    """``"64M"``, ``"1G"``, ``"512KiB"``, ``"4096"`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)(i?[bB])?\s*", text)
    if not m:
        raise UsageError(f"--size {text}: expected a size such as 64M, 1G or 4096")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


# ------------------------------------------------------------------ planning

@dataclass(frozen=True)
class Job:
    cpu_node: int          # node the threads run on (pseudo-node when simulated)
    mem_node: int          # node the memory belongs to (pseudo-node when simulated)
    bind_node: int         # real node the memory is bound to with mbind
    cpus: Tuple[int, ...]  # one thread per CPU
    threads: int


@dataclass(frozen=True)
class Plan:
    cpu_nodes: Tuple[int, ...]
    mem_nodes: Tuple[int, ...]
    node_cpus: Dict[int, Tuple[int, ...]]     # usable CPUs per CPU node
    real_node: Dict[int, int]                 # (pseudo-)node -> real node for mbind
    threads: int
    simulated: bool
    jobs: Tuple[Job, ...]


def plan_jobs(topo: Topology, *, nodes: Optional[Sequence[int]] = None, cpus: Optional[Sequence[int]] = None,
              threads: Optional[int] = None, simulate_nodes: int = 0,
              allowed_cpus: Optional[Sequence[int]] = None, allowed_mems: Optional[Sequence[int]] = None) -> Plan:
    """The full cpu-node x mem-node job list; raises UsageError for impossible requests."""
    online = set(parse_cpulist(topo.online_cpus))
    allowed_c = set(allowed_cpus) if allowed_cpus is not None else set(parse_cpulist(topo.allowed.cpus)) or online
    allowed_m = set(allowed_mems) if allowed_mems is not None else set(parse_cpulist(topo.allowed.mems))
    if cpus is not None:
        outside = sorted(set(cpus) - allowed_c)
        if outside:
            raise UsageError(f"--cpus: CPU {format_cpulist(outside)} is outside this process's affinity mask "
                             f"({format_cpulist(allowed_c) or 'empty'})")
        usable = set(cpus)
    else:
        usable = allowed_c & online

    if simulate_nodes:
        pool = sorted(usable)
        if simulate_nodes < 2:
            raise UsageError("--simulate-nodes needs at least 2 pseudo-nodes")
        if simulate_nodes > len(pool):
            raise UsageError(f"--simulate-nodes {simulate_nodes}: only {len(pool)} usable CPU(s) "
                             f"({format_cpulist(pool)}) to split")
        real_mems = [n.id for n in topo.nodes if n.id in allowed_m and (n.has_memory or n.mem_total_bytes)]
        if not real_mems:
            raise UsageError("no node with memory is allowed for this process")
        bind = real_mems[0]
        node_cpus: Dict[int, Tuple[int, ...]] = {}
        base, extra = divmod(len(pool), simulate_nodes)
        start = 0
        for i in range(simulate_nodes):
            size = base + (1 if i < extra else 0)
            node_cpus[i] = tuple(pool[start:start + size])
            start += size
        all_ids = list(range(simulate_nodes))
        real_node = {i: bind for i in all_ids}
        mem_candidates = all_ids
    else:
        all_ids = [n.id for n in topo.nodes]
        node_cpus = {n.id: tuple(c for c in n.cpu_ids() if c in usable) for n in topo.nodes}
        real_node = {i: i for i in all_ids}
        mem_candidates = [n.id for n in topo.nodes if n.id in allowed_m and (n.has_memory or n.mem_total_bytes)]

    label = "pseudo-node" if simulate_nodes else "node"
    if nodes is not None:
        missing = sorted(set(nodes) - set(all_ids))
        if missing:
            raise UsageError(f"--nodes {format_cpulist(nodes)}: no {label} {format_cpulist(missing)} here "
                             f"(this machine has {label}s {format_cpulist(all_ids)})")
        selected = sorted(set(nodes))
    else:
        selected = all_ids
    cpu_nodes = tuple(n for n in selected if node_cpus.get(n))
    mem_nodes = tuple(n for n in selected if n in mem_candidates)
    if nodes is not None:
        unusable = [n for n in selected if n not in mem_nodes and not node_cpus.get(n)]
        if unusable:
            raise UsageError(f"--nodes: {label} {format_cpulist(unusable)} has neither usable CPUs nor allowed memory")
    if not cpu_nodes:
        raise UsageError("no selected node has a usable CPU (check --nodes, --cpus and the affinity mask)")
    if not mem_nodes:
        raise UsageError("no selected node has memory this process may use (check --nodes and the cpuset)")

    fewest = min(len(node_cpus[n]) for n in cpu_nodes)
    if threads is None:
        threads = fewest
    elif threads < 1:
        raise UsageError("--threads must be at least 1")
    elif threads > fewest:
        worst = min(cpu_nodes, key=lambda n: len(node_cpus[n]))
        raise UsageError(f"--threads {threads}: {label} {worst} has only {fewest} usable CPU(s) "
                         f"({format_cpulist(node_cpus[worst])})")
    jobs = tuple(Job(c, m, real_node[m], node_cpus[c][:threads], threads) for c in cpu_nodes for m in mem_nodes)
    return Plan(cpu_nodes, mem_nodes, {n: node_cpus[n] for n in cpu_nodes}, real_node, threads,
                bool(simulate_nodes), jobs)


# ------------------------------------------------------------------ results

@dataclass(frozen=True)
class BandwidthMatrix:
    unit: str
    matrix: Tuple[Tuple[Optional[float], ...], ...]     # best of the repetitions, cpu x mem
    median: Tuple[Tuple[Optional[float], ...], ...]
    min: Tuple[Tuple[Optional[float], ...], ...]        # the worst repetition
    noisy: Tuple[Tuple[Optional[bool], ...], ...]       # spread or 95% interval wider than 10% of the median
    threads: int
    nontemporal: bool
    counted_bytes_per_element: int
    estimated_dram_bytes_per_element: int
    max_rel_error: float


@dataclass(frozen=True)
class LatencyMatrix:
    method: str
    ring_bytes: int
    page_mode: str
    matrix: Tuple[Tuple[Optional[float], ...], ...]     # median ns per load, cpu x mem
    p10: Tuple[Tuple[Optional[float], ...], ...]
    p90: Tuple[Tuple[Optional[float], ...], ...]
    thp_effective: Tuple[Tuple[Optional[float], ...], ...]   # AnonHugePages / Rss of the ring
    min: Tuple[Tuple[Optional[float], ...], ...] = ()
    max: Tuple[Tuple[Optional[float], ...], ...] = ()
    noisy: Tuple[Tuple[Optional[bool], ...], ...] = ()
    other_pages: Optional["LatencyMatrix"] = None            # the same in the other page mode (not with --quick)


@dataclass(frozen=True)
class SweepPoint:
    ring_bytes: int
    page_mode: str
    median_ns: float
    p10_ns: float
    p90_ns: float


@dataclass(frozen=True)
class PlacementCheck:
    method: str
    pages_sampled: int
    fraction_on_expected_node: Tuple[Tuple[Optional[float], ...], ...]
    threshold: float


@dataclass(frozen=True)
class Validation:
    passed: bool
    max_rel_error: float
    tolerance: float


@dataclass(frozen=True)
class Host:
    kernel: Optional[str]
    cpu_model: Optional[str]
    vendor: Optional[str]
    family: Optional[int]
    model: Optional[int]
    virtualized: bool
    hypervisor: Optional[str]
    thp: Optional[str]
    numa_balancing: Optional[int]


@dataclass(frozen=True)
class Config:
    cpu_nodes: Tuple[int, ...]
    mem_nodes: Tuple[int, ...]
    node_cpus: Dict[int, str]
    threads_per_node: int
    buffer_bytes_per_thread: int        # per array
    latency_ring_bytes: int
    page_mode: str
    isa: str
    repetitions: int
    kernels: Tuple[str, ...]
    placement: str
    byte_counting: str
    simulated: bool


@dataclass(frozen=True)
class NumaReport:
    SCHEMA: ClassVar[str] = "mltools.bench.numa"
    # Format history: 2 - min and noisy matrices for bandwidth, min/max/noisy for latency;
    # machine, run, cases (every round) and interrupted; the topology's package ids are
    # indexes (physical_id keeps the kernel's), binding_plan (--plan) and gpu_transfers (--gpu).
    SCHEMA_VERSION: ClassVar[int] = 2

    host: Host
    topology: Topology
    inference: Inference
    measured: bool
    simulated: bool
    threads: Optional[int]
    config: Optional[Config]
    jobs: Tuple[Job, ...]
    bandwidth_gbps: Dict[str, BandwidthMatrix]
    latency_ns: Optional[LatencyMatrix]
    latency_sweep: Tuple[SweepPoint, ...]
    placement_check: Optional[PlacementCheck]
    validation: Optional[Validation]
    findings: Tuple[Finding, ...] = field(default=())
    machine: Optional[Machine] = None       # measured runs only
    run: Optional[RunInfo] = None
    cases: Tuple[Case, ...] = ()
    interrupted: bool = False
    binding_plan: Optional[BindingPlan] = None      # --plan N
    gpu_transfers: Optional[GpuTransfers] = None    # --gpu


@dataclass(frozen=True)
class BenchOptions:
    sysfs_root: str = "/"
    nodes: Optional[Tuple[int, ...]] = None
    cpus: Optional[Tuple[int, ...]] = None
    threads: Optional[int] = None
    size_bytes: Optional[int] = None
    latency_bytes: Optional[int] = None
    kernels: Optional[Tuple[str, ...]] = None
    repetitions: Optional[int] = None
    quick: bool = False
    simulate_nodes: int = 0
    page_mode: str = "thp"           # "thp" or "4k"
    isa: str = "auto"
    topology_only: bool = False
    dry_run: bool = False
    sweep: bool = False
    latency: bool = True
    seed: int = 0x6d6c746f6f6c73
    plan_ranks: Optional[int] = None  # --plan N: a binding plan for N local ranks (measures nothing else)
    gpu: bool = False                 # --gpu: pinned host<->device bandwidth per node and GPU


# ------------------------------------------------------------------ helpers

def _percentile(values: Sequence[float], q: float) -> float:
    v = sorted(values)
    if len(v) == 1:
        return v[0]
    pos = (len(v) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _smaps_thp_fraction(address: int, size: int) -> Optional[float]:
    """AnonHugePages / Rss of the mapping that contains ``address``."""
    try:
        with open("/proc/self/smaps") as fh:
            text = fh.read()
    except OSError:
        return None
    rss = huge = 0
    inside = False
    for line in text.splitlines():
        m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) ", line)
        if m:
            lo, hi = int(m.group(1), 16), int(m.group(2), 16)
            inside = lo < address + size and hi > address
            continue
        if inside:
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("AnonHugePages:"):
                huge += int(line.split()[1])
    return (huge / rss) if rss else None


def _vmstat_migrated() -> Optional[int]:
    try:
        with open("/proc/vmstat") as fh:
            for line in fh:
                if line.startswith("numa_pages_migrated "):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _sample_offsets(size: int, count: int) -> List[int]:
    pages = max(size // PAGE, 1)
    count = min(count, pages)
    return [(i * pages // count) * PAGE for i in range(count)]


def _host(topo: Topology) -> Host:
    return Host(topo.kernel, topo.cpu.model_name, topo.cpu.vendor, topo.cpu.family, topo.cpu.model,
                topo.virtualized, topo.hypervisor, topo.thp, topo.numa_balancing)


def topology_findings(topo: Topology) -> List[Finding]:
    out = []
    if topo.virtualized:
        out.append(Finding("NUMA_VIRTUALIZED", Severity.WARNING,
                           f"running under a hypervisor ({topo.hypervisor or 'cpuinfo hypervisor flag'}): the NUMA layout, "
                           "SLIT and latencies are the guest's, not the host's"))
    if topo.offline_nodes:
        out.append(Finding("NUMA_OFFLINE_NODE", Severity.WARNING,
                           f"node(s) {format_cpulist(topo.offline_nodes)} are offline: the matrix leaves them out"))
    online = parse_cpulist(topo.online_cpus)
    allowed = parse_cpulist(topo.allowed.cpus)
    node_ids = [n.id for n in topo.nodes]
    mems = parse_cpulist(topo.allowed.mems)
    if set(allowed) != set(online) or set(mems) != set(node_ids):
        out.append(Finding("NUMA_CPUSET_RESTRICTED", Severity.INFO,
                           f"this process may use CPUs {topo.allowed.cpus} and nodes {topo.allowed.mems} "
                           f"of {topo.online_cpus} / {format_cpulist(node_ids)} ({topo.allowed.source})"))
    if topo.thp == "madvise":
        out.append(Finding("NUMA_THP_MADVISE", Severity.INFO,
                           "THP is madvise: huge pages only where requested (the benchmark asks for them)"))
    elif topo.thp == "never":
        out.append(Finding("NUMA_THP_NEVER", Severity.INFO, "THP is off: the thp page mode gets 4 KiB pages"))
    if topo.numa_balancing:
        out.append(Finding("NUMA_BALANCING_ON", Severity.WARNING,
                           "kernel.numa_balancing is on: the kernel may migrate pages during a run",
                           fix="sysctl kernel.numa_balancing=0 while measuring"))
    if topo.memory_only_nodes:
        out.append(Finding("NUMA_MEMORY_ONLY_NODES", Severity.INFO,
                           f"node(s) {format_cpulist(topo.memory_only_nodes)} have memory but no CPUs "
                           "(what each is: the inference's memory conclusions): measured as memory targets only"))
    if topo.inconsistencies:
        out.append(Finding("NUMA_SYSFS_INCONSISTENT", Severity.WARNING,
                           "the sysfs files contradict each other: " + "; ".join(topo.inconsistencies)))
    said: Dict[str, List[str]] = {}     # one finding per message, naming every device it is about
    for d in (topo.io.devices if topo.io else ()):
        if d.kind != "display" and (d.locality_notes or (d.node is None and len(topo.cpu_nodes) > 1)):
            said.setdefault("; ".join(d.locality_notes or (d.locality_evidence,)), []).append(d.busid)
    for message, busids in said.items():
        out.append(Finding("NUMA_PCI_LOCALITY", Severity.WARNING, f"{', '.join(busids)}: {message}",
                           details={"devices": busids}))
    return out


def placement_findings(cpu_nodes: Sequence[int], mem_nodes: Sequence[int],
                       fractions: Sequence[Sequence[Optional[float]]]) -> List[Finding]:
    """An ERROR when any pair's fraction of pages on the bound node is below 0.99."""
    low = [(cpu_nodes[i], mem_nodes[j], f) for i, r in enumerate(fractions) for j, f in enumerate(r)
           if f is not None and f < PLACEMENT_THRESHOLD]
    if not low:
        return []
    return [Finding("NUMA_PLACEMENT", Severity.ERROR,
                    "pages not on the node they were bound to: " + "; ".join(
                        f"cpu {c} mem {m}: {f:.3f}" for c, m, f in low),
                    fix="check kernel.numa_balancing, cpuset.mems and free memory on the node")]


def _empty(rows: int, cols: int) -> List[List[Optional[float]]]:
    return [[None] * cols for _ in range(rows)]


def _freeze(m: List[List[Optional[float]]]) -> Tuple[Tuple[Optional[float], ...], ...]:
    return tuple(tuple(r) for r in m)


# ------------------------------------------------------------------ running

def run_numa_bench(opts: BenchOptions, progress=None, command: Sequence[str] = ()) -> NumaReport:
    """Topology, inference, (unless topology-only) the measured matrix, and with
    ``plan_ranks`` a binding plan, with ``gpu`` the host<->device transfers.

    ``progress(done, total, detail)`` is called as measurements finish; ``command`` is
    the command line recorded with a measured run."""
    topo = read_topology(opts.sysfs_root)
    if opts.gpu and not topo.live:
        raise UsageError(f"--gpu: --sysfs-root {opts.sysfs_root} describes another machine; GPU transfers are "
                         "measured on this one")
    plan, extra = plan_with_findings(topo, opts.plan_ranks) if opts.plan_ranks is not None else (None, [])
    report = _run_numa_bench(opts, topo, progress, command)
    transfers = None
    if opts.gpu:
        from mltools.numa.gpu_transfer import (DEFAULT_BYTES, DEFAULT_ROUNDS, QUICK_BYTES, QUICK_ROUNDS,
                                               measure_host_device)
        transfers = measure_host_device(
            topo, size=opts.size_bytes or (QUICK_BYTES if opts.quick else DEFAULT_BYTES),
            rounds=opts.repetitions or (QUICK_ROUNDS if opts.quick else DEFAULT_ROUNDS), nodes=opts.nodes,
            progress=progress)
        if transfers.skipped:
            extra.append(Finding("NUMA_GPU_SKIPPED", Severity.INFO, f"--gpu: nothing measured: {transfers.skipped}"))
    return dataclasses.replace(report, findings=report.findings + tuple(extra), binding_plan=plan,
                               gpu_transfers=transfers)


def _run_numa_bench(opts: BenchOptions, topo: Topology, progress=None,
                    command: Sequence[str] = ()) -> NumaReport:
    findings = topology_findings(topo)
    inference = infer_mode(topo)
    host = _host(topo)

    if opts.topology_only or opts.plan_ranks is not None:
        return NumaReport(host, topo, inference, False, False, None, None, (), {}, None, (), None, None,
                          tuple(findings))
    live = topo.live
    if not live and not opts.dry_run:
        raise UsageError(f"--sysfs-root {opts.sysfs_root} describes another machine: measurements run on this one "
                         "(add --topology-only or --dry-run)")
    kernels = tuple(opts.kernels) if opts.kernels else (QUICK_KERNELS if opts.quick else DEFAULT_KERNELS)
    for k in kernels:
        if k not in KERNEL_NAMES:
            raise UsageError(f"--kernels: unknown kernel {k!r} (choose from {', '.join(KERNEL_NAMES)})")
    if opts.page_mode not in ("thp", "4k"):
        raise UsageError(f"--pages {opts.page_mode}: expected thp or 4k")

    allowed_mems = None
    if live:
        from mltools.numa import _numa   # compiled; loaded only when measuring
        allowed_mems = _numa.mems_allowed()
    plan = plan_jobs(topo, nodes=opts.nodes, cpus=opts.cpus, threads=opts.threads,
                     simulate_nodes=opts.simulate_nodes,
                     allowed_cpus=sorted(os.sched_getaffinity(0)) if live else None,
                     allowed_mems=allowed_mems)
    size = opts.size_bytes or (QUICK_SIZE if opts.quick else DEFAULT_SIZE)
    if size < PAGE:
        raise UsageError(f"--size {size}: at least {PAGE} bytes per thread")
    size -= size % PAGE
    lat_size = opts.latency_bytes or (QUICK_LATENCY_SIZE if opts.quick else DEFAULT_LATENCY_SIZE)
    lat_size = max(lat_size - lat_size % PAGE, PAGE)
    reps = opts.repetitions or (3 if opts.quick else 10)
    if reps < 1:
        raise UsageError("--reps must be at least 1")

    isa = opts.isa
    if live:
        from mltools.numa import _numa
        if isa == "auto":
            isa = _numa.best_isa()
        elif isa not in _numa.ISAS:
            raise UsageError(f"--isa {isa}: choose auto, {', '.join(_numa.ISAS)}")
        elif not _numa.isa_usable(isa):
            raise UsageError(f"--isa {isa}: this CPU cannot run it (best here: {_numa.best_isa()})")
    config = Config(plan.cpu_nodes, plan.mem_nodes, {n: format_cpulist(c) for n, c in plan.node_cpus.items()},
                    plan.threads, size, lat_size, opts.page_mode, isa, reps, kernels,
                    "mbind(MPOL_BIND) before first touch by pinned threads",
                    "STREAM (counted bytes); estimated DRAM bytes include write-allocate", plan.simulated)
    if plan.simulated:
        inference = refused("simulated pseudo-nodes share one real node: no mode inference")
        findings.append(Finding("NUMA_SIMULATED", Severity.INFO,
                                f"--simulate-nodes {opts.simulate_nodes}: pseudo-nodes "
                                + "; ".join(f"{n}: CPUs {format_cpulist(c)}" for n, c in plan.node_cpus.items())
                                + f", all memory bound to real node {plan.real_node[plan.mem_nodes[0]]}"))
    if opts.dry_run:
        return NumaReport(host, topo, inference, False, plan.simulated, plan.threads, config, plan.jobs, {}, None,
                          (), None, None, tuple(findings))
    recorder = Recorder(command, threads=plan.threads)
    return _measure(topo, plan, config, kernels, size, lat_size, reps, isa, opts, host, inference, findings,
                    progress, recorder)


class _Grid:
    """The cpu x mem matrices of one measured run, filled in as pairs finish."""

    def __init__(self, rows: int, cols: int, kernels, modes):
        self.best = {k: _empty(rows, cols) for k in kernels}
        self.median = {k: _empty(rows, cols) for k in kernels}
        self.worst = {k: _empty(rows, cols) for k in kernels}
        self.bw_noisy = {k: _empty(rows, cols) for k in kernels}
        self.errs = {k: 0.0 for k in kernels}
        names = ("median", "p10", "p90", "thp", "min", "max", "noisy")
        self.lat = {mode: {n: _empty(rows, cols) for n in names} for mode in modes}
        self.placement = _empty(rows, cols)
        self.sampled = 0


def _measure(topo, plan: Plan, config: Config, kernels, size, lat_size, reps, isa, opts: BenchOptions,
             host, inference: Inference, findings: List[Finding], progress, recorder: Recorder) -> NumaReport:
    from mltools.numa import _numa

    rows, cols = len(plan.cpu_nodes), len(plan.mem_nodes)
    modes = [opts.page_mode] + ([] if opts.quick else [("4k" if opts.page_mode == "thp" else "thp")])
    modes_run = modes if opts.latency else []
    grid = _Grid(rows, cols, kernels, modes)
    huge = opts.page_mode == "thp"
    n_elems = size // 8
    migrated_before = _vmstat_migrated()
    quick = opts.quick

    def mapping(nbytes: int, node: int, use_huge: bool = huge, offset: int = 0):
        m = _numa.Mapping(nbytes, offset)
        m.advise_huge_pages(use_huge)
        try:
            m.bind([node])
        except OSError as exc:
            raise UsageError(f"cannot bind memory to node {node}: {exc.strerror} "
                             f"(node not present or not allowed by the cpuset)") from None
        return m

    def pin_error(exc: OSError):
        cpu = getattr(exc, "cpu", -1)
        return UsageError(f"cannot run on CPU {cpu}: {exc.strerror} (outside the affinity mask or offline)")

    total_steps = len(plan.jobs) * (len(kernels) + len(modes_run)) + (1 if opts.sweep and opts.latency else 0)
    done = 0

    def step(detail: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total_steps, detail)

    interrupted = False
    sweep: List[SweepPoint] = []
    try:
        for job in plan.jobs:
            i, j = plan.cpu_nodes.index(job.cpu_node), plan.mem_nodes.index(job.mem_node)
            pair = f"cpu{job.cpu_node}/mem{job.mem_node}"
            params = {"cpu_node": job.cpu_node, "mem_node": job.mem_node, "threads": job.threads}
            total = n_elems * job.threads * 8
            arrays = [mapping(total, job.bind_node, offset=off) for off in ARRAY_OFFSETS]
            try:
                for k in kernels:
                    base, nt = kernel_base(k)
                    a, b, c = arrays
                    try:
                        secs, err = _numa.run_bandwidth(base, nt, isa, list(job.cpus), a, b, c, n_elems, reps, True)
                    except OSError as exc:
                        raise pin_error(exc) from None
                    rates = [counted_bytes(k) * n_elems * job.threads / s / 1e9 for s in secs if s > 0]
                    case = recorder.add(f"bandwidth/{k}/{pair}", "GB/s", HIGHER, rates, spread_rule=True,
                                        params=dict(params, kernel=k, bytes_per_array=total))
                    if case is not None:
                        grid.best[k][i][j] = case.stats.max
                        grid.median[k][i][j] = case.stats.median
                        grid.worst[k][i][j] = case.stats.min
                        grid.bw_noisy[k][i][j] = case.stats.noisy
                    grid.errs[k] = max(grid.errs[k], err)
                    step(f"{k} cpu node {job.cpu_node} mem node {job.mem_node}")
                statuses = []
                per = max(PLACEMENT_PAGES // 3, 1)
                for m in arrays:
                    statuses += m.page_nodes(_sample_offsets(m.size, per))
            finally:
                del arrays
            for mode in modes_run:
                ring = mapping(lat_size, job.bind_node, mode == "thp")
                n_lines = lat_size // LINE
                # about one lap of the ring per sample, within bounds that keep a sample 10-500 ms
                steps = min(max(n_lines // (2 if quick else 1), 1 << 15), 1 << (19 if quick else 21))
                samples = 7 if quick else 9
                try:
                    ns = _numa.run_chase(job.cpus[0], ring, n_lines, LINE, opts.seed, True, samples, steps)
                except OSError as exc:
                    raise pin_error(exc) from None
                cell = grid.lat[mode]
                case = recorder.add(f"latency/{mode}/{pair}", "ns", LOWER, ns, spread_rule=True,
                                    params=dict(params, page_mode=mode, ring_bytes=lat_size, threads=1))
                if case is not None:
                    cell["median"][i][j] = case.stats.median
                    cell["min"][i][j] = case.stats.min
                    cell["max"][i][j] = case.stats.max
                cell["p10"][i][j] = _percentile(ns, 0.1)
                cell["p90"][i][j] = _percentile(ns, 0.9)
                cell["noisy"][i][j] = bool(case and case.stats.noisy)
                cell["thp"][i][j] = _smaps_thp_fraction(ring.address, ring.size)
                statuses += ring.page_nodes(_sample_offsets(ring.size, PLACEMENT_PAGES // 4))
                del ring
                step(f"latency ({mode} pages) cpu node {job.cpu_node} mem node {job.mem_node}")
            grid.sampled += len(statuses)
            grid.placement[i][j] = (sum(1 for s in statuses if s == job.bind_node) / len(statuses)
                                    if statuses else None)
        if opts.sweep and opts.latency:
            sweep = latency_sweep(plan.jobs[0].cpus[0], plan.jobs[0].bind_node, lat_size, opts.seed, quick)
            step("latency sweep")
    except KeyboardInterrupt:
        interrupted = True
    return _report(topo, plan, config, kernels, size, lat_size, opts, host, inference, findings, recorder, grid,
                   modes if opts.latency else [], sweep, huge, migrated_before, interrupted)


def _report(topo, plan: Plan, config: Config, kernels, size, lat_size, opts: BenchOptions, host,
            inference: Inference, findings: List[Finding], recorder: Recorder, grid: _Grid, modes, sweep,
            huge: bool, migrated_before, interrupted: bool) -> NumaReport:
    llc = max((p.l3_bytes or 0) for p in topo.packages) if topo.packages else 0
    if llc and size * plan.threads < 4 * llc:
        findings.append(Finding("NUMA_SMALL_BUFFERS", Severity.WARNING,
                                f"{size >> 20} MiB per array per thread x {plan.threads} thread(s) is less than "
                                f"4x the {llc >> 20} MiB L3: bandwidth includes cache hits",
                                fix=f"--size {max(4 * llc // plan.threads >> 20, 1)}M or more"))
    if llc and opts.latency and lat_size < 4 * llc:
        findings.append(Finding("NUMA_SMALL_RING", Severity.WARNING,
                                f"the {lat_size >> 20} MiB chase ring is less than 4x the {llc >> 20} MiB L3: "
                                "latency includes cache hits"))
    tolerance = 1e-13
    errs = grid.errs
    worst_err = max(errs.values()) if errs else 0.0
    validation = Validation(worst_err <= tolerance, worst_err, tolerance)
    if not validation.passed:
        bad = [k for k, e in errs.items() if e > tolerance]
        findings.append(Finding("NUMA_VALIDATION_FAILED", Severity.ERROR,
                                f"kernel results are wrong after the run ({', '.join(bad)}): "
                                f"max relative error {worst_err:.3g}"))
    findings.extend(placement_findings(plan.cpu_nodes, plan.mem_nodes, grid.placement))
    migrated_after = _vmstat_migrated()
    if migrated_before is not None and migrated_after is not None and migrated_after > migrated_before:
        findings.append(Finding("NUMA_PAGES_MIGRATED", Severity.WARNING,
                                f"{migrated_after - migrated_before} pages migrated by the kernel during the run"))
    if opts.latency and huge and topo.thp != "never":
        fracs = [f for r in grid.lat[opts.page_mode]["thp"] for f in r if f is not None]
        if fracs and min(fracs) < 0.5:
            findings.append(Finding("NUMA_THP_NOT_EFFECTIVE", Severity.WARNING,
                                    f"huge pages were asked for but only {min(fracs):.0%} of the ring is on them: "
                                    "latency includes 4 KiB page walks"))
    noisy = [c.name for c in recorder.cases if c.stats.noisy]
    if noisy:
        findings.append(Finding("NUMA_NOISY", Severity.WARNING,
                                f"{len(noisy)} of {len(recorder.cases)} figures are noisy (spread or 95% interval "
                                f"wider than 10% of the median): {', '.join(noisy[:6])}"
                                + (", ..." if len(noisy) > 6 else "")
                                + "; they are marked, and not used for the mode signature",
                                fix="run again on a quieter machine, with more --reps, or with --threads "
                                    "below the usable CPUs"))

    bandwidth = {
        k: BandwidthMatrix("1e9 B/s of STREAM-counted bytes", _freeze(grid.best[k]), _freeze(grid.median[k]),
                           _freeze(grid.worst[k]), _freeze(grid.bw_noisy[k]), plan.threads,
                           kernel_base(k)[1], counted_bytes(k), dram_bytes(k), errs[k])
        for k in kernels}
    method = "random cyclic chase (Sattolo), 64 B lines, one thread"

    def lat_matrix(mode, other=None):
        c = grid.lat[mode]
        return LatencyMatrix(method, lat_size, mode, _freeze(c["median"]), _freeze(c["p10"]), _freeze(c["p90"]),
                             _freeze(c["thp"]), min=_freeze(c["min"]), max=_freeze(c["max"]),
                             noisy=_freeze(c["noisy"]), other_pages=other)

    latency = None
    if opts.latency:
        latency = lat_matrix(opts.page_mode, lat_matrix(modes[1]) if len(modes) > 1 else None)
    if not plan.simulated and inference.refused is None and not noisy and not interrupted:
        sig = measured_signature(inference, topo, plan.cpu_nodes, plan.mem_nodes,
                                 {k: v.matrix for k, v in bandwidth.items()},
                                 latency.matrix if latency else None)
        if sig is not None:
            inference = dataclasses.replace(inference, signature=sig)
    return NumaReport(host, topo, inference, True, plan.simulated, plan.threads, config, plan.jobs, bandwidth,
                      latency, tuple(sweep), PlacementCheck("move_pages(nodes=NULL) on sampled pages", grid.sampled,
                                                            _freeze(grid.placement), PLACEMENT_THRESHOLD),
                      validation, tuple(findings), recorder.machine, recorder.finish(), tuple(recorder.cases),
                      interrupted)


SWEEP_SIZES = (16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30)


def latency_sweep(cpu: int, node: int, max_bytes: int, seed: int, quick: bool,
                  sizes: Sequence[int] = SWEEP_SIZES, page_modes: Sequence[str] = ("thp", "4k")) -> List[SweepPoint]:
    """Median chase latency per ring size (shows the cache levels), for each page mode."""
    from mltools.numa import _numa

    out = []
    for mode in page_modes:
        for sz in [s for s in sizes if s <= max_bytes]:
            m = _numa.Mapping(sz)
            m.advise_huge_pages(mode == "thp")
            m.bind([node])
            steps = max(1 << (17 if quick else 19), sz // LINE)
            ns = _numa.run_chase(cpu, m, sz // LINE, LINE, seed, True, 5, steps)
            out.append(SweepPoint(sz, mode, statistics.median(ns), _percentile(ns, 0.1), _percentile(ns, 0.9)))
            del m
    return out


def plot_numa(report: NumaReport, path: str) -> None:
    """The node x node bandwidth (one panel per kernel) and latency matrices as heat maps
    (matplotlib): each cell shows its median, noisy cells are hatched."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = report.config
    panels = [(f"{k}, GB/s (median)", bw.median, bw.noisy, "viridis") for k, bw in report.bandwidth_gbps.items()]
    if report.latency_ns:
        lat = report.latency_ns
        panels.append((f"latency, ns ({lat.page_mode} pages, median)", lat.matrix, lat.noisy, "magma_r"))
    ncols = min(4, len(panels))
    nrows = (len(panels) + ncols - 1) // ncols
    side = max(2.6, 0.6 * len(cfg.mem_nodes) + 1.6)
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols, side * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (title, matrix, noisy, cmap) in zip(axes.flat, panels):
        data = [[float("nan") if v is None else v for v in row] for row in matrix]
        im = ax.imshow(data, cmap=cmap)
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                if v is None:
                    continue
                mark = bool(noisy and noisy[i][j])
                ax.text(j, i, f"{v:.1f}" + ("\n(noisy)" if mark else ""), ha="center", va="center", fontsize=7,
                        color="black", bbox=dict(facecolor="white", alpha=0.75, lw=0))
                if mark:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", lw=0))
        ax.set_xticks(range(len(cfg.mem_nodes)), [str(m) for m in cfg.mem_nodes])
        ax.set_yticks(range(len(cfg.cpu_nodes)), [str(c) for c in cfg.cpu_nodes])
        ax.set_xlabel("memory node")
        ax.set_ylabel("cpu node")
        ax.set_title(title, fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.7)
    m = report.machine
    fig.suptitle(f"bench numa: {m.cpu_model_name if m else ''}, {report.threads} thread(s) per node"
                 + (" (simulated pseudo-nodes)" if report.simulated else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
