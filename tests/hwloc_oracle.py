"""lstopo (Debian's hwloc) as the oracle for a sysfs root: what hwloc sees, as plain data.

lstopo runs the way hwloc's own tests/hwloc/linux/test-topology.sh runs it:
``HWLOC_FSROOT=<root> HWLOC_COMPONENTS=linux,stop`` keeps only the Linux sysfs
backend (no CPUID of this machine, no libpciaccess, PCI from sysfs), and every
inherited ``HWLOC_*`` variable is cleared. Three runs:

- ``full`` (``--disallowed --whole-io``): the whole machine and its PCI tree;
- ``restricted`` (default, ``--no-io``): what a process in the dumped cpuset sees;
- ``raw`` (``--disallowed --no-io``, ``HWLOC_USE_NUMA_DISTANCES=1``): no locality
  fix-up of CPU-less nodes, so a node's CPUs are exactly its sysfs ``cpumap``.

XML details that matter: long ``<indexes>``/``<u64values>`` lists are split over
several elements; bitmaps are 32-bit hex words, most significant first, where an
empty word is 0; an unknown package id (-1) has no ``os_index``; a NUMA node's
parent may be a memory-side cache, an L3 or a Group.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from mltools.numa.cpulist import format_cpulist, parse_cpulist
from mltools.numa.infer import infer_mode
from mltools.numa.pci import LISTED_KINDS, device_kind

IO_TYPES = {"Bridge", "PCIDev", "OSDev", "Misc"}
OSDEV_TYPES = {0: "storage", 1: "gpu", 2: "network", 3: "openfabrics", 4: "dma", 5: "coproc", 6: "memory"}


def lstopo_exe() -> Optional[str]:
    return shutil.which("lstopo-no-graphics") or shutil.which("lstopo")


def bits(text: Optional[str]) -> Tuple[int, ...]:
    """hwloc bitmap "0x0000ffff,,0xffffffff" -> ids ("0xf...f" infinite words are dropped)."""
    if not text:
        return ()
    value = 0
    for word in text.split(","):
        word = word.strip()
        if word.lower() == "0xf...f":
            continue
        value = (value << 32) | (int(word, 16) if word not in ("", "0x") else 0)
    return tuple(i for i in range(value.bit_length()) if value >> i & 1)


@dataclass
class HwNode:
    os_index: int
    cpus: Tuple[int, ...]               # raw run: sysfs cpumap & online
    locality_cpus: Tuple[int, ...]      # hwloc's fixed-up locality (CPU-less nodes get initiators' CPUs)
    memory: int
    subtype: Optional[str]              # DRAM, HBM, NVM, SPM, GPUMemory
    package: Optional[int]              # index into packages of the Package it sits in


@dataclass
class HwPackage:
    os_index: Optional[int]             # None: physical_package_id -1
    cpus: Tuple[int, ...]
    nodes: Tuple[int, ...]              # nodes hwloc placed inside it


@dataclass
class HwPci:
    busid: str
    class_code: int                     # 16-bit class + subclass
    vendor: int
    locality_type: str                  # Package, Group, NUMANode, Machine, ...
    locality_cpus: Tuple[int, ...]
    locality_nodes: Tuple[int, ...]
    root_bus: Optional[str]             # "0000:15" from the host bridge "0000:[15-1b]"
    bridges: Tuple[str, ...]            # PCI-to-PCI bridges, top first
    osdevs: Dict[str, str]              # name -> type


@dataclass
class HwlocView:
    version: str
    cpus: Tuple[int, ...]
    complete_cpus: Tuple[int, ...]
    allowed_cpus: Tuple[int, ...]
    allowed_nodes: Tuple[int, ...]
    nodes: Dict[int, HwNode]
    packages: List[HwPackage]
    distance_nodes: Tuple[int, ...] = ()
    distances: List[List[int]] = field(default_factory=list)
    restricted_cpus: Tuple[int, ...] = ()
    restricted_nodes: Tuple[int, ...] = ()
    pci: Dict[str, HwPci] = field(default_factory=dict)
    stderr: str = ""


def run_lstopo(root, args, extra_env=None) -> Tuple[ET.Element, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HWLOC_")}
    env.update({"HWLOC_FSROOT": str(root), "HWLOC_COMPONENTS": "linux,stop", "LC_ALL": "C",
                "HWLOC_DUMPED_HWDATA_DIR": "/nonexistent-hwloc-hwdata"})
    env.update(extra_env or {})
    proc = subprocess.run([lstopo_exe(), "--of", "xml", *args, "-"], capture_output=True, text=True, env=env,
                          timeout=300, check=True)
    return ET.fromstring(proc.stdout), proc.stderr


def _walk(el, ancestors=()):
    for obj in el.findall("object"):
        yield obj, ancestors
        yield from _walk(obj, ancestors + (obj,))


def _os_index(obj) -> Optional[int]:
    v = obj.get("os_index")
    return None if v is None or int(v) in (-1, 0xFFFFFFFF) else int(v)


def _distances(tree):
    for d in tree.iter("distances2"):
        if d.get("type") != "NUMANode":
            continue
        idx = [int(x) for i in d.findall("indexes") for x in (i.text or "").split()]
        vals = [int(x) for v in d.findall("u64values") for x in (v.text or "").split()]
        n = len(idx)
        return tuple(idx), [vals[i * n:(i + 1) * n] for i in range(n)]
    return (), []


def view(root, extra_env=None) -> HwlocView:
    full, err_full = run_lstopo(root, ["--disallowed", "--whole-io"], extra_env)
    restricted, _ = run_lstopo(root, ["--no-io"], extra_env)
    raw, _ = run_lstopo(root, ["--disallowed", "--no-io"], dict(extra_env or {}, HWLOC_USE_NUMA_DISTANCES="1"))
    machine = full.find("object")
    version = next((i.get("value") for i in machine.findall("info") if i.get("name") == "hwlocVersion"), "")
    raw_cpus = {_os_index(o): bits(o.get("cpuset")) for o, _ in _walk(raw.find("object"))
                if o.get("type") == "NUMANode"}
    packages: List[HwPackage] = []
    index_of = {}
    for obj, _ in _walk(machine):
        if obj.get("type") == "Package":
            index_of[obj] = len(packages)
            packages.append(HwPackage(_os_index(obj), bits(obj.get("cpuset")), ()))
    nodes = {}
    for obj, anc in _walk(machine):
        if obj.get("type") != "NUMANode":
            continue
        nid = _os_index(obj)
        pkgs = [a for a in anc if a.get("type") == "Package"]
        pkg = index_of[pkgs[-1]] if pkgs else None
        if pkg is not None:
            packages[pkg].nodes = tuple(sorted(packages[pkg].nodes + (nid,)))
        nodes[nid] = HwNode(nid, raw_cpus.get(nid, ()), bits(obj.get("cpuset")), int(obj.get("local_memory", "0")),
                            obj.get("subtype"), pkg)
    dnodes, dmatrix = _distances(full)
    rm = restricted.find("object")
    out = HwlocView(version, bits(machine.get("cpuset")), bits(machine.get("complete_cpuset")),
                    bits(machine.get("allowed_cpuset")), bits(machine.get("allowed_nodeset")), nodes, packages,
                    dnodes, dmatrix, bits(rm.get("cpuset")),
                    tuple(sorted(_os_index(o) for o, _ in _walk(rm) if o.get("type") == "NUMANode")),
                    stderr=err_full)
    for obj, anc in _walk(machine):
        if obj.get("type") != "PCIDev":
            continue
        ptype = (obj.get("pci_type") or "").split()
        cls = int(ptype[0], 16) if ptype else 0
        vendor = int(ptype[1].strip("[]").split(":")[0], 16) if len(ptype) > 1 else 0
        host = next((a for a in reversed(anc) if a.get("type") not in IO_TYPES), machine)
        bridges = [a for a in anc if a.get("type") == "Bridge"]
        hb = next((b.get("bridge_pci") for b in bridges if b.get("depth") == "0"), None)
        root_bus = f"{hb.split(':')[0]}:{hb.split('[')[1][:2]}" if hb and "[" in hb else None
        osdevs = {o.get("name"): OSDEV_TYPES.get(int(o.get("osdev_type", "-1")), "?")
                  for o in obj.findall("object") if o.get("type") == "OSDev"}
        out.pci[obj.get("pci_busid")] = HwPci(
            obj.get("pci_busid"), cls, vendor, host.get("type"), bits(host.get("cpuset")), bits(host.get("nodeset")),
            root_bus, tuple(b.get("pci_busid") for b in bridges if b.get("pci_busid")), osdevs)
    return out


def relation(a: HwPci, b: HwPci) -> str:
    """The GPU <-> NIC relation in nvidia-smi's words, from hwloc's PCI tree (the rule
    mltools.numa.pci.relation applies to its own tree)."""
    if a.root_bus is not None and a.root_bus == b.root_bus:
        common = 0
        for x, y in zip(a.bridges, b.bridges):
            if x != y:
                break
            common += 1
        if common:
            return "PIX" if max(len(a.bridges) - common, len(b.bridges) - common) <= 1 else "PXB"
        return "PHB"
    if a.locality_type == "Machine" or b.locality_type == "Machine":
        return "unknown"
    return "NODE" if a.locality_nodes == b.locality_nodes else "SYS"


def differences(topo, view) -> dict:
    """What the parser and lstopo disagree on, as {what: (ours, hwloc's)}."""
    out = {}
    if sorted(view.nodes) != [n.id for n in topo.nodes]:
        out["nodes"] = ([n.id for n in topo.nodes], sorted(view.nodes))
    for n in topo.nodes:
        h = view.nodes.get(n.id)
        if h is None:
            continue
        if set(n.cpu_ids()) != set(h.cpus):
            out[f"node {n.id} cpus"] = (n.cpus, format_cpulist(h.cpus))
        if n.mem_total_bytes != h.memory and not (n.mem_total_bytes is None and h.memory == 0):  # 0: unknown
            out[f"node {n.id} memory"] = (n.mem_total_bytes, h.memory)
    ours = sorted((p.physical_id, p.cpus, tuple(n for n in p.nodes if len(topo.node(n).packages) == 1))
                  for p in topo.packages)
    # hwloc places a node inside a package when the node's CPUs are within it (CPU-less and spanning nodes
    # sit above); compare that, with package ids as labels (-1 = unknown, repeated ids allowed)
    theirs = sorted((p.os_index, format_cpulist(p.cpus), tuple(n for n in p.nodes if view.nodes[n].cpus))
                    for p in view.packages)
    if ours != theirs:
        out["packages"] = (ours[:8], theirs[:8])
    if view.distances:
        if topo.distance.source != "slit" or tuple(view.distance_nodes) != topo.distance.nodes \
                or [list(r) for r in topo.distance.matrix] != view.distances:
            out["distances"] = (topo.distance.source, topo.distance.nodes, view.distance_nodes)
    if set(parse_cpulist(topo.online_cpus)) != set(view.cpus):
        out["online cpus"] = (topo.online_cpus, format_cpulist(view.cpus))
    if set(parse_cpulist(topo.allowed.cpus)) != set(view.allowed_cpus):
        out["allowed cpus"] = (topo.allowed.cpus, format_cpulist(view.allowed_cpus))
    if set(parse_cpulist(topo.allowed.mems)) != set(view.allowed_nodes):
        out["allowed nodes"] = (topo.allowed.mems, view.allowed_nodes)
    kinds = {c.node: c.value for c in infer_mode(topo).memory_nodes}
    hw_kind = {"DRAM": "dram", "HBM": "hbm", "NVM": "nvm", "SPM": "spm", "GPUMemory": "gpu_memory"}
    for nid, h in view.nodes.items():
        if h.subtype and kinds.get(nid) != hw_kind.get(h.subtype):
            out[f"node {nid} memory kind"] = (kinds.get(nid), h.subtype)
    cpu_nodes = [n.id for n in topo.nodes if n.cpu_count]
    for d in topo.io.devices:
        h = view.pci.get(d.busid)
        if h is None:
            out[f"pci {d.busid} listed"] = (d.kind, None)
            continue
        if h.locality_type == "Machine":
            expected = cpu_nodes[0] if len(cpu_nodes) == 1 else None
            agree = d.node == expected
        else:
            agree = d.node in h.locality_nodes
        if not agree:
            out[f"pci {d.busid} locality"] = ((d.node, d.locality_confidence), (h.locality_type, h.locality_nodes))
        if (d.host_bridge, d.bridges) != (h.root_bus, h.bridges):
            out[f"pci {d.busid} tree"] = ((d.host_bridge, d.bridges), (h.root_bus, h.bridges))
        names = {k for k, t in h.osdevs.items() if t in ("network", "openfabrics", "storage")}
        if not names <= set(d.os_devices):
            out[f"pci {d.busid} names"] = (d.os_devices, sorted(names))
    listed = {d.busid for d in topo.io.devices}
    for busid, h in view.pci.items():
        if device_kind(h.class_code << 8, h.vendor) in LISTED_KINDS and busid not in listed \
                and device_kind(h.class_code << 8, h.vendor) != "nic_other":
            out[f"pci {busid} listed"] = (None, hex(h.class_code))
    by_bus = {d.busid: d for d in topo.io.devices}
    m = topo.io.gpu_nic
    for g, row in zip(m.gpus, m.relations):
        for n, rel in zip(m.nics, row):
            if g in view.pci and n in view.pci:
                theirs = relation(view.pci[g], view.pci[n])
                # hwloc attaches devices of a one-node machine (or of unknown locality) to the Machine
                machine_level = by_bus[g].node is None or len(cpu_nodes) == 1
                if theirs != rel and not (theirs == "unknown" and machine_level):
                    out[f"relation {g} {n}"] = (rel, theirs)
    return out
