"""NUMA topology from sysfs and procfs under a replaceable root.

The root plays the part of hwloc's ``HWLOC_FSROOT``: ``/`` for the live
machine, or an unpacked ``hwloc-gather-topology`` dump. The parser reads what
the kernels of twenty years wrote, and agrees with ``lstopo`` on them (the tests
run it on every dump they have):

- node CPUs from ``nodeN/cpumap`` (a mask, what hwloc reads) or ``cpulist``;
- packages from the ``package_cpus``/``core_siblings`` masks, so package ids
  that repeat across boards (IA-64) or are -1 (POWER, s390) still give the
  right packages; the id is kept only as a label (``physical_id``);
- online CPUs from ``cpu/online`` and each ``cpuN/online``;
- no ``node/`` directory: one implicit node with the memory of ``/proc/meminfo``;
- the allowed CPUs and nodes of a cgroup v1 or v2 cpuset or the old
  ``/dev/cpuset`` mount, found the way hwloc finds them;
- memory-only nodes with what says what they are: DAX devices (NVDIMM, CXL,
  soft-reserved memory), HMAT bandwidth, GPU memory (``numa_status``).

Where the files contradict each other (a mask and its ``_list`` file, a CPU in
two nodes, packages whose masks overlap) the parser keeps going, says so in
``inconsistencies``, and names absent sources in ``missing``: the inference
then lowers its confidence instead of guessing.
"""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple

from mltools._sysfs import cpuinfo_fields, read_bytes
from mltools.errors import InputError
from mltools.numa.cpulist import format_cpulist, parse_cpulist, parse_cpumask
from mltools.numa.pci import IoTopology, read_io

__all__ = ["read_topology", "Topology", "NodeInfo", "PackageInfo", "CpuIdentity", "Distance", "Allowed",
           "Hmat", "DaxInfo", "MemorySideCache", "parse_cpulist", "format_cpulist", "parse_cpumask"]

SYS_NODE = "sys/devices/system/node"
SYS_CPU = "sys/devices/system/cpu"

# Absent sources the inference states in its own words
NO_CPUINFO = "no proc/cpuinfo: CPU vendor and model unknown"
NO_NODE_DIRECTORIES = "no sys/devices/system/node: one implicit node (a kernel without NUMA, or NUMA off)"


# ------------------------------------------------------------------ results

@dataclass(frozen=True)
class CpuIdentity:
    architecture: str           # "x86_64", "aarch64", "s390x", "ia64", ...
    architecture_source: str    # where it came from: uname, proc/hwloc-nofile-info, cpuinfo
    vendor: Optional[str]       # "GenuineIntel", "AuthenticAMD", "IBM/S390", "ARM implementer 0x48"
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
class Hmat:
    """One node's HMAT figures for its nearest initiators (ACPI HMAT via sysfs)."""
    access_class: int                   # 1: nearest CPU initiators; 0: nearest of any kind
    initiators: str                     # initiator node ids (cpulist format)
    read_latency_ns: Optional[int]
    write_latency_ns: Optional[int]
    read_bandwidth_mbps: Optional[int]
    write_bandwidth_mbps: Optional[int]


@dataclass(frozen=True)
class DaxInfo:
    """A DAX device whose memory the kernel onlined as this node (driver kmem)."""
    device: str                         # "dax1.0"
    kind: str                           # "nvm" (NVDIMM region), "cxl" (CXL region), "spm" (soft-reserved)
    parent: str                         # the device path it hangs off


@dataclass(frozen=True)
class NodeInfo:
    id: int
    cpus: str                                  # online CPUs (cpulist format)
    cpu_count: int
    has_cpu: bool
    has_memory: bool
    mem_total_bytes: Optional[int]             # nodeN/meminfo, never reconciled with /proc/meminfo
    packages: Tuple[int, ...]                  # packages (their `id`) of this node's CPUs
    distance: Tuple[int, ...]                  # SLIT row, in `Topology.distance.nodes` order
    hugepages: Dict[str, Dict[str, int]]       # "2048kB" -> {"total", "free"}
    hmat: Optional[Hmat]
    memory_side_caches: Tuple[MemorySideCache, ...]
    cpus_listed_offline: str                   # CPUs the node's cpumap/cpulist names that are not online
    cpus_source: str = "cpumap"                # cpumap, cpulist, implicit (no node/ directory), none
    dax: Optional[DaxInfo] = None
    gpu_busid: Optional[str] = None            # this node is that GPU's memory (numa_status)

    def cpu_ids(self) -> Tuple[int, ...]:
        return parse_cpulist(self.cpus)


@dataclass(frozen=True)
class PackageInfo:
    id: int                                    # logical index, 0..n-1 in CPU order (hwloc's L#)
    physical_id: Optional[int]                 # physical_package_id (hwloc's P#); None when -1 or mixed
    cpus: str
    cpu_count: int
    nodes: Tuple[int, ...]
    dies: Tuple[int, ...]
    l3_domains: int
    l3_bytes: Optional[int]                    # all L3 domains of the package together
    cores: int = 0

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
    cgroup: Optional[str]                      # "v1", "v2", "cpuset" (the old /dev/cpuset) or None


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
    package_source: str = "package_cpus masks"  # what the packages were built from
    packages_known: bool = True                 # False: package boundaries could not be told
    core_cpus: Tuple[str, ...] = ()             # the online CPUs of each core (SMT siblings)
    inconsistencies: Tuple[str, ...] = ()       # files that contradict each other
    missing: Tuple[str, ...] = ()               # sources that were absent
    io: Optional[IoTopology] = None             # GPUs, NICs, NVMe and their locality

    def node(self, node_id: int) -> NodeInfo:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def package(self, package_id: int) -> PackageInfo:
        return self.packages[package_id]

    @property
    def cpu_nodes(self) -> Tuple[int, ...]:
        return tuple(n.id for n in self.nodes if n.cpu_count)

    @property
    def cpus_in_several_nodes(self) -> Tuple[int, ...]:
        """The online CPUs that more than one node lists (broken firmware NUMA tables)."""
        return tuple(sorted(_shared_cpus(self.nodes)))


def _shared_cpus(nodes: Sequence[NodeInfo]) -> Dict[int, List[int]]:
    """cpu -> the nodes that list it, for each CPU that more than one node lists."""
    listed: Dict[int, List[int]] = {}
    for n in nodes:
        for c in n.cpu_ids():
            listed.setdefault(c, []).append(n.id)
    return {c: ids for c, ids in listed.items() if len(ids) > 1}


# ------------------------------------------------------------------ reading

class _Root:
    """Reads files under the root; notes NUL-terminated files as a quirk."""

    def __init__(self, root: str):
        self.root = root
        self.quirks: List[str] = []
        self.inconsistent: List[str] = []
        self.missing: List[str] = []

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

    def read_set(self, rel: str, mask: bool) -> Optional[Tuple[int, ...]]:
        """A mask or list file as ids; None when absent or unreadable."""
        text = self.read(rel)
        if text is None:
            return None
        try:
            return parse_cpumask(text) if mask else parse_cpulist(text)
        except ValueError:
            self.inconsistent.append(f"{rel} is not a valid {'mask' if mask else 'list'}: {text[:40]!r}")
            return None

    def listdir(self, rel: str) -> List[str]:
        try:
            return os.listdir(self.path(rel))
        except OSError:
            return []


def _nofile_info(r: _Root) -> Dict[str, str]:
    """proc/hwloc-nofile-info: what hwloc-gather-topology saved of uname (Architecture, OSRelease)."""
    out = {}
    for line in (r.read("proc/hwloc-nofile-info") or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _cpuinfo(r: _Root) -> CpuIdentity:
    text = r.read("proc/cpuinfo")
    if text is None:
        r.missing.append(NO_CPUINFO)
    fields = cpuinfo_fields(text or "", all_blocks=True)
    flags = set(fields.get("flags", "").split()) | set(fields.get("Features", "").split())

    def as_int(key):
        try:
            return int(fields[key], 0)
        except (KeyError, ValueError):
            return None

    vendor = fields.get("vendor_id") or fields.get("vendor")
    family, model = as_int("cpu family"), as_int("model")
    arch, source = None, "cpuinfo"
    if vendor == "IBM/S390":
        arch = "s390x"
        m = re.search(r"machine\s*=\s*(\w+)", text or "")
        model_name = f"IBM machine type {m.group(1)}" if m else None
        model = int(m.group(1), 16) if m and re.fullmatch(r"[0-9a-fA-F]+", m.group(1)) else None
        return _identity(r, CpuIdentity(arch, source, vendor, None, model, model_name, False))
    if fields.get("arch") == "IA-64":
        arch, family = "ia64", as_int("family")
    elif vendor:
        arch = "x86_64" if "lm" in flags else "x86"
    elif fields.get("cpu", "").startswith("POWER"):
        vendor, arch = "IBM POWER", "ppc64"
        return _identity(r, CpuIdentity(arch, source, vendor, None, None, fields["cpu"], False))
    elif "CPU implementer" in fields:
        vendor = f"ARM implementer {fields['CPU implementer']}"
        arch = "aarch64" if (as_int("CPU architecture") or 0) >= 8 else "arm"
        family, model = as_int("CPU architecture"), as_int("CPU part")
    return _identity(r, CpuIdentity(arch or "unknown", source, vendor, family, model, fields.get("model name"),
                                    "hypervisor" in flags))


def _identity(r: _Root, ident: CpuIdentity) -> CpuIdentity:
    """The kernel's own word for the architecture wins over a guess from cpuinfo."""
    if r.root == "/":
        return dataclasses.replace(ident, architecture=os.uname().machine, architecture_source="uname")
    arch = _nofile_info(r).get("Architecture")
    if arch:
        return dataclasses.replace(ident, architecture=arch, architecture_source="proc/hwloc-nofile-info")
    return ident


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


def _hmat(r: _Root, node_dir: str) -> Optional[Hmat]:
    """access1 (nearest CPU initiators) when present, else access0, as hwloc reads them."""
    for access in (1, 0):
        base = f"{node_dir}/access{access}/initiators"
        names = r.listdir(base)
        if not names:
            continue
        initiators = sorted(int(m.group(1)) for n in names if (m := re.fullmatch(r"node(\d+)", n)))
        return Hmat(access, format_cpulist(initiators), r.read_int(f"{base}/read_latency"),
                    r.read_int(f"{base}/write_latency"), r.read_int(f"{base}/read_bandwidth"),
                    r.read_int(f"{base}/write_bandwidth"))
    return None


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


def _dax_nodes(r: _Root) -> Dict[int, DaxInfo]:
    """target node -> the kmem DAX device that brought its memory online.

    As hwloc (annotate_dax_nodes): a device bound to the kmem driver, its
    target_node, and what its sysfs path hangs off: an NVDIMM bus (``ndbus``)
    is persistent memory; a CXL region (ACPI0017 root, decoders) is CXL, which
    hwloc 2.9 calls SPM too; anything else (``hmem.N``) is soft-reserved
    "specific-purpose" memory, usually HBM or CXL."""
    out: Dict[int, DaxInfo] = {}
    base = "sys/bus/dax/devices"
    for name in sorted(r.listdir(base)):
        if not os.path.lexists(r.path(f"sys/bus/dax/drivers/kmem/{name}")):
            continue
        node = r.read_int(f"{base}/{name}/target_node")
        if node is None or node < 0:
            continue
        try:
            target = os.readlink(r.path(f"{base}/{name}"))
        except OSError:
            continue
        parent = re.sub(r"^(\.\./)+", "", target)
        parent = re.sub(r"^devices/(platform/)?", "", parent)
        parent = parent.split(f"/{name}")[0] if f"/{name}" in parent else parent
        if "ndbus" in parent:
            kind = "nvm"
        elif "ACPI0017" in parent or re.search(r"(^|/)(cxl|decoder\d)", parent):
            kind = "cxl"
        else:
            kind = "spm"
        out.setdefault(node, DaxInfo(name, kind, parent))
    return out


def _nvidia_gpus(r: _Root) -> Dict[str, Optional[int]]:
    """GPU PCI bus id -> the node its memory is, or None, for every GPU the NVIDIA driver
    lists (numa_status: Grace Hopper and POWER9 expose GPU memory as a NUMA node)."""
    out: Dict[str, Optional[int]] = {}
    base = "proc/driver/nvidia/gpus"
    for busid in sorted(r.listdir(base)):
        m = re.search(r"^Node:\s*(-?\d+)", r.read(f"{base}/{busid}/numa_status") or "", re.M)
        out[busid.lower()] = int(m.group(1)) if m and int(m.group(1)) >= 0 else None
    return out


# ------------------------------------------------------------------ allowed sets

def _mounts(r: _Root) -> List[Tuple[str, str, str]]:
    out = []
    for line in (r.read("proc/mounts") or r.read("proc/self/mounts") or "").splitlines():
        parts = line.split()
        if len(parts) >= 4:
            out.append((parts[1], parts[2], parts[3]))
    return out


def _cpuset_mount(r: _Root) -> Optional[Tuple[str, str]]:
    """(mount point, flavour) of the first mount that carries cpusets, in
    /proc/mounts order, as hwloc searches: cgroup2 whose cgroup.controllers lists
    cpuset ("v2"), the cpuset filesystem or cgroup v1 with noprefix ("cpuset":
    files cpus/mems), cgroup v1 with the cpuset controller ("v1")."""
    for mountpoint, fstype, opts in _mounts(r):
        options = opts.split(",")
        if fstype == "cgroup2":
            controllers = (r.read(f"{mountpoint.lstrip('/')}/cgroup.controllers") or "").split()
            if "cpuset" in controllers:
                return mountpoint, "v2"
        elif fstype == "cpuset":
            return mountpoint, "cpuset"
        elif fstype == "cgroup" and "cpuset" in options:
            return mountpoint, ("cpuset" if "noprefix" in options else "v1")
    return None


def _cpuset_name(r: _Root) -> Optional[str]:
    """The dumped process's cpuset: proc/self/cpuset, else its line of proc/self/cgroup."""
    name = r.read("proc/self/cpuset")
    if name:
        return name.splitlines()[0].strip()
    for line in (r.read("proc/self/cgroup") or "").splitlines():
        hier, _, rest = line.partition(":")
        ctrls, _, path = rest.partition(":")
        if "cpuset" in ctrls.split(",") or (hier == "0" and ctrls == ""):
            return path.strip()
    return None


def _allowed(r: _Root, online_cpus: Sequence[int], online_nodes: Sequence[int]) -> Allowed:
    """Effective CPU and memory sets: the live process's, or the dump's cpuset."""
    online_c, online_n = set(online_cpus), set(online_nodes)
    if r.root == "/":
        cpus = format_cpulist(os.sched_getaffinity(0))
        status = r.read("proc/self/status") or ""
        m = re.search(r"^Mems_allowed_list:\s*(\S+)", status, re.M)
        mems = m.group(1) if m else format_cpulist(online_nodes)
        cg = r.read("proc/self/cgroup") or ""
        version = "v2" if re.search(r"^0::", cg, re.M) and len(cg.splitlines()) == 1 else ("v1" if cg else None)
        return Allowed(cpus, mems, "sched_getaffinity + /proc/self/status", version)

    mount, name = _cpuset_mount(r), _cpuset_name(r)
    if mount and name is not None:
        mountpoint, flavour = mount
        d = f"{mountpoint.strip('/')}/{name.strip('/')}".strip("/")
        files = {"v2": ("cpuset.cpus.effective", "cpuset.mems.effective"), "v1": ("cpuset.cpus", "cpuset.mems"),
                 "cpuset": ("cpus", "mems")}[flavour]
        cpus_text, mems_text = (r.read(f"{d}/{f}") for f in files)
        if cpus_text is not None or mems_text is not None:
            # a file that is missing means "everything", as in hwloc; both are cut to what is online
            cpus = set(parse_cpulist(cpus_text)) & online_c if cpus_text is not None else online_c
            mems = set(parse_cpulist(mems_text)) & online_n if mems_text is not None else online_n
            label = {"v2": "cgroup v2", "v1": "cgroup v1", "cpuset": "cpuset filesystem"}[flavour]
            return Allowed(format_cpulist(cpus), format_cpulist(mems), f"{label} cpuset {name}, mounted at {mountpoint}",
                           flavour)

    status = r.read("proc/self/status")
    if status:
        mc = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M)
        mm = re.search(r"^Mems_allowed_list:\s*(\S+)", status, re.M)
        if mc and mm:
            return Allowed(format_cpulist(set(parse_cpulist(mc.group(1))) & online_c),
                           format_cpulist(set(parse_cpulist(mm.group(1))) & online_n), "proc/self/status", None)
    return Allowed(format_cpulist(online_cpus), format_cpulist(online_nodes), "all online (no cpuset data)", None)


# ------------------------------------------------------------------ CPUs and packages

def _sibling_sets(r: _Root, cpus: Sequence[int], names: Sequence[str]):
    """Per CPU, (ids from the mask file, ids from the _list file, which name) for the first
    of ``names`` that exists (package_cpus before core_siblings, as hwloc)."""
    out = {}
    for c in cpus:
        t = f"{SYS_CPU}/cpu{c}/topology"
        for name in names:
            mask = r.read_set(f"{t}/{name}", mask=True)
            listed = r.read_set(f"{t}/{name}_list", mask=False)
            if mask is not None or listed is not None:
                out[c] = (mask, listed, name)
                break
    return out


def _partition(sets: Dict[int, FrozenSet[int]]) -> Tuple[Optional[List[FrozenSet[int]]], List[str]]:
    """Group CPUs by their sibling sets; (None, problems) when the sets do not partition them."""
    problems = []
    distinct = {s for s in sets.values()}
    for c, s in sets.items():
        if c not in s:
            problems.append(f"cpu{c} is not in its own sibling set {format_cpulist(s)}")
    ordered = sorted(distinct, key=min)
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if a & b:
                problems.append(f"sibling sets {format_cpulist(a)} and {format_cpulist(b)} overlap")
    if problems:
        return None, problems
    return ordered, []


def _packages(r: _Root, cpus: Sequence[int], phys: Dict[int, Optional[int]]):
    """(package cpu sets, source, known) from the masks, else the lists, else the ids."""
    have = set(cpus)
    sib = _sibling_sets(r, cpus, ("package_cpus", "core_siblings"))
    name = next((v[2] for v in sib.values()), None)
    if sib and len(sib) == len(cpus):
        masks = {c: frozenset(set(v[0]) & have) for c, v in sib.items() if v[0] is not None}
        lists = {c: frozenset(set(v[1]) & have) for c, v in sib.items() if v[1] is not None}
        for c in sorted(set(masks) & set(lists)):
            if masks[c] != lists[c]:
                r.inconsistent.append(f"cpu{c} {name} mask ({format_cpulist(masks[c])}) and {name}_list "
                                      f"({format_cpulist(lists[c])}) disagree")
                break
        if len(masks) == len(cpus):
            groups, problems = _partition(masks)
            if groups is not None:
                return groups, f"{name} masks", True
            r.inconsistent.append(f"package masks conflict: {problems[0]}")
            if len(lists) == len(cpus):
                groups, _ = _partition(lists)
                if groups is not None:
                    r.quirks.append(f"package masks conflict; the {name}_list files agree with each other and are "
                                    "used (hwloc keeps the first package of a conflict and drops the other)")
                    return groups, f"{name}_list files", True
        elif len(lists) == len(cpus):
            groups, problems = _partition(lists)
            if groups is not None:
                return groups, f"{name}_list files", True
            r.inconsistent.append(f"package lists conflict: {problems[0]}")
    elif not sib:
        r.missing.append("no package_cpus or core_siblings files")
    by_id: Dict[int, set] = {}
    for c in cpus:
        if phys.get(c) is not None:
            by_id.setdefault(phys[c], set()).add(c)
    if by_id and sum(len(v) for v in by_id.values()) == len(cpus):
        return sorted((frozenset(v) for v in by_id.values()), key=min), "physical_package_id", True
    r.missing.append("package boundaries unknown (no usable sibling masks or package ids)")
    return [], "unknown (no sibling masks or package ids)", False


def _cores(r: _Root, cpus: Sequence[int]) -> List[FrozenSet[int]]:
    have = set(cpus)
    sib = _sibling_sets(r, cpus, ("core_cpus", "thread_siblings"))
    sets = {}
    for c in cpus:
        v = sib.get(c)
        ids = (v[0] if v[0] is not None else v[1]) if v else None
        sets[c] = frozenset(set(ids) & have) if ids else frozenset((c,))
    groups, problems = _partition(sets)
    if groups is None:
        r.inconsistent.append(f"core sibling sets conflict: {problems[0]}")
        return [frozenset((c,)) for c in cpus]
    return groups


# ------------------------------------------------------------------ the parser

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

    # Online CPUs: cpu/online, less any whose own cpuN/online says 0 (no file: online).
    cpu_dirs = sorted(int(m.group(1)) for name in r.listdir(SYS_CPU) if (m := re.fullmatch(r"cpu(\d+)", name)))
    online_text = r.read(f"{SYS_CPU}/online")
    online = set(parse_cpulist(online_text)) if online_text is not None else set(cpu_dirs)
    switched_off = sorted(c for c in online if r.read(f"{SYS_CPU}/cpu{c}/online") == "0")
    if switched_off:
        online -= set(switched_off)
        r.quirks.append(f"CPU(s) {format_cpulist(switched_off)} offline in cpuN/online"
                        + (" although cpu/online lists them" if online_text is not None else ""))
    with_topology = sorted(c for c in online if r.exists(f"{SYS_CPU}/cpu{c}/topology"))
    no_topology = sorted(online - set(with_topology))
    if no_topology:
        r.quirks.append(f"online CPUs without a topology directory: {format_cpulist(no_topology)}")
        r.missing.append(f"CPU(s) {format_cpulist(no_topology)} have no topology directory")

    phys: Dict[int, Optional[int]] = {}
    die_of: Dict[int, int] = {}
    for c in with_topology:
        p = r.read_int(f"{SYS_CPU}/cpu{c}/topology/physical_package_id")
        phys[c] = p if p is not None and p >= 0 else None
        die = r.read_int(f"{SYS_CPU}/cpu{c}/topology/die_id")
        die_of[c] = die if die is not None else -1
    pkg_sets, package_source, packages_known = _packages(r, with_topology, phys)
    core_sets = _cores(r, with_topology)
    if packages_known and pkg_sets and all(v is None for v in phys.values()) \
            and all(s in set(core_sets) for s in pkg_sets) and len(pkg_sets) > 1:
        # POWER: physical_package_id -1 and every "package" mask is one SMT core
        packages_known = False
        r.missing.append("package boundaries unknown: physical_package_id is -1 and every package mask holds "
                         "a single core")
    labels = [{phys.get(c) for c in s} for s in pkg_sets]
    ids_seen = [next(iter(l)) for l in labels if len(l) == 1 and None not in l]
    if len(ids_seen) != len(set(ids_seen)):
        r.quirks.append("physical_package_id repeats across packages (told apart by their sibling masks)")
    package_index = {c: i for i, s in enumerate(pkg_sets) for c in s}

    # Nodes: the online ones that have a directory.
    node_dirs = sorted(int(m.group(1)) for name in r.listdir(SYS_NODE) if (m := re.fullmatch(r"node(\d+)", name)))
    online_nodes_text = r.read(f"{SYS_NODE}/online")
    online_nodes = [n for n in (parse_cpulist(online_nodes_text) if online_nodes_text is not None else node_dirs)
                    if n in node_dirs]
    possible_text = r.read(f"{SYS_NODE}/possible")
    possible = set(parse_cpulist(possible_text)) if possible_text else set(online_nodes)
    offline_nodes = tuple(sorted(possible - set(online_nodes)))
    if not online_nodes:
        # A kernel without NUMA support shows no node directory: one implicit node.
        r.quirks.append("no NUMA node directories: one implicit node 0")
        r.missing.append(NO_NODE_DIRECTORIES)
    if online_nodes and online_nodes != list(range(len(online_nodes))):
        r.quirks.append(f"sparse node ids: {format_cpulist(online_nodes)}")
    if offline_nodes:
        r.quirks.append(f"offline node(s): {format_cpulist(offline_nodes)}")
        r.missing.append(f"node(s) {format_cpulist(offline_nodes)} offline")
    has_cpu_text = r.read(f"{SYS_NODE}/has_cpu")
    if has_cpu_text == "":
        r.quirks.append("node/has_cpu is empty (CPU-ness taken from each node's CPU mask)")
    has_memory_text = r.read(f"{SYS_NODE}/has_memory")
    has_memory = set(parse_cpulist(has_memory_text)) if has_memory_text else None
    if has_memory_text is None and online_nodes:
        r.quirks.append("no node/has_memory file (memory taken from each node's meminfo)")
    dax = _dax_nodes(r)
    nvidia_gpus = _nvidia_gpus(r)
    gpu_of_node = {n: busid for busid, n in nvidia_gpus.items() if n is not None}

    nodes: List[NodeInfo] = []
    rows: List[Tuple[int, ...]] = []
    for n in online_nodes:
        d = f"{SYS_NODE}/node{n}"
        mask = r.read_set(f"{d}/cpumap", mask=True)
        listed = r.read_set(f"{d}/cpulist", mask=False)
        if mask is not None and listed is not None and set(mask) & online != set(listed) & online:
            # (offline CPUs may linger in one of them: the kernel drops them at different times)
            r.inconsistent.append(f"node {n} cpumap ({format_cpulist(mask)}) and cpulist ({format_cpulist(listed)}) "
                                  "disagree (the mask is used, as hwloc does)")
        ids = mask if mask is not None else (listed or ())
        source = "cpumap" if mask is not None else ("cpulist" if listed is not None else "none")
        cpus = sorted(set(ids) & online)
        offline_listed = sorted((set(mask or ()) | set(listed or ())) - online)
        dist_text = r.read(f"{d}/distance") or ""
        row = tuple(int(x) for x in dist_text.split() if x.lstrip("-").isdigit())
        rows.append(row)
        mem = _meminfo_total(r.read(f"{d}/meminfo"))
        nodes.append(NodeInfo(
            id=n, cpus=format_cpulist(cpus), cpu_count=len(cpus), has_cpu=bool(cpus),
            has_memory=(n in has_memory) if has_memory is not None else bool(mem),
            mem_total_bytes=mem,
            packages=tuple(sorted({package_index[c] for c in cpus if c in package_index})),
            distance=row, hugepages=_hugepages(r, d), hmat=_hmat(r, d),
            memory_side_caches=_side_caches(r, d),
            cpus_listed_offline=format_cpulist(offline_listed), cpus_source=source,
            dax=dax.get(n), gpu_busid=gpu_of_node.get(n),
        ))
        if offline_listed:
            r.quirks.append(f"node {n} names offline CPUs {format_cpulist(offline_listed)}")
    overlapping = _shared_cpus(nodes)
    if overlapping:
        cpus = sorted(overlapping)
        nodes_involved = sorted({n for v in overlapping.values() for n in v})
        r.inconsistent.append(f"CPU(s) {format_cpulist(cpus)} are listed in several nodes "
                              f"({format_cpulist(nodes_involved)}): the firmware's NUMA tables are broken "
                              "(hwloc keeps the first node and ignores the others)")
    if not online_nodes:
        mem = _meminfo_total(r.read("proc/meminfo"))
        cpus = sorted(online)
        nodes.append(NodeInfo(0, format_cpulist(cpus), len(cpus), bool(cpus), True, mem,
                              tuple(range(len(pkg_sets))), (10,), {}, None, (), "", "implicit"))
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
        if len(ids) > 1:
            r.missing.append("no node distance rows (SLIT)")
    else:
        distance = Distance(ids, tuple(rows), "inconsistent")
        r.quirks.append("distance rows do not match the number of online nodes")
        r.inconsistent.append("distance rows do not match the number of online nodes: no usable SLIT")

    # Packages and their L3 domains.
    packages = []
    for i, s in enumerate(pkg_sets):
        cpus = sorted(s)
        l3: Dict[Tuple[int, ...], Optional[int]] = {}
        for c in cpus:
            if any(c in dom for dom in l3):
                continue
            for idx in r.listdir(f"{SYS_CPU}/cpu{c}/cache"):
                base = f"{SYS_CPU}/cpu{c}/cache/{idx}"
                if idx.startswith("index") and r.read_int(f"{base}/level") == 3:
                    shared = r.read_set(f"{base}/shared_cpu_map", mask=True) \
                        or r.read_set(f"{base}/shared_cpu_list", mask=False)
                    if shared:
                        l3[tuple(shared)] = _cache_size(r.read(f"{base}/size"))
        label = labels[i]
        packages.append(PackageInfo(
            id=i, physical_id=next(iter(label)) if len(label) == 1 else None,
            cpus=format_cpulist(cpus), cpu_count=len(cpus),
            nodes=tuple(n.id for n in nodes if set(n.cpu_ids()) & s),
            dies=tuple(sorted({die_of.get(c, -1) for c in cpus})), l3_domains=len(l3),
            l3_bytes=sum(v for v in l3.values() if v) or None,
            cores=sum(1 for core in core_sets if core <= s)))

    memory_only = tuple(n.id for n in nodes if not n.cpu_count and (n.has_memory or n.mem_total_bytes))
    allowed = _allowed(r, sorted(online), list(ids))
    io = read_io(root, {n.id: n.cpu_ids() for n in nodes}, sorted(online), nvidia_gpus)

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
        quirks=tuple(dict.fromkeys(r.quirks)), package_source=package_source, packages_known=packages_known,
        core_cpus=tuple(format_cpulist(c) for c in core_sets),
        inconsistencies=tuple(dict.fromkeys(r.inconsistent)), missing=tuple(dict.fromkeys(r.missing)), io=io,
    )
