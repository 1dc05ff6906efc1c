"""A binding plan for N local ranks: rank -> GPU, nearest NIC, node, CPUs, and the prefix to run it.

Rank r takes the r-th GPU in PCI bus order (what ``cuda:LOCAL_RANK`` is with
``CUDA_DEVICE_ORDER=PCI_BUS_ID``), is bound to the GPU's node, and gets an
exclusive share of that node's allowed cores: the cores are split evenly among
the ranks on the node, whole cores only (SMT siblings stay together), the
first ranks taking one more when they do not divide. That is the split of
torch's ``torchrun --numa-binding=exclusive``; the tests compare the two. Where
torch takes ``numa_node`` -1 as node 0, this plan says the GPU's locality is
unknown and binds nothing.

The NIC of a rank is the nearest RDMA NIC (InfiniBand, or RoCE) by the PCI
path (PIX, PXB, PHB, NODE, SYS), shared out evenly among ranks at the same
distance, InfiniBand before RoCE. A plan where some GPU has no NIC on its own node says so: GPUs and
NICs cannot all be local there.

Without GPUs the ranks are spread over the CPU nodes in blocks (CPU-only
training, one rank per share of cores).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mltools.errors import UsageError
from mltools.findings import Finding, Severity
from mltools.numa.cpulist import format_cpulist, parse_cpulist
from mltools.numa.pci import RELATION_ORDER, PciDevice, relation
from mltools.numa.topology import Topology

__all__ = ["RankBinding", "BindingPlan", "plan_binding", "plan_with_findings", "split_cores"]

LOCAL_RELATIONS = ("PIX", "PXB", "PHB", "NODE")


@dataclass(frozen=True)
class RankBinding:
    rank: int
    gpu: Optional[str]                  # PCI bus id of the rank's GPU
    gpu_index: Optional[int]            # its index in PCI bus order (cuda:N with CUDA_DEVICE_ORDER=PCI_BUS_ID)
    nic: Optional[str]                  # PCI bus id of the nearest NIC
    nic_names: Tuple[str, ...]          # what the kernel calls it: mlx5_0, ibp24s0, ...
    nic_relation: Optional[str]         # PIX, PXB, PHB, NODE, SYS, unknown
    node: Optional[int]                 # the node the rank is bound to; None = locality unknown, not bound
    cpus: str                           # its CPUs (cpulist); "" when not bound
    numactl: Tuple[str, ...]            # argv prefix
    taskset: Tuple[str, ...]            # argv prefix
    notes: Tuple[str, ...] = ()


@dataclass(frozen=True)
class BindingPlan:
    ranks: int
    device_kind: str                    # "gpu" or "cpu"
    bindings: Tuple[RankBinding, ...]
    all_local: bool                     # every rank has its GPU, its NIC (if any) and its memory on its own node
    warnings: Tuple[str, ...]
    script: str                         # a POSIX sh wrapper for torchrun --no-python


def split_cores(cores: Sequence[Tuple[int, ...]], shares: int) -> List[Tuple[int, ...]]:
    """Split whole cores into ``shares`` consecutive groups, the first ones one core larger
    when they do not divide evenly; each group is the CPUs of its cores."""
    if shares < 1:
        return []
    per, extra = divmod(len(cores), shares)
    out, start = [], 0
    for i in range(shares):
        n = per + (1 if i < extra else 0)
        out.append(tuple(sorted(c for core in cores[start:start + n] for c in core)))
        start += n
    return out


def _node_cores(topo: Topology, allowed: set) -> Dict[int, List[Tuple[int, ...]]]:
    """node -> its cores (allowed CPUs only), ordered by their first CPU."""
    cores = [tuple(sorted(set(parse_cpulist(c)) & allowed)) for c in topo.core_cpus]
    cores = [c for c in cores if c] or [(c,) for c in sorted(allowed)]
    out: Dict[int, List[Tuple[int, ...]]] = {}
    for n in topo.nodes:
        mine = set(n.cpu_ids()) & allowed
        node_cores = [tuple(c for c in core if c in mine) for core in cores]
        node_cores = [c for c in node_cores if c]
        if node_cores:
            out[n.id] = sorted(node_cores, key=min)
    return out


def _pick_nic(gpu: Optional[PciDevice], node: Optional[int], nics: Sequence[PciDevice],
              uses: Dict[str, int]) -> Tuple[Optional[PciDevice], Optional[str]]:
    if not nics:
        return None, None

    def rel(nic: PciDevice) -> str:
        if gpu is not None:
            return relation(gpu, nic)
        if node is None or nic.node is None:
            return "unknown"
        return "NODE" if nic.node == node else "SYS"

    # nearest first; then the least used; then InfiniBand before RoCE (the compute fabric, usually)
    best = min(nics, key=lambda n: (RELATION_ORDER.index(rel(n)), uses.get(n.busid, 0),
                                    n.kind != "nic_infiniband", n.busid))
    uses[best.busid] = uses.get(best.busid, 0) + 1
    return best, rel(best)


def plan_binding(topo: Topology, ranks: int) -> BindingPlan:
    """The plan for ``ranks`` local ranks on ``topo``; UsageError when it cannot be made."""
    return plan_with_findings(topo, ranks)[0]


def plan_with_findings(topo: Topology, ranks: int) -> Tuple[BindingPlan, List[Finding]]:
    """The plan, and a warning with the reasons when GPUs (or ranks), NICs and memory
    cannot all be local; UsageError when it cannot be made."""
    if ranks < 1:
        raise UsageError(f"--plan {ranks}: at least one rank")
    allowed = set(parse_cpulist(topo.allowed.cpus)) & set(parse_cpulist(topo.online_cpus))
    mems = set(parse_cpulist(topo.allowed.mems))
    node_cores = _node_cores(topo, allowed)
    if not node_cores:
        raise UsageError("--plan: no allowed CPU belongs to a node")
    io = topo.io
    gpus = list(io.gpus) if io else []
    all_nics = list(io.nics) if io else []
    nics = [n for n in all_nics if n.rdma] or all_nics
    warnings: List[str] = []

    if gpus:
        if ranks > len(gpus):
            raise UsageError(f"--plan {ranks}: this machine has {len(gpus)} GPU(s) "
                             f"({', '.join(g.busid for g in gpus)}); plan at most one rank per GPU")
        rank_gpu: List[Optional[PciDevice]] = gpus[:ranks]
        rank_node = [g.node if g.node in node_cores else None for g in rank_gpu]
        kind = "gpu"
    else:
        nodes = sorted(node_cores)
        total = sum(len(c) for c in node_cores.values())
        if ranks > total:
            raise UsageError(f"--plan {ranks}: no GPU here, and only {total} allowed core(s) for CPU ranks")
        rank_gpu = [None] * ranks
        rank_node = [nodes[r * len(nodes) // ranks] for r in range(ranks)]
        kind = "cpu"
        warnings.append("no GPU found: a plan for CPU-only ranks, spread over the CPU nodes")

    cpus_of: Dict[int, Tuple[int, ...]] = {}
    for node in sorted({n for n in rank_node if n is not None}):
        on_node = [r for r in range(ranks) if rank_node[r] == node]
        cores = node_cores[node]
        if len(cores) < len(on_node):
            warnings.append(f"node {node} has {len(cores)} allowed core(s) for {len(on_node)} ranks: "
                            "they share the whole node")
            for r in on_node:
                cpus_of[r] = tuple(sorted(c for core in cores for c in core))
        else:
            for r, share in zip(on_node, split_cores(cores, len(on_node))):
                cpus_of[r] = share

    uses: Dict[str, int] = {}
    bindings = []
    unallowed: List[int] = []           # ranks bound to a node whose memory they may not use
    for r in range(ranks):
        gpu, node = rank_gpu[r], rank_node[r]
        nic, rel = _pick_nic(gpu, node, nics, uses)
        notes = []
        if gpu is not None and node is None:
            notes.append(f"GPU {gpu.busid}: {gpu.locality_evidence}; not bound")
        elif gpu is not None and gpu.locality_confidence in ("low", "none"):
            notes.append(f"GPU {gpu.busid}: locality {gpu.locality_confidence} ({gpu.locality_evidence})")
        cpus = cpus_of.get(r, ())
        numactl: Tuple[str, ...] = ()
        taskset: Tuple[str, ...] = ()
        if node is not None and cpus:
            cpulist = format_cpulist(cpus)
            numactl = ("numactl", f"--physcpubind={cpulist}")
            if node in mems:
                numactl += (f"--membind={node}",)
            else:
                notes.append(f"node {node}'s memory is not allowed here ({topo.allowed.source}): no --membind")
                unallowed.append(r)
            taskset = ("taskset", "-c", cpulist)
        bindings.append(RankBinding(r, gpu.busid if gpu else None, gpus.index(gpu) if gpu else None,
                                    nic.busid if nic else None, nic.os_devices if nic else (), rel, node,
                                    format_cpulist(cpus), numactl, taskset, tuple(notes)))

    far = [b for b in bindings if b.nic and b.nic_relation not in LOCAL_RELATIONS]
    if not nics:
        warnings.append("no NIC found: the plan has CPUs and memory only")
    elif far:
        what = "GPUs" if kind == "gpu" else "ranks"
        warnings.append(f"{what} and NICs cannot all be local: " + "; ".join(
            f"rank {b.rank}" + (f" (GPU {b.gpu}, node {b.node if b.node is not None else '?'})" if b.gpu else
                                f" (node {b.node})")
            + f" reaches its nearest NIC {b.nic} through {b.nic_relation}" for b in far))
    unbound = [b.rank for b in bindings if b.node is None]
    if unbound:
        warnings.append(f"rank(s) {format_cpulist(unbound)}: the GPU's node is unknown, so they are not bound")
    shared = [busid for busid, n in uses.items() if n > 1]
    if shared and len(nics) < ranks:
        warnings.append(f"{len(nics)} NIC(s) for {ranks} ranks: " + ", ".join(
            f"{busid} serves {uses[busid]}" for busid in sorted(shared)))
    all_local = not far and not unbound and all(b.node in mems for b in bindings)
    plan = BindingPlan(ranks, kind, tuple(bindings), all_local, tuple(warnings), "")
    plan = dataclasses.replace(plan, script=wrapper_script(plan, topo.sysfs_root))
    findings: List[Finding] = []
    if not all_local and bindings:
        why = []
        if far:
            why.append(f"rank(s) {format_cpulist([b.rank for b in far])} reach their nearest NIC only across nodes "
                       "or by an unknown path")
        if unbound:
            why.append(f"rank(s) {format_cpulist(unbound)} have a GPU whose node is unknown")
        if unallowed:
            why.append(f"rank(s) {format_cpulist(unallowed)} may not use their node's memory")
        findings.append(Finding("NUMA_PLAN_NOT_LOCAL", Severity.WARNING,
                                f"--plan {ranks}: " + ("GPUs, NICs and memory" if kind == "gpu" else
                                                       "ranks, NICs and memory") + " cannot all be local: "
                                + "; ".join(why)))
    return plan, findings


def wrapper_script(plan: BindingPlan, where: str) -> str:
    """A POSIX sh wrapper that execs each local rank under its numactl prefix.

    torchrun --nproc-per-node N --no-python ./bind.sh python train.py ...
    """
    lines = ["#!/bin/sh",
             f"# Binding of {plan.ranks} local rank(s), from `mltools bench numa --plan {plan.ranks}` ({where}).",
             f"# Use: torchrun --nproc-per-node {plan.ranks} --no-python ./bind.sh python train.py ...",
             "# numactl binds the CPUs and the memory (--membind is strict: allocations fail rather than spill)."]
    if plan.device_kind == "gpu":
        lines.append("# Rank r uses the r-th GPU in PCI bus order: cuda:LOCAL_RANK with the order below.")
        lines.append("export CUDA_DEVICE_ORDER=PCI_BUS_ID")
    lines.append('case "${LOCAL_RANK:?LOCAL_RANK is not set: run this under torchrun}" in')
    for b in plan.bindings:
        what = []
        if b.gpu:
            what.append(f"GPU {b.gpu}")
        if b.nic:
            what.append(f"NIC {b.nic}" + (f" {'/'.join(b.nic_names)}" if b.nic_names else "") + f" ({b.nic_relation})")
        comment = f"  # node {b.node}" if b.node is not None else "  # not bound: locality unknown"
        comment += (", " + ", ".join(what)) if what else ""
        run = " ".join(b.numactl + ('"$@"',)) if b.numactl else '"$@"'
        lines.append(f"  {b.rank}) exec {run} ;;{comment}")
    lines.append('  *) echo "bind.sh: no binding planned for LOCAL_RANK=$LOCAL_RANK" >&2; exit 1 ;;')
    lines.append("esac")
    return "\n".join(lines) + "\n"
