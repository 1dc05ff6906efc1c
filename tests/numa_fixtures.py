"""Helpers for the bench numa tests: the sysfs dumps, synthetic roots, and lstopo's view.

The dumps in ../shared/fixtures/sysfs (or $MLTOOLS_NUMA_FIXTURES) are real
machines' /sys and /proc from hwloc's test suite; they are unpacked into a
temp dir per test session and never committed unpacked.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent


def fixtures_dir() -> Optional[Path]:
    for cand in (os.environ.get("MLTOOLS_NUMA_FIXTURES"), REPO / "shared" / "fixtures" / "sysfs",
                 REPO.parent / "shared" / "fixtures" / "sysfs", Path("/work/shared/fixtures/sysfs")):
        if cand and Path(cand).is_dir() and any(Path(cand).glob("*.tar.bz2")):
            return Path(cand)
    return None


# tarball stem -> top directory inside it
TOP_DIRS = {
    "memorysidecaches": "memorysidecaches",
    "32intel64-2p8co2t+8ve": "32intel64-2p8co2t+8ve",
    "32em64t-2n8c+dax+nvme+mic+dimms": "32em64t-2n8c+1mic",
    "offline-cpu0-node0": "offline-cpu0-node0",
    "64amd64-4s2n4ca2co": "64amd64-4s2n4ca2co",
    "48amd64-4pa2n6c-sparse": "48amd64-4d2n6c-sparse",
    "128arm-2pa2n8cluster4co": "128arm-2pa2n8cluster4co",
    "32amd64-4s2n4c-cgroup2": "32amd64-4s2n4c-cgroup",
}


def scratch_dir(fallback: Path) -> Path:
    """A tmpfs directory when there is one (tens of thousands of small files unpack
    several times faster there), else ``fallback``."""
    import tempfile
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return Path(tempfile.mkdtemp(prefix="mltools-numa-", dir="/dev/shm"))
    return fallback


def unpack_all(dest: Path) -> Dict[str, Path]:
    src = fixtures_dir()
    out = {}
    if src is None:
        return out
    for stem, top in TOP_DIRS.items():
        tar = src / f"{stem}.tar.bz2"
        if not tar.exists():
            continue
        with tarfile.open(tar) as tf:
            # PCI trees and uevent files matter to neither parser (lstopo runs with --no-io)
            members = [m for m in tf.getmembers()
                       if "/pci" not in m.name and not m.name.endswith("/uevent")]
            tf.extractall(dest, members=members, filter="data")
        out[stem] = dest / top
    return out


# ------------------------------------------------------------------ lstopo

def _bits(text: Optional[str]) -> Tuple[int, ...]:
    """hwloc bitmap "0x0000ffff,,0xffffffff" (32-bit words, high first; empty = 0) -> ids."""
    if not text:
        return ()
    words = text.split(",")
    value = 0
    for w in words:
        value = (value << 32) | (int(w, 16) if w else 0)
    return tuple(i for i in range(value.bit_length()) if value >> i & 1)


@dataclass
class HwlocView:
    packages: Dict[int, Tuple[int, ...]] = field(default_factory=dict)        # id -> cpus
    package_nodes: Dict[int, Tuple[int, ...]] = field(default_factory=dict)   # id -> node ids
    nodes: Dict[int, Tuple[int, ...]] = field(default_factory=dict)           # id -> cpus
    node_memory: Dict[int, int] = field(default_factory=dict)
    distance_nodes: Tuple[int, ...] = ()
    distances: List[List[int]] = field(default_factory=list)
    allowed_cpus: Tuple[int, ...] = ()
    allowed_nodes: Tuple[int, ...] = ()


def lstopo_view(root: Path, disallowed: bool = False) -> HwlocView:
    exe = shutil.which("lstopo-no-graphics") or shutil.which("lstopo")
    argv = [exe, "--no-io", "--of", "xml"] + (["--disallowed"] if disallowed else [])
    env = dict(os.environ, HWLOC_FSROOT=str(root), HWLOC_COMPONENTS="linux,-x86")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=True)
    tree = ET.fromstring(proc.stdout)
    view = HwlocView()

    def walk(el, package):
        for obj in el.findall("object"):
            kind = obj.get("type")
            pkg = package
            if kind == "Machine":
                view.allowed_cpus = _bits(obj.get("allowed_cpuset"))
                view.allowed_nodes = _bits(obj.get("allowed_nodeset"))
            if kind == "Package":
                pkg = int(obj.get("os_index"))
                view.packages[pkg] = _bits(obj.get("cpuset"))
                view.package_nodes.setdefault(pkg, ())
            elif kind == "NUMANode":
                n = int(obj.get("os_index"))
                view.nodes[n] = _bits(obj.get("cpuset"))
                view.node_memory[n] = int(obj.get("local_memory", "0"))
                if package is not None:
                    view.package_nodes[package] = tuple(sorted(view.package_nodes.get(package, ()) + (n,)))
            walk(obj, pkg)

    walk(tree, None)
    for d in tree.iter("distances2"):
        if d.get("type") != "NUMANode":
            continue
        idx = [int(x) for x in (d.find("indexes").text or "").split()]
        vals = [int(x) for v in d.findall("u64values") for x in (v.text or "").split()]
        n = len(idx)
        view.distance_nodes = tuple(idx)
        view.distances = [vals[i * n:(i + 1) * n] for i in range(n)]
        break
    return view


# ------------------------------------------------------------- synthetic roots

@dataclass
class SynthNode:
    id: int
    cpus: Sequence[int]
    mem_kb: int = 16 * 1024 * 1024


def write_root(root: Path, *, vendor: str, family: int, model: int, model_name: str,
               packages: Dict[int, Sequence[int]], nodes: Sequence[SynthNode], distances: Sequence[Sequence[int]],
               l3_groups: Sequence[Sequence[int]], hypervisor: bool = False) -> Path:
    """A fake /sys + /proc root in the layout hwloc-gather-topology writes."""
    def put(rel: str, text: str):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    from mltools.numa.topology import format_cpulist
    all_cpus = sorted(c for cs in packages.values() for c in cs)
    cpu = "sys/devices/system/cpu"
    put(f"{cpu}/online", format_cpulist(all_cpus) + "\n")
    put(f"{cpu}/possible", format_cpulist(all_cpus) + "\n")
    put(f"{cpu}/present", format_cpulist(all_cpus) + "\n")
    pkg_of = {c: p for p, cs in packages.items() for c in cs}
    l3_of = {c: g for g in l3_groups for c in g}
    for c in all_cpus:
        t = f"{cpu}/cpu{c}/topology"
        put(f"{t}/physical_package_id", f"{pkg_of[c]}\n")
        put(f"{t}/die_id", "0\n")
        put(f"{t}/core_id", f"{c}\n")
        put(f"{t}/thread_siblings_list", f"{c}\n")
        put(f"{t}/core_siblings_list", format_cpulist(packages[pkg_of[c]]) + "\n")
        put(f"{t}/package_cpus_list", format_cpulist(packages[pkg_of[c]]) + "\n")
        put(f"{t}/core_cpus_list", f"{c}\n")
        put(f"{t}/package_cpus", cpumask(packages[pkg_of[c]]) + "\n")
        put(f"{t}/core_siblings", cpumask(packages[pkg_of[c]]) + "\n")
        put(f"{t}/core_cpus", cpumask([c]) + "\n")
        put(f"{t}/thread_siblings", cpumask([c]) + "\n")
        if c in l3_of:
            i3 = f"{cpu}/cpu{c}/cache/index3"
            put(f"{i3}/level", "3\n")
            put(f"{i3}/type", "Unified\n")
            put(f"{i3}/size", "32768K\n")
            put(f"{i3}/shared_cpu_list", format_cpulist(l3_of[c]) + "\n")
            put(f"{i3}/shared_cpu_map", cpumask(l3_of[c]) + "\n")
            put(f"{i3}/coherency_line_size", "64\n")
    for c in all_cpus:
        link = root / "sys/bus/cpu/devices" / f"cpu{c}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"../../../devices/system/cpu/cpu{c}")
    node = "sys/devices/system/node"
    ids = [n.id for n in nodes]
    for i in ids:
        link = root / "sys/bus/node/devices" / f"node{i}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"../../../devices/system/node/node{i}")
    put(f"{node}/online", format_cpulist(ids) + "\n")
    put(f"{node}/possible", format_cpulist(ids) + "\n")
    put(f"{node}/has_cpu", format_cpulist([n.id for n in nodes if n.cpus]) + "\n")
    put(f"{node}/has_memory", format_cpulist(ids) + "\n")
    for n, row in zip(nodes, distances):
        d = f"{node}/node{n.id}"
        put(f"{d}/cpulist", format_cpulist(n.cpus) + "\n")
        put(f"{d}/cpumap", cpumask(n.cpus) + "\n")
        put(f"{d}/distance", " ".join(map(str, row)) + "\n")
        put(f"{d}/meminfo", f"Node {n.id} MemTotal:       {n.mem_kb} kB\nNode {n.id} MemFree:        {n.mem_kb // 2} kB\n")
        for c in n.cpus:
            (root / d / f"cpu{c}").mkdir(parents=True, exist_ok=True)
    flags = "fpu sse sse2 lm avx avx2" + (" hypervisor" if hypervisor else "")
    info = []
    for c in all_cpus:
        info.append(f"processor\t: {c}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
                    f"model name\t: {model_name}\nphysical id\t: {pkg_of[c]}\nflags\t\t: {flags}\n")
    put("proc/cpuinfo", "\n".join(info) + "\n")
    put("proc/meminfo", f"MemTotal:       {sum(n.mem_kb for n in nodes)} kB\n")
    return root


def cpumask(ids) -> str:
    """Kernel cpumask format: comma-separated 32-bit hex words, high first."""
    value = 0
    for i in ids:
        value |= 1 << i
    words = []
    while True:
        words.append(f"{value & 0xffffffff:08x}")
        value >>= 32
        if not value:
            break
    return ",".join(reversed(words))


def _chunks(seq, k):
    n = len(seq) // k
    return [list(seq[i * n:(i + 1) * n]) for i in range(k)]


def synth_cod(root: Path) -> Path:
    """2x Xeon E5-2697 v3 (Haswell-EP, model 63) with Cluster-on-Die: 2 nodes per socket."""
    pk = {0: list(range(0, 14)), 1: list(range(14, 28))}
    halves = _chunks(pk[0], 2) + _chunks(pk[1], 2)
    nodes = [SynthNode(i, h) for i, h in enumerate(halves)]
    dist = [[10, 21, 31, 31], [21, 10, 31, 31], [31, 31, 10, 21], [31, 31, 21, 10]]
    return write_root(root, vendor="GenuineIntel", family=6, model=63,
                      model_name="Intel(R) Xeon(R) CPU E5-2697 v3 @ 2.60GHz",
                      packages=pk, nodes=nodes, distances=dist, l3_groups=halves)


def synth_nps4(root: Path) -> Path:
    """2x EPYC 7742 (Rome, family 0x17 model 0x31) in NPS4: 4 nodes per socket, 16 CCX L3s per socket."""
    pk = {0: list(range(0, 64)), 1: list(range(64, 128))}
    quads = _chunks(pk[0], 4) + _chunks(pk[1], 4)
    nodes = [SynthNode(i, q) for i, q in enumerate(quads)]
    dist = [[10 if i == j else (12 if i // 4 == j // 4 else 32) for j in range(8)] for i in range(8)]
    l3 = _chunks(pk[0], 16) + _chunks(pk[1], 16)
    return write_root(root, vendor="AuthenticAMD", family=0x17, model=0x31,
                      model_name="AMD EPYC 7742 64-Core Processor",
                      packages=pk, nodes=nodes, distances=dist, l3_groups=l3)


def synth_l3_as_numa(root: Path) -> Path:
    """1x EPYC 7763 (Milan) with "L3 cache as NUMA domain": 8 nodes, one per CCX."""
    pk = {0: list(range(0, 64))}
    ccx = _chunks(pk[0], 8)
    nodes = [SynthNode(i, g) for i, g in enumerate(ccx)]
    dist = [[10 if i == j else (11 if i // 2 == j // 2 else 12) for j in range(8)] for i in range(8)]
    return write_root(root, vendor="AuthenticAMD", family=0x19, model=0x01,
                      model_name="AMD EPYC 7763 64-Core Processor",
                      packages=pk, nodes=nodes, distances=dist, l3_groups=ccx)


def synth_nps0(root: Path) -> Path:
    """2x EPYC 7742 in NPS0: one node over both sockets."""
    pk = {0: list(range(0, 8)), 1: list(range(8, 16))}
    nodes = [SynthNode(0, list(range(16)))]
    return write_root(root, vendor="AuthenticAMD", family=0x17, model=0x31,
                      model_name="AMD EPYC 7742 64-Core Processor",
                      packages=pk, nodes=nodes, distances=[[10]], l3_groups=[pk[0], pk[1]])


def synth_cxl(root: Path, hypervisor: bool = False) -> Path:
    """2x Sapphire Rapids (model 143), SNC off, plus a CPU-less CXL memory node 2."""
    pk = {0: list(range(0, 8)), 1: list(range(8, 16))}
    nodes = [SynthNode(0, pk[0]), SynthNode(1, pk[1]), SynthNode(2, [], 64 * 1024 * 1024)]
    dist = [[10, 21, 14], [21, 10, 24], [14, 24, 10]]
    return write_root(root, vendor="GenuineIntel", family=6, model=143,
                      model_name="Intel(R) Xeon(R) Platinum 8480+", packages=pk, nodes=nodes,
                      distances=dist, l3_groups=[pk[0], pk[1]], hypervisor=hypervisor)


SYNTHETIC = {"cod": synth_cod, "nps4": synth_nps4, "l3_as_numa": synth_l3_as_numa,
             "nps0": synth_nps0, "cxl": synth_cxl}
