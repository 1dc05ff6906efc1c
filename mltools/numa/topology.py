"""NUMA topology from sysfs and procfs under a replaceable root.

The root plays the part of hwloc's ``HWLOC_FSROOT``: ``/`` for the live
machine, or an unpacked ``hwloc-gather-topology`` dump. The parser survives
what real dumps contain: trailing NUL bytes, sparse node ids, package ids
such as 36 and 8442, an offline node 0, an empty ``has_cpu``, a missing
``has_memory``, node cpulists that name offline CPUs, and CPU-less memory nodes.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from mltools._sysfs import cpuinfo_fields, read_bytes
from mltools.errors import InputError

SYS_NODE = "sys/devices/system/node"
SYS_CPU = "sys/devices/system/cpu"


# ---------------------------------------------------------------- cpulists

def parse_cpulist(text: str) -> Tuple[int, ...]:
    """``"0-3,8,10-11"`` -> (0, 1, 2, 3, 8, 10, 11); empty text -> ()."""
    out = set()
    for part in text.replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, _, hi = part.partition("-")
            if ":" in hi:   # "0-31:2" stride form (kernel cpulist syntax)
                hi, _, step = hi.partition(":")
                out.update(range(int(lo), int(hi) + 1, int(step.split("/")[0])))
            else:
                out.update(range(int(lo), int(hi) + 1))
        else:
            out.add(int(part))
    return tuple(sorted(out))


def format_cpulist(ids: Iterable[int]) -> str:
    """(0, 1, 2, 3, 8) -> ``"0-3,8"``; the inverse of parse_cpulist."""
    ids = sorted(set(ids))
    parts = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


# ------------------------------------------------------------------ results

@dataclass(frozen=True)
class CpuIdentity:
    architecture: str           # "x86_64", "aarch64", ... (from cpuinfo, or uname on the live root)
    vendor: Optional[str]       # "GenuineIntel", "AuthenticAMD", "ARM implementer 0x48"
    family: Optional[int]
    model: Optional[int]
    model_name: Optional[str]
    hypervisor_flag: bool


@dataclass(frozen=True)
class MemorySideCache:
    level: int
    size_bytes: Optional[int]
    line_size: Optional[int]
    indexing: Optional[int]
    write_policy: Optional[int]


@dataclass(frozen=True)
class NodeInfo:
    id: int
    cpus: str                                  # online CPUs (cpulist format)
    cpu_count: int
    has_cpu: bool
    has_memory: bool
    mem_total_bytes: Optional[int]             # nodeN/meminfo, never reconciled with /proc/meminfo
    packages: Tuple[int, ...]                  # packages of this node's CPUs
    distance: Tuple[int, ...]                  # SLIT row, in `Topology.distance.nodes` order
    hugepages: Dict[str, Dict[str, int]]       # "2048kB" -> {"total", "free"}
    hmat: Dict[str, Optional[int]]             # access0 initiators: ns and MB/s; None when absent
    memory_side_caches: Tuple[MemorySideCache, ...]
    cpus_listed_offline: str                   # CPUs the cpulist names that are not online

    def cpu_ids(self) -> Tuple[int, ...]:
        return parse_cpulist(self.cpus)


@dataclass(frozen=True)
class PackageInfo:
    id: int
    cpus: str
    cpu_count: int
    nodes: Tuple[int, ...]
    dies: Tuple[int, ...]
    l3_domains: int
    l3_bytes: Optional[int]                    # all L3 domains of the package together

    def cpu_ids(self) -> Tuple[int, ...]:
        return parse_cpulist(self.cpus)


@dataclass(frozen=True)
class Distance:
    nodes: Tuple[int, ...]
    matrix: Tuple[Tuple[int, ...], ...]
    source: str                                # "slit", "none", "inconsistent"


@dataclass(frozen=True)
class Allowed:
    cpus: str
    mems: str
    source: str                                # where the sets came from
    cgroup: Optional[str]                      # "v1", "v2" or None


@dataclass(frozen=True)
class Topology:
    sysfs_root: str
    live: bool
    cpu: CpuIdentity
    online_cpus: str
    packages: Tuple[PackageInfo, ...]
    nodes: Tuple[NodeInfo, ...]
    memory_only_nodes: Tuple[int, ...]
    offline_nodes: Tuple[int, ...]
    distance: Distance
    allowed: Allowed
    thp: Optional[str]
    numa_balancing: Optional[int]
    virtualized: bool
    hypervisor: Optional[str]
    kernel: Optional[str]
    quirks: Tuple[str, ...] = field(default=())

    def node(self, node_id: int) -> NodeInfo:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    @property
    def cpu_nodes(self) -> Tuple[int, ...]:
        return tuple(n.id for n in self.nodes if n.cpu_count)


# ------------------------------------------------------------------ reading

class _Root:
    """Reads files under the root; notes NUL-terminated files as a quirk."""

    def __init__(self, root: str):
        self.root = root
        self.quirks: List[str] = []

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel))

    def read(self, rel: str) -> Optional[str]:
        data = read_bytes(rel, self.root)
        if data is None:
            return None
        if b"\0" in data:
            note = "trailing NUL bytes in sysfs files"
            if note not in self.quirks:
                self.quirks.append(note)
            data = data.replace(b"\0", b"")
        return data.decode("utf-8", "replace").strip()

    def read_int(self, rel: str) -> Optional[int]:
        text = self.read(rel)
        if text is None or text == "":
            return None
        try:
            return int(text.split()[0], 0)
        except ValueError:
            return None

    def listdir(self, rel: str) -> List[str]:
        try:
            return os.listdir(self.path(rel))
        except OSError:
            return []


def _cpuinfo(r: _Root) -> CpuIdentity:
    first = cpuinfo_fields(r.read("proc/cpuinfo") or "")
    flags = set(first.get("flags", "").split()) | set(first.get("Features", "").split())
    vendor = first.get("vendor_id")
    arch = None
    if vendor:
        arch = "x86_64" if "lm" in flags else "x86"
    elif "CPU implementer" in first:
        vendor = f"ARM implementer {first['CPU implementer']}"
        arch = "aarch64"
    if r.root == "/":
        arch = os.uname().machine
    def as_int(key):
        try:
            return int(first[key], 0)
        except (KeyError, ValueError):
            return None
    family = as_int("cpu family")
    model = as_int("model")
    if vendor and vendor.startswith("ARM"):
        family, model = as_int("CPU architecture"), as_int("CPU part")
    return CpuIdentity(arch or "unknown", vendor, family, model,
                       first.get("model name"), "hypervisor" in flags)


def _cache_size(text: Optional[str]) -> Optional[int]:
    """sysfs cache size such as "32768K" -> bytes."""
    m = re.fullmatch(r"(\d+)\s*([KMG]?)", text or "")
    if not m:
        return None
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]


def _meminfo_total(text: Optional[str]) -> Optional[int]:
    if not text:
        return None
    m = re.search(r"MemTotal:\s+(\d+)\s*kB", text)
    return int(m.group(1)) * 1024 if m else None


def _hmat(r: _Root, node_dir: str) -> Dict[str, Optional[int]]:
    base = f"{node_dir}/access0/initiators"
    out = {}
    for key, fname in (("read_latency_ns", "read_latency"), ("write_latency_ns", "write_latency"),
                       ("read_bandwidth_mbps", "read_bandwidth"), ("write_bandwidth_mbps", "write_bandwidth")):
        out[key] = r.read_int(f"{base}/{fname}")
    return out


def _side_caches(r: _Root, node_dir: str) -> Tuple[MemorySideCache, ...]:
    base = f"{node_dir}/memory_side_cache"
    out = []
    for name in sorted(r.listdir(base)):
        m = re.fullmatch(r"index(\d+)", name)
        if not m:
            continue
        d = f"{base}/{name}"
        out.append(MemorySideCache(int(m.group(1)), r.read_int(f"{d}/size"), r.read_int(f"{d}/line_size"),
                                   r.read_int(f"{d}/indexing"), r.read_int(f"{d}/write_policy")))
    return tuple(out)


def _hugepages(r: _Root, node_dir: str) -> Dict[str, Dict[str, int]]:
    base = f"{node_dir}/hugepages"
    out = {}
    for name in sorted(r.listdir(base)):
        m = re.fullmatch(r"hugepages-(\d+kB)", name)
        if m:
            out[m.group(1)] = {"total": r.read_int(f"{base}/{name}/nr_hugepages") or 0,
                               "free": r.read_int(f"{base}/{name}/free_hugepages") or 0}
    return out


def _mounts(r: _Root) -> List[Tuple[str, str, str]]:
    out = []
    for line in (r.read("proc/mounts") or r.read("proc/self/mounts") or "").splitlines():
        parts = line.split()
        if len(parts) >= 4:
            out.append((parts[1], parts[2], parts[3]))
    return out


def _allowed(r: _Root, online_cpus: Sequence[int], online_nodes: Sequence[int]) -> Allowed:
    """Effective CPU and memory sets: the live process's, or the dump's cgroup."""
    if r.root == "/":
        cpus = format_cpulist(os.sched_getaffinity(0))
        status = r.read("proc/self/status") or ""
        m = re.search(r"^Mems_allowed_list:\s*(\S+)", status, re.M)
        mems = m.group(1) if m else format_cpulist(online_nodes)
        cg = r.read("proc/self/cgroup") or ""
        version = "v2" if re.search(r"^0::", cg, re.M) and len(cg.splitlines()) == 1 else ("v1" if cg else None)
        return Allowed(cpus, mems, "sched_getaffinity + /proc/self/status", version)

    status = r.read("proc/self/status")
    if status:
        mc = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M)
        mm = re.search(r"^Mems_allowed_list:\s*(\S+)", status, re.M)
        if mc and mm:
            return Allowed(mc.group(1), mm.group(1), "proc/self/status", None)

    # The cgroup of the dumped process: proc/self/cgroup (v2 "0::/path") or proc/self/cpuset.
    cg_path = None
    cg_text = r.read("proc/self/cgroup")
    if cg_text:
        for line in cg_text.splitlines():
            hier, _, rest = line.partition(":")
            ctrls, _, path = rest.partition(":")
            if hier == "0" or "cpuset" in ctrls.split(","):
                cg_path = path
    if cg_path is None:
        cg_path = r.read("proc/self/cpuset")
    if cg_path:
        for mountpoint, fstype, opts in _mounts(r):
            if fstype == "cgroup2":
                d = f"{mountpoint.lstrip('/')}/{cg_path.lstrip('/')}".rstrip("/")
                cpus, mems = r.read(f"{d}/cpuset.cpus.effective"), r.read(f"{d}/cpuset.mems.effective")
                if cpus is not None and mems is not None:
                    return Allowed(cpus, mems, f"cgroup v2 {cg_path}", "v2")
            elif fstype == "cgroup" and "cpuset" in opts.split(","):
                d = f"{mountpoint.lstrip('/')}/{cg_path.lstrip('/')}".rstrip("/")
                for prefix in ("cpuset.effective_", "cpuset.", ""):
                    cpus, mems = r.read(f"{d}/{prefix}cpus"), r.read(f"{d}/{prefix}mems")
                    if cpus is not None and mems is not None:
                        return Allowed(cpus, mems, f"cgroup v1 {cg_path}", "v1")
    return Allowed(format_cpulist(online_cpus), format_cpulist(online_nodes), "all online (no cgroup data)", None)


def read_topology(sysfs_root: str = "/") -> Topology:
    """Parse the NUMA topology under ``sysfs_root`` (a fake root with sys/ and proc/)."""
    root = os.path.abspath(sysfs_root)
    if not os.path.isdir(root):
        raise InputError(f"--sysfs-root {sysfs_root}: no such directory")
    if not os.path.isdir(os.path.join(root, SYS_CPU)):
        raise InputError(f"--sysfs-root {sysfs_root}: no {SYS_CPU} under it (expected a fake root with sys/ and proc/, "
                         "as hwloc-gather-topology makes)")
    r = _Root(root)
    cpu_ident = _cpuinfo(r)

    # CPUs: online ones, with their package/die from topology/ (offline CPUs have none).
    cpu_dirs = sorted(int(m.group(1)) for name in r.listdir(SYS_CPU)
                      if (m := re.fullmatch(r"cpu(\d+)", name)))
    online_text = r.read(f"{SYS_CPU}/online")
    online = set(parse_cpulist(online_text)) if online_text is not None else set(cpu_dirs)
    package_of: Dict[int, int] = {}
    die_of: Dict[int, int] = {}
    for c in sorted(online):
        pkg = r.read_int(f"{SYS_CPU}/cpu{c}/topology/physical_package_id")
        if pkg is not None:
            package_of[c] = pkg
            die = r.read_int(f"{SYS_CPU}/cpu{c}/topology/die_id")
            die_of[c] = die if die is not None else -1
    no_topology = sorted(online - set(package_of))
    if no_topology:
        r.quirks.append(f"online CPUs without a topology directory: {format_cpulist(no_topology)}")

    # Nodes: the online ones that have a directory.
    node_dirs = sorted(int(m.group(1)) for name in r.listdir(SYS_NODE)
                       if (m := re.fullmatch(r"node(\d+)", name)))
    online_nodes_text = r.read(f"{SYS_NODE}/online")
    online_nodes = [n for n in (parse_cpulist(online_nodes_text) if online_nodes_text is not None else node_dirs)
                    if n in node_dirs]
    possible_text = r.read(f"{SYS_NODE}/possible")
    possible = set(parse_cpulist(possible_text)) if possible_text else set(online_nodes)
    offline_nodes = tuple(sorted(possible - set(online_nodes)))
    if not online_nodes:
        # A kernel without NUMA support shows no node directory: one implicit node.
        r.quirks.append("no NUMA node directories: one implicit node 0")
    if online_nodes and online_nodes != list(range(len(online_nodes))):
        r.quirks.append(f"sparse node ids: {format_cpulist(online_nodes)}")
    if offline_nodes:
        r.quirks.append(f"offline node(s): {format_cpulist(offline_nodes)}")
    has_cpu_text = r.read(f"{SYS_NODE}/has_cpu")
    if has_cpu_text == "":
        r.quirks.append("node/has_cpu is empty (CPU-ness taken from each node's cpulist)")
    has_memory_text = r.read(f"{SYS_NODE}/has_memory")
    has_memory = set(parse_cpulist(has_memory_text)) if has_memory_text else None
    if has_memory_text is None:
        r.quirks.append("no node/has_memory file (memory taken from each node's meminfo)")

    nodes: List[NodeInfo] = []
    rows: List[Tuple[int, ...]] = []
    for n in online_nodes:
        d = f"{SYS_NODE}/node{n}"
        listed = set(parse_cpulist(r.read(f"{d}/cpulist") or ""))
        cpus = sorted(listed & online)
        offline_listed = sorted(listed - online)
        dist_text = r.read(f"{d}/distance") or ""
        row = tuple(int(x) for x in dist_text.split())
        rows.append(row)
        mem = _meminfo_total(r.read(f"{d}/meminfo"))
        nodes.append(NodeInfo(
            id=n, cpus=format_cpulist(cpus), cpu_count=len(cpus), has_cpu=bool(cpus),
            has_memory=(n in has_memory) if has_memory is not None else bool(mem),
            mem_total_bytes=mem,
            packages=tuple(sorted({package_of[c] for c in cpus if c in package_of})),
            distance=row, hugepages=_hugepages(r, d), hmat=_hmat(r, d),
            memory_side_caches=_side_caches(r, d),
            cpus_listed_offline=format_cpulist(offline_listed),
        ))
        if offline_listed:
            r.quirks.append(f"node {n} cpulist names offline CPUs {format_cpulist(offline_listed)}")
    if not online_nodes:
        mem = _meminfo_total(r.read("proc/meminfo"))
        cpus = sorted(online)
        nodes.append(NodeInfo(0, format_cpulist(cpus), len(cpus), bool(cpus), True, mem,
                              tuple(sorted(set(package_of.values()))), (10,), {},
                              {"read_latency_ns": None, "write_latency_ns": None,
                               "read_bandwidth_mbps": None, "write_bandwidth_mbps": None}, (), ""))
        rows = [(10,)]

    ids = tuple(n.id for n in nodes)
    possible_sorted = sorted(possible | set(ids))
    if (rows and len(possible_sorted) != len(ids)
            and all(len(row) == len(possible_sorted) for row in rows)):
        # Rows that also cover offline nodes: keep the online nodes' columns.
        keep = [possible_sorted.index(i) for i in ids]
        rows = [tuple(row[k] for k in keep) for row in rows]
        nodes = [dataclasses.replace(n, distance=row) for n, row in zip(nodes, rows)]
        r.quirks.append("distance rows include offline nodes")
    if rows and all(len(row) == len(ids) for row in rows):
        distance = Distance(ids, tuple(rows), "slit")
    elif all(len(row) == 0 for row in rows):
        distance = Distance(ids, tuple(tuple(10 if i == j else 20 for j in ids) for i in ids), "none")
    else:
        distance = Distance(ids, tuple(rows), "inconsistent")
        r.quirks.append("distance rows do not match the number of online nodes")

    # Packages and their L3 domains.
    by_pkg: Dict[int, List[int]] = {}
    for c, p in package_of.items():
        by_pkg.setdefault(p, []).append(c)
    packages = []
    for p in sorted(by_pkg):
        cpus = sorted(by_pkg[p])
        l3: Dict[Tuple[int, ...], Optional[int]] = {}
        for c in cpus:
            if any(c in dom for dom in l3):
                continue
            for idx in r.listdir(f"{SYS_CPU}/cpu{c}/cache"):
                base = f"{SYS_CPU}/cpu{c}/cache/{idx}"
                if idx.startswith("index") and r.read_int(f"{base}/level") == 3:
                    shared = r.read(f"{base}/shared_cpu_list")
                    if shared:
                        l3[parse_cpulist(shared)] = _cache_size(r.read(f"{base}/size"))
        packages.append(PackageInfo(
            id=p, cpus=format_cpulist(cpus), cpu_count=len(cpus),
            nodes=tuple(n.id for n in nodes if set(n.cpu_ids()) & set(cpus)),
            dies=tuple(sorted({die_of.get(c, -1) for c in cpus})), l3_domains=len(l3),
            l3_bytes=sum(v for v in l3.values() if v) or None))
    if any(p.id >= len(packages) for p in packages):
        r.quirks.append(f"package ids are not 0..n-1: {', '.join(str(p.id) for p in packages)}")

    memory_only = tuple(n.id for n in nodes if not n.cpu_count and (n.has_memory or n.mem_total_bytes))
    allowed = _allowed(r, sorted(online), list(ids))

    thp_text = r.read("sys/kernel/mm/transparent_hugepage/enabled")
    thp = None
    if thp_text:
        m = re.search(r"\[(\w+)\]", thp_text)
        thp = m.group(1) if m else thp_text
    hypervisor = r.read("sys/hypervisor/type") or None
    if hypervisor is None and cpu_ident.hypervisor_flag:
        if root == "/":
            try:   # CPUID names it on the live machine; the compiled module is optional here
                from mltools.numa import _numa
                hypervisor = _numa.hypervisor_vendor()
            except ImportError:
                pass
        hypervisor = hypervisor or r.read("sys/class/dmi/id/sys_vendor") or None
    return Topology(
        sysfs_root=sysfs_root, live=(root == "/"), cpu=cpu_ident,
        online_cpus=format_cpulist(online), packages=tuple(packages), nodes=tuple(nodes),
        memory_only_nodes=memory_only, offline_nodes=offline_nodes, distance=distance,
        allowed=allowed, thp=thp, numa_balancing=r.read_int("proc/sys/kernel/numa_balancing"),
        virtualized=cpu_ident.hypervisor_flag or bool(r.read("sys/hypervisor/type")),
        hypervisor=hypervisor, kernel=os.uname().release if root == "/" else None,
        quirks=tuple(r.quirks),
    )
