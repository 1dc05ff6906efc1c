"""What the topology (and optionally the measured matrix) says about the NUMA mode.

Sub-socket NUMA (COD, SNC, NPS2/4, L3-as-NUMA, die-NUMA) shows in sysfs as
several CPU nodes per package, so it is inferred with high confidence. Early
Snoop vs Home Snoop on Haswell/Broadwell-EP shows nowhere in sysfs or cpuid;
only a measured local/remote signature hints at it, so that stays ``low``.

Every conclusion carries the evidence it used, what was missing, and what
contradicted it; the confidence follows from them:

- ``high`` only when the sysfs data is complete and consistent;
- contradictions (a CPU in two nodes, overlapping package masks, a mask and its
  list that disagree, a SLIT whose sibling nodes are farther than the other
  package) cap it at ``medium``, or refuse (``buggy_sysfs``) when nothing can
  be trusted;
- gaps (no SLIT, an offline node, packages with online CPUs but no node) each
  lower it one step;
- under a hypervisor (and on s390, always partitioned) the layout is the
  guest's: ``low`` at most, and a multi-node or multi-package guest is called
  ``virtual_topology``.

CPU-less nodes stay out of the CPU mode; each gets its own conclusion: GPU
memory, NVM, CXL, HBM, soft-reserved, empty, or unknown.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mltools.numa.cpulist import format_cpulist, parse_cpulist
from mltools.numa.topology import NO_CPUINFO, NO_NODE_DIRECTORIES, Topology

CONFIDENCE_ORDER = ("none", "low", "medium", "high")

# Intel family 6 models (server parts) and the modes their BIOS offers.
INTEL_MODELS = {
    15: "Core 2 / Xeon 5100-5300 (front-side bus)", 23: "Penryn / Xeon 5400 (front-side bus)",
    29: "Dunnington (front-side bus)", 26: "Nehalem-EP", 44: "Westmere-EP", 46: "Nehalem-EX", 47: "Westmere-EX",
    45: "Sandy Bridge-EP", 62: "Ivy Bridge-EP", 63: "Haswell-EP", 79: "Broadwell-EP",
    85: "Skylake-SP/Cascade Lake/Cooper Lake", 106: "Ice Lake-SP", 108: "Ice Lake-D",
    143: "Sapphire Rapids", 207: "Emerald Rapids", 173: "Granite Rapids", 175: "Sierra Forest",
}
INTEL_COD = {63, 79}                  # Cluster-on-Die, and ES/HS/HS+Dir snoop modes
INTEL_SNC = {85: (2,), 106: (2,), 108: (2,), 143: (2, 4), 207: (2, 4), 173: (2, 3), 175: (2, 3)}
ARM_PARTS = {(0x41, 0xd4f): "Neoverse V2 (Grace)", (0x41, 0xd0c): "Neoverse N1", (0x41, 0xd40): "Neoverse V1",
             (0x48, 0xd01): "Kunpeng 920", (0x41, 0xd87): "Cortex-A725", (0x41, 0xd85): "Cortex-X925"}

MEMORY_KINDS = ("dram", "hbm", "nvm", "cxl", "spm", "gpu_memory", "empty", "unknown")


def _amd_generation(family: Optional[int], model: Optional[int]) -> Optional[str]:
    if family is None:
        return None
    if family == 0x0f:
        return "K8 Opteron"
    if family == 0x10:
        # Magny-Cours (G34, models 8 and 9) has two dies per package; Barcelona,
        # Shanghai and Istanbul (socket F) have one
        if model in (8, 9):
            return "Magny-Cours Opteron (G34, 2 dies per package)"
        return "Barcelona/Shanghai/Istanbul Opteron (1 die per package)"
    if family == 0x15:
        return "Bulldozer Opteron (2 dies per package)"
    if family == 0x17:
        if model is not None and model < 0x30:
            return "Naples (Zen)"
        return "Rome (Zen 2)"
    if family == 0x19:
        return "Milan/Genoa (Zen 3/4)"
    if family == 0x1A:
        return "Turin (Zen 5)"
    return None


def _amd_two_dies(family: Optional[int], model: Optional[int]) -> bool:
    return family == 0x15 or (family == 0x10 and model in (8, 9))


def _integrated_memory_controller(vendor: str, family: Optional[int], model: Optional[int]) -> Optional[bool]:
    """Whether each package has its own memory controller (so one node over several
    packages is a BIOS choice), or all packages share a front-side bus (UMA); None: unknown."""
    if vendor == "GenuineIntel":
        if family == 15:
            return False                          # NetBurst
        if family == 6 and model is not None:
            return not (model < 26 or model == 29)   # Nehalem (26) was the first
        return None
    if vendor == "AuthenticAMD" and family is not None:
        return family >= 0x0f                     # K8 onwards
    return None


def _down(confidence: str, steps: int = 1) -> str:
    return CONFIDENCE_ORDER[max(CONFIDENCE_ORDER.index(confidence) - steps, 0)]


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
class Conclusion:
    """One thing the inference concludes, and on what grounds."""
    subject: str                              # "node 4 memory", "allowed memory", ...
    value: str
    confidence: str
    evidence: Tuple[str, ...]
    missing: Tuple[str, ...] = ()
    contradictions: Tuple[str, ...] = ()
    node: Optional[int] = None                # the node it is about, if one


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
    missing: Tuple[str, ...] = ()             # what the mode's confidence lacks
    contradictions: Tuple[str, ...] = ()      # what the data says against itself
    memory_nodes: Tuple[Conclusion, ...] = () # one per CPU-less node (and any node with a DAX/GPU kind)
    other: Tuple[Conclusion, ...] = ()        # further conclusions (allowed memory, ...)


def refused(reason: str) -> Inference:
    return Inference("not_inferred", "none", (reason,), (), False, None, None, None, reason)


# ------------------------------------------------------------------ memory kinds

def memory_kinds(topo: Topology) -> Tuple[Conclusion, ...]:
    """What each node's memory is, for every CPU-less node and every node that a DAX
    device or a GPU says something about. The HBM rule is hwloc's
    (memattrs.c, guess_memory_tiers): soft-reserved memory counts as HBM when its
    HMAT bandwidth is more than twice that of every ordinary node."""
    plain_bw = [n.hmat.read_bandwidth_mbps for n in topo.nodes
                if n.dax is None and n.gpu_busid is None and n.hmat and n.hmat.read_bandwidth_mbps]
    spm_bw = [n.hmat.read_bandwidth_mbps if n.hmat else None for n in topo.nodes if n.dax and n.dax.kind == "spm"]
    spm_is_hbm = bool(plain_bw and spm_bw and all(spm_bw) and max(plain_bw) * 2 < min(spm_bw))
    out = []
    for n in topo.nodes:
        def mine(value, confidence, evidence, missing=(), n=n):
            return Conclusion(f"node {n.id} memory", value, confidence, tuple(evidence), tuple(missing), (), n.id)
        size = f"{(n.mem_total_bytes or 0) / 2**30:.1f} GiB"
        bw = f"HMAT read bandwidth {n.hmat.read_bandwidth_mbps} MB/s" if n.hmat and n.hmat.read_bandwidth_mbps else None
        if n.gpu_busid:
            gpu = next((d for d in (topo.io.devices if topo.io else ()) if d.busid == n.gpu_busid), None)
            near = (f"; the GPU sits at node {gpu.node}, so these CPUs are nearest"
                    if gpu is not None and gpu.node is not None else "")
            out.append(mine("gpu_memory", "high",
                            (f"proc/driver/nvidia/gpus/{n.gpu_busid}/numa_status names node {n.id}: the GPU's "
                             f"memory ({size}), reachable from the CPUs as a NUMA node{near}",)))
        elif n.dax:
            ev = [f"{n.dax.device} (driver kmem) brought it online; it hangs off {n.dax.parent}"]
            if n.dax.kind == "nvm":
                out.append(mine("nvm", "high", tuple(ev + ["an NVDIMM bus (ndbus): persistent memory"])))
            elif n.dax.kind == "cxl":
                out.append(mine("cxl", "high", tuple(ev + ["a CXL region"])))
            elif spm_is_hbm:
                out.append(mine("hbm", "medium", tuple(
                    ev + [f"soft-reserved memory with {bw}, over twice the {max(plain_bw)} MB/s of every ordinary "
                          "node: HBM (hwloc's rule)"])))
            else:
                missing = () if bw else (f"no HMAT bandwidth for node {n.id}",)
                out.append(mine("spm", "medium", tuple(
                    ev + ["soft-reserved (specific-purpose) memory: HBM or CXL, not told apart by bandwidth"]),
                    missing))
        elif n.cpu_count:
            if spm_is_hbm:
                out.append(mine("dram", "medium", (
                    "ordinary system memory next to HBM nodes" + (f" ({bw})" if bw else ""),)))
        elif not n.mem_total_bytes:
            out.append(mine("empty", "high", (
                f"node {n.id} has no CPUs and no memory: a placeholder (GPU memory partitions, hot-plug slots)",)))
        else:
            evidence = [f"node {n.id} has {size} and no CPUs"]
            if bw:
                evidence.append(bw)
            out.append(mine("unknown", "low", tuple(evidence), (
                f"no DAX device, GPU numa_status or CXL region names node {n.id}'s memory",)))
    return tuple(out)


# ------------------------------------------------------------------ the ladder

def _allowed_conclusion(topo: Topology) -> Optional[Conclusion]:
    """Whether the CPUs this process may use have allowed memory on their own node."""
    cpus = set(parse_cpulist(topo.allowed.cpus))
    mems = set(parse_cpulist(topo.allowed.mems))
    cpu_nodes = [n for n in topo.nodes if n.cpu_count and set(n.cpu_ids()) & cpus]
    if len(topo.nodes) < 2 or not cpu_nodes:
        return None
    local = [n.id for n in cpu_nodes if n.id in mems]
    ev = (f"allowed CPUs {topo.allowed.cpus} sit in node(s) {format_cpulist(n.id for n in cpu_nodes)}; "
          f"allowed memory nodes {topo.allowed.mems or '-'} ({topo.allowed.source})",)
    if not local:
        return Conclusion("allowed memory", "remote_only", "high", ev + (
            "no allowed CPU has allowed memory on its own node: every pair that can be measured is remote",))
    if len(local) < len(cpu_nodes):
        return Conclusion("allowed memory", "partly_local", "high", ev + (
            f"only node(s) {format_cpulist(local)} have both allowed CPUs and allowed memory",))
    return None


def _sibling_distances(topo: Topology, per_pkg: Dict[int, List[int]]):
    """(same-package distances, other-package distances, nodes whose nearest node is in
    another package although they have a sibling in their own), or None without a SLIT."""
    if topo.distance.source != "slit":
        return None
    idx = {n: i for i, n in enumerate(topo.distance.nodes)}
    pkg_of = {n: p for p, ns in per_pkg.items() for n in ns}
    same, other, odd = set(), set(), []
    for a in pkg_of:
        mine, theirs = [], []
        for b in pkg_of:
            if a == b or a not in idx or b not in idx:
                continue
            d = topo.distance.matrix[idx[a]][idx[b]]
            (mine if pkg_of[a] == pkg_of[b] else theirs).append(d)
        same.update(mine)
        other.update(theirs)
        if mine and theirs and min(mine) > min(theirs):
            odd.append(a)
    if not same and not other:
        return None
    return same, other, odd


def infer_mode(topo: Topology) -> Inference:
    """The inference ladder over the topology alone."""
    ev: List[str] = []
    alts: List[str] = []
    # said once below in the CPU's own words, or only where it matters (an implicit node on one package is complete)
    missing: List[str] = [m for m in topo.missing if m not in (NO_CPUINFO, NO_NODE_DIRECTORIES)]
    contra: List[str] = list(topo.inconsistencies)
    vendor, fam, model = topo.cpu.vendor or "", topo.cpu.family, topo.cpu.model
    intel = vendor == "GenuineIntel" and fam == 6
    amd = vendor == "AuthenticAMD"
    arm_part = None
    if vendor.startswith("ARM implementer") and model is not None:
        try:
            arm_part = ARM_PARTS.get((int(vendor.split()[-1], 16), model))
        except ValueError:
            arm_part = None
    generation = (INTEL_MODELS.get(model) if intel else _amd_generation(fam, model) if amd else arm_part)
    if vendor == "GenuineIntel" and fam == 15:
        generation = "NetBurst (front-side bus)"
    if vendor and fam is None and model is None:
        ev.append(f"{vendor} {topo.cpu.model_name or ''}".rstrip() + " (no family/model to look up)")
    elif vendor:
        ident = f"{vendor} family {fam} model {model}"
        ev.append(ident + (f" ({generation})" if generation else " (not in the model table)"))
    else:
        ev.append(f"CPU unknown ({topo.cpu.architecture})")
        missing.append("no CPU vendor or model (no usable proc/cpuinfo)")
    memory = memory_kinds(topo)
    others = tuple(c for c in (_allowed_conclusion(topo),) if c)

    def result(mode, confidence, k=None, virtual=False, refuse=None):
        return Inference(mode, confidence, tuple(ev), tuple(dict.fromkeys(alts)), virtual, k, generation,
                         refused=refuse, missing=tuple(dict.fromkeys(missing)),
                         contradictions=tuple(dict.fromkeys(contra)), memory_nodes=memory, other=others)

    if topo.cpus_in_several_nodes:
        ev.append("the same CPUs are in several nodes: the firmware's NUMA description cannot be trusted")
        return result("buggy_sysfs", "none", refuse="CPUs listed in several NUMA nodes")

    cap = "high"
    virtual = topo.virtualized or topo.cpu.architecture.startswith("s390")
    if topo.virtualized:
        cap = "low"
        ev.append(f"hypervisor present ({topo.hypervisor or 'cpuinfo hypervisor flag'}): the NUMA layout and SLIT are "
                  "what the VMM presents, not the host's")
    elif topo.cpu.architecture.startswith("s390"):
        cap = "medium"
        ev.append("s390: Linux always runs in a logical partition (PR/SM); its layout is the partition's")
    if contra:
        cap = _cap(cap, "medium")

    cpu_nodes = [n for n in topo.nodes if n.cpu_count]
    left_out = [n.id for n in topo.nodes if not n.cpu_count]
    if left_out:
        kinds = {c.node: c.value for c in memory}
        ev.append("CPU-less node(s) left out of the CPU mode: " + ", ".join(
            f"{i} ({kinds.get(i, 'unknown')})" for i in left_out))
    caches = [(n.id, c) for n in topo.nodes for c in n.memory_side_caches]
    if caches:
        sizes = sorted({c.size_bytes for _, c in caches if c.size_bytes})
        ev.append(f"memory-side cache on node(s) {','.join(sorted({str(i) for i, _ in caches}, key=int))}"
                  + (f" ({', '.join(f'{s / 2**30:g} GiB' for s in sizes)})" if sizes else "")
                  + ": DRAM caches slower memory (2LM/HBM cache mode)")
    if topo.offline_nodes:
        ev.append(f"offline node(s) {','.join(map(str, topo.offline_nodes))}: the layout is incomplete")
    implicit = bool(topo.nodes) and topo.nodes[0].cpus_source == "implicit"
    if implicit:
        ev.append("no sys/devices/system/node: one implicit node holds every CPU and all memory")
    steps = 0
    if topo.distance.source != "slit" and len(cpu_nodes) > 1:
        steps += 1
        ev.append("no usable SLIT: node distances unknown")
    packages = [p for p in topo.packages if p.cpu_count]

    if not topo.packages_known:
        ev.append(f"package boundaries unknown ({topo.package_source}); {len(cpu_nodes)} CPU node(s)")
        if len(cpu_nodes) <= 1:
            return result("single_node", _cap(_down("high", steps), cap), 1, virtual)
        return result("nodes_without_packages", _cap(_down("low", steps), cap), None, virtual)

    per_pkg = {p.id: [n for n in p.nodes if topo.node(n).cpu_count] for p in packages}
    nodeless = [p for p, v in per_pkg.items() if not v]
    if implicit and len(packages) > 1:
        missing.append("no sys/devices/system/node: the kernel shows no NUMA layout for several packages")
    if nodeless and cpu_nodes and not implicit:
        ev.append(f"package(s) {','.join(map(str, nodeless))} have online CPUs but no online node: "
                  "the NUMA layout is incomplete")
        missing.append(f"no online node for the CPUs of package(s) {','.join(map(str, nodeless))}")
        steps += 1

    if virtual and topo.virtualized and (len(cpu_nodes) > 1 or len(packages) > 1):
        ev.append(f"the guest shows {len(packages)} package(s) and {len(cpu_nodes)} CPU node(s)")
        alts.append(_bare_metal_name(cpu_nodes, per_pkg))
        return result("virtual_topology", _cap(_down("low", steps), cap), None, True)

    spanning = [n for n in cpu_nodes if len(n.packages) > 1]
    if spanning:
        whole = all(all(set(topo.package(p).cpu_ids()) <= set(n.cpu_ids()) for p in n.packages) for n in spanning)
        ev.append(f"node(s) {','.join(str(n.id) for n in spanning)} span "
                  f"{'/'.join(sorted({str(len(n.packages)) for n in spanning}))} packages"
                  + ("" if whole else ", some only in part"))
        if not whole:
            return result("irregular", _cap(_down("low", steps), cap), None, virtual)
        if len(cpu_nodes) > 1:
            ev.append(f"{len(cpu_nodes)} nodes of {len(packages)} packages: NUMA between groups of packages "
                      "(board, cell or chassis level)")
            return result("multi_package_node", _cap(_down("high", steps), cap), None, virtual)
        imc = _integrated_memory_controller(vendor, fam, model)
        if amd and fam is not None and fam >= 0x17:
            alts.append("node_interleave")
            return result("NPS0", _cap(_down("high", steps), cap), None, virtual)
        if imc is False:
            ev.append("the CPU has no memory controller of its own: every package reaches memory over one "
                      "front-side bus (UMA), so there is nothing to measure between packages")
            return result("uma_multi_package", _cap(_down("high", steps), cap), None, virtual)
        if imc:
            ev.append("each package has its own memory controller, yet one node covers them: node interleaving "
                      "in the BIOS, or firmware without a SRAT")
            alts.append("no_srat_or_numa_off")
            return result("node_interleave", _cap(_down("medium", steps), cap), None, virtual)
        ev.append("whether the CPU has its own memory controller is unknown")
        alts.append("node_interleave")
        return result("uma_multi_package", _cap(_down("medium", steps), cap), None, virtual)

    if len(cpu_nodes) <= 1 and len(packages) <= 1:
        ev.append(f"{len(packages)} package, {len(cpu_nodes)} node with CPUs")
        return result("single_node", _cap(_down("high", steps), cap), 1, virtual)

    counts = sorted({len(v) for v in per_pkg.values() if v})
    k = max(counts) if counts else 1
    layout = "; ".join(f"package {p}: node(s) {','.join(map(str, v)) or '-'}" for p, v in per_pkg.items())
    ev.append(f"{len(packages)} packages, {k} CPU node(s) per package ({layout})")
    if len(counts) > 1:
        ev.append(f"packages differ in node count ({counts}): some nodes are offline or empty")
    sib = _sibling_distances(topo, per_pkg)
    if sib:
        same, other, odd = sib
        fmt = lambda s: "/".join(map(str, sorted(s))) or "-"  # noqa: E731
        ev.append(f"SLIT: same-package distance {fmt(same)}, other-package {fmt(other)}")
        if odd:
            contra.append(f"the SLIT puts node(s) {format_cpulist(odd)} nearer to a node of another package than to "
                          f"any node of their own (same-package {fmt(same)}, other-package {fmt(other)})")
            cap = _cap(cap, "medium")

    l3 = {p.id: p.l3_domains for p in packages}
    if k > 1:
        confidence = "high"
        if intel and model in INTEL_COD and k == 2:
            mode = "COD"
        elif intel and model in INTEL_SNC and k in INTEL_SNC[model]:
            mode = f"SNC{k}"
        elif amd and _amd_two_dies(fam, model) and k == 2:
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
        return result(mode, _cap(_down(confidence, steps), cap), k, virtual)

    # One CPU node per package, several packages.
    if intel and model in INTEL_COD:
        ev.append("Haswell/Broadwell-EP with COD off: the snoop mode (Early Snoop, Home Snoop, "
                  "Home Snoop + directory + OSB) is not visible in sysfs or cpuid")
        alts.extend(("early_snoop", "home_snoop", "home_snoop_dir_osb"))
        return result("snoop_undetermined", "none", 1, virtual)
    if intel and model in INTEL_SNC:
        ev.append("SNC-capable CPU with one node per package")
        return result("SNC_off", _cap(_down("high", steps), cap), 1, virtual)
    if amd and fam is not None and fam >= 0x17 and not (fam == 0x17 and model is not None and model < 0x30):
        return result("NPS1", _cap(_down("high", steps), cap), 1, virtual)
    return result("one_node_per_package", _cap(_down("high", steps), cap), 1, virtual)


def _bare_metal_name(cpu_nodes, per_pkg) -> str:
    """What the guest's layout would be called on bare metal (an alternative, never the answer)."""
    if len(cpu_nodes) == 1:
        return "uma_multi_package"
    counts = {len(v) for v in per_pkg.values() if v}
    k = max(counts) if counts else 1
    if any(len(n.packages) > 1 for n in cpu_nodes):
        return "multi_package_node"
    if k > 1:
        return "sub_socket_numa"
    return "one_node_per_package"


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
