"""What the topology (and optionally the measured matrix) says about the NUMA mode.

Sub-socket NUMA (COD, SNC, NPS2/4, L3-as-NUMA, die-NUMA) shows in sysfs as
several CPU nodes per package, so it is inferred with high confidence. Early
Snoop vs Home Snoop on Haswell/Broadwell-EP shows nowhere in sysfs or cpuid;
only a measured local/remote signature hints at it, so that stays ``low``.
Under a hypervisor the guest's layout says nothing certain about the host:
every confidence is capped at ``low``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mltools.numa.topology import Topology

CONFIDENCE_ORDER = ("none", "low", "medium", "high")

# Intel family 6 models (server parts) and the modes their BIOS offers.
INTEL_MODELS = {
    45: "Sandy Bridge-EP", 62: "Ivy Bridge-EP", 63: "Haswell-EP", 79: "Broadwell-EP",
    85: "Skylake-SP/Cascade Lake/Cooper Lake", 106: "Ice Lake-SP", 108: "Ice Lake-D",
    143: "Sapphire Rapids", 207: "Emerald Rapids", 173: "Granite Rapids", 175: "Sierra Forest",
}
INTEL_COD = {63, 79}                  # Cluster-on-Die, and ES/HS/HS+Dir snoop modes
INTEL_SNC = {85: (2,), 106: (2,), 108: (2,), 143: (2, 4), 207: (2, 4), 173: (2, 3), 175: (2, 3)}


def _amd_generation(family: Optional[int], model: Optional[int]) -> Optional[str]:
    if family is None:
        return None
    if family in (0x10, 0x15):
        return "G34 Opteron (2 dies per package)" if family == 0x10 else "Bulldozer Opteron (2 dies per package)"
    if family == 0x17:
        if model is not None and model < 0x30:
            return "Naples (Zen)"
        return "Rome (Zen 2)"
    if family == 0x19:
        return "Milan/Genoa (Zen 3/4)"
    if family == 0x1A:
        return "Turin (Zen 5)"
    return None


def _cap(confidence: str, cap: str) -> str:
    return confidence if CONFIDENCE_ORDER.index(confidence) <= CONFIDENCE_ORDER.index(cap) else cap


@dataclass(frozen=True)
class Signature:
    """Measured remote/local ratios and what they are consistent with."""
    bandwidth_kernel: Optional[str]
    bandwidth_remote_over_local: Optional[float]
    latency_remote_over_local: Optional[float]
    consistent_with: str
    confidence: str


@dataclass(frozen=True)
class Inference:
    mode: str
    confidence: str                           # high, medium, low, none
    evidence: Tuple[str, ...]
    alternatives: Tuple[str, ...]
    virtual_topology: bool
    nodes_per_package: Optional[int]
    cpu_generation: Optional[str]
    signature: Optional[Signature] = None
    refused: Optional[str] = None             # why no inference was made


def refused(reason: str) -> Inference:
    return Inference("not_inferred", "none", (reason,), (), False, None, None, None, reason)


def infer_mode(topo: Topology) -> Inference:
    """The inference ladder over the topology alone."""
    ev: List[str] = []
    alts: List[str] = []
    vendor, fam, model = topo.cpu.vendor or "", topo.cpu.family, topo.cpu.model
    intel = vendor == "GenuineIntel" and fam == 6
    amd = vendor == "AuthenticAMD"
    generation = (INTEL_MODELS.get(model) if intel else _amd_generation(fam, model) if amd else None)
    ident = f"{vendor or 'unknown vendor'} family {fam} model {model}"
    ev.append(f"{ident}" + (f" ({generation})" if generation else " (not in the model table)"))

    cap = "high"
    if topo.virtualized:
        cap = "low"
        ev.append(f"hypervisor present ({topo.hypervisor or 'cpuinfo hypervisor flag'}): the NUMA layout and SLIT are "
                  "what the VMM presents, not the host's")

    cpu_nodes = [n for n in topo.nodes if n.cpu_count]
    if topo.memory_only_nodes:
        ev.append(f"memory-only node(s) {','.join(map(str, topo.memory_only_nodes))} left out "
                  "(CXL/PMem/HBM, not sub-NUMA clusters)")
    caches = [(n.id, c) for n in topo.nodes for c in n.memory_side_caches]
    if caches:
        sizes = sorted({c.size_bytes for _, c in caches if c.size_bytes})
        ev.append(f"memory-side cache on node(s) {','.join(sorted({str(i) for i, _ in caches}, key=int))}"
                  + (f" ({', '.join(f'{s / 2**30:g} GiB' for s in sizes)})" if sizes else "")
                  + ": DRAM caches slower memory (2LM/HBM cache mode)")
    if topo.offline_nodes:
        ev.append(f"offline node(s) {','.join(map(str, topo.offline_nodes))}: the layout is incomplete")

    packages = [p for p in topo.packages if p.cpu_count]
    spanning = [n for n in cpu_nodes if len(n.packages) > 1]
    if spanning:
        ids = ",".join(str(n.id) for n in spanning)
        ev.append(f"node(s) {ids} span {len(spanning[0].packages)} packages")
        mode = "NPS0" if amd and fam is not None and fam >= 0x17 else "node_interleave"
        alts.append("node_interleave" if mode == "NPS0" else "NPS0")
        return Inference(mode, _cap("high", cap), tuple(ev), tuple(alts), topo.virtualized, None, generation)

    if len(cpu_nodes) <= 1 and len(packages) <= 1:
        ev.append(f"{len(packages)} package, {len(cpu_nodes)} node with CPUs")
        return Inference("single_node", _cap("high", cap), tuple(ev), (), topo.virtualized, 1, generation)

    per_pkg = {p.id: [n for n in p.nodes if topo.node(n).cpu_count] for p in packages}
    counts = sorted({len(v) for v in per_pkg.values() if v})
    k = max(counts) if counts else 1
    layout = "; ".join(f"package {p}: node(s) {','.join(map(str, v)) or '-'}" for p, v in per_pkg.items())
    ev.append(f"{len(packages)} packages, {k} CPU node(s) per package ({layout})")
    empty = [str(p) for p, v in per_pkg.items() if not v]
    if empty:
        ev.append(f"package(s) {','.join(empty)} have online CPUs but no online node")
    if len(counts) > 1:
        ev.append(f"packages differ in node count ({counts}): some nodes are offline or empty")
    sibling = _sibling_distances(topo, per_pkg)
    if sibling:
        ev.append(f"SLIT: same-package distance {sibling[0]}, other-package {sibling[1]}")

    l3 = {p.id: p.l3_domains for p in packages}
    if k > 1:
        confidence = "high"
        if intel and model in INTEL_COD and k == 2:
            mode = "COD"
        elif intel and model in INTEL_SNC and k in INTEL_SNC[model]:
            mode = f"SNC{k}"
        elif amd and fam in (0x10, 0x15) and k == 2:
            mode = "die-NUMA"
            ev.append("two dies per package, each its own node: inherent, not a BIOS mode")
        elif amd and fam == 0x17 and model is not None and model < 0x30 and k == 4:
            mode = "die-NUMA"
            ev.append("Naples has four dies per package, each its own node: inherent, not a BIOS mode")
        elif amd and fam is not None and fam >= 0x17:
            l3_match = all(l3.get(p) == k for p in per_pkg)
            if k in (2, 4):
                mode = f"NPS{k}"
                if l3_match:
                    alts.append("L3-as-NUMA")
                    ev.append(f"{k} L3 domains per package as well: L3-as-NUMA is possible")
            elif l3_match or k > 4:
                mode = "L3-as-NUMA"
                ev.append("nodes per package equal L3 domains per package" if l3_match
                          else "more than 4 nodes per package")
            else:
                mode, confidence = "sub_socket_numa", "medium"
        else:
            mode, confidence = "sub_socket_numa", "medium"
            ev.append(f"{k} nodes per package on a CPU the model table does not name")
        return Inference(mode, _cap(confidence, cap), tuple(ev), tuple(alts), topo.virtualized, k, generation)

    # One CPU node per package, several packages.
    if intel and model in INTEL_COD:
        ev.append("Haswell/Broadwell-EP with COD off: the snoop mode (Early Snoop, Home Snoop, "
                  "Home Snoop + directory + OSB) is not visible in sysfs or cpuid")
        return Inference("snoop_undetermined", "none", tuple(ev), ("early_snoop", "home_snoop", "home_snoop_dir_osb"),
                         topo.virtualized, 1, generation)
    if intel and model in INTEL_SNC:
        ev.append("SNC-capable CPU with one node per package")
        return Inference("SNC_off", _cap("high", cap), tuple(ev), (), topo.virtualized, 1, generation)
    if amd and fam is not None and fam >= 0x17 and not (fam == 0x17 and model is not None and model < 0x30):
        return Inference("NPS1", _cap("high", cap), tuple(ev), (), topo.virtualized, 1, generation)
    return Inference("one_node_per_package", _cap("high", cap), tuple(ev), (), topo.virtualized, 1, generation)


def _sibling_distances(topo: Topology, per_pkg: Dict[int, List[int]]) -> Optional[Tuple[str, str]]:
    if topo.distance.source != "slit":
        return None
    idx = {n: i for i, n in enumerate(topo.distance.nodes)}
    pkg_of = {n: p for p, ns in per_pkg.items() for n in ns}
    same, other = set(), set()
    for a in pkg_of:
        for b in pkg_of:
            if a == b or a not in idx or b not in idx:
                continue
            d = topo.distance.matrix[idx[a]][idx[b]]
            (same if pkg_of[a] == pkg_of[b] else other).add(d)
    if not same and not other:
        return None
    fmt = lambda s: "/".join(map(str, sorted(s))) or "-"  # noqa: E731
    return fmt(same), fmt(other)


def measured_signature(inference: Inference, topo: Topology, cpu_nodes: Sequence[int], mem_nodes: Sequence[int],
                       bandwidth: Dict[str, Sequence[Sequence[Optional[float]]]],
                       latency: Optional[Sequence[Sequence[Optional[float]]]]) -> Optional[Signature]:
    """Remote/local ratios from a real node x node matrix (local = same node,
    remote = the farthest other node by SLIT), and what they are consistent with."""
    pairs_local, pairs_remote = [], []
    for i, c in enumerate(cpu_nodes):
        for j, m in enumerate(mem_nodes):
            (pairs_local if c == m else pairs_remote).append((i, j))
    if not pairs_local or not pairs_remote:
        return None

    def ratio(matrix):
        if matrix is None:
            return None
        loc = [matrix[i][j] for i, j in pairs_local if matrix[i][j]]
        rem = [matrix[i][j] for i, j in pairs_remote if matrix[i][j]]
        if not loc or not rem:
            return None
        return (sum(rem) / len(rem)) / (sum(loc) / len(loc))

    kernel = "read" if "read" in bandwidth else (next(iter(bandwidth)) if bandwidth else None)
    b = ratio(bandwidth[kernel]) if kernel else None
    lat = ratio(latency)
    text = "remote/local ratios only (no mode-specific signature for this CPU)"
    conf = "low"
    if inference.mode == "snoop_undetermined" and b is not None:
        if b <= 0.2 and lat is not None and 1.5 <= lat <= 1.8:
            text = "consistent with Early Snoop remote-credit starvation"
        elif 0.3 <= b <= 0.45:
            text = "consistent with Home Snoop (with or without directory) or a normal 2-socket system"
        else:
            text = "outside the calibrated ranges: no snoop mode suggested"
    elif b is not None and b > 0.9 and (lat is None or lat < 1.1):
        text = "remote looks like local: node interleaving or a virtual topology"
    if topo.virtualized:
        conf = "low"
    return Signature(kernel, b, lat, text, conf)
