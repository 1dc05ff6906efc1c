"""Synthetic sysfs/procfs roots of multi-GPU servers, complete enough for Debian's lstopo.

Each machine is "like" a real one (bus numbers and GPU -> node layout as the
vendors' topology tables show them), not a byte copy. What hwloc 2.9
(HWLOC_COMPONENTS=linux,stop) needs, and what is written here:

- CPUs: ``cpu/{online,possible,present}``; per CPU ``topology/`` with the masks
  *and* the ``_list`` files (hwloc reads masks, the kernel writes both),
  ``physical_package_id``, ``core_id``, caches under ``cache/indexK``.
- NUMA: ``node/{online,possible,has_cpu,has_memory}``; per node ``cpumap`` and
  ``cpulist``, ``distance``, ``meminfo``.
- PCI: ``sys/bus/pci/devices/<busid>`` as relative links into
  ``sys/devices/pci<dom>:<bus>/...``; each function with ``class``, ``vendor``,
  ``device``, ``numa_node``, ``local_cpus``/``local_cpulist`` and a 256-byte
  ``config``. A bridge's ``config`` must hold header type 1 (0x0e) and valid
  primary/secondary/subordinate bus numbers (0x18-0x1a), or hwloc treats it as a
  plain device and stops nesting what is below it.
- OS devices under each function: ``net/<if>``, ``infiniband/<hca>/ports/1/link_layer``,
  ``nvme/<ctrl>/<ns>``, ``drm/cardN``, with links from ``sys/class/*``.
- ``proc/{cpuinfo,meminfo,mounts,hwloc-nofile-info}``, a cgroup v2 cpuset,
  ``proc/driver/nvidia/gpus/<busid>/{information,numa_status}``, DMI names.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mltools.numa.cpulist import format_cpulist, format_cpumask


def _mask(ids, nbits: int) -> str:
    """A mask with as many 32-bit words as nr_cpu_ids needs (the kernel keeps leading zero words)."""
    text = format_cpumask(ids)
    words = text.split(",")
    need = max(1, (nbits + 31) // 32)
    return ",".join(["00000000"] * (need - len(words)) + words)


@dataclass
class Function:
    role: str                          # gpu0, ib0, eth0, nvme0, ...
    bus: int
    vendor: int
    device: int
    cls: int                           # 24-bit class code
    funcs: Tuple[int, ...] = (0,)
    link: Tuple[str, int] = ("32.0 GT/s PCIe", 16)
    netdevs: Tuple[str, ...] = ()      # one per function
    ibdevs: Tuple[str, ...] = ()       # one per function
    link_layer: str = "InfiniBand"
    nvme: Optional[str] = None         # controller name; its namespace is <name>n1
    drm: Optional[str] = None
    gpu_model: Optional[str] = None
    memory_node: Optional[int] = None  # numa_status "Node: N"


@dataclass
class Stack:
    """One root bus (host bridge) with functions behind root ports, or behind one PCIe switch."""
    domain: int
    root_bus: int
    node: int
    functions: List[Function]
    switch: bool = False


@dataclass
class Server:
    name: str
    arch: str
    vendor: str
    family: int
    model: int
    model_name: str
    packages: int
    cores: int                         # per package
    threads: int                       # per core
    nodes_per_package: int
    node_mem_kb: Sequence[int]
    distances: Sequence[Sequence[int]]
    l3_cores: int                      # cores per L3 domain
    stacks: List[Stack]
    dmi: Dict[str, str]
    extra_nodes: Sequence[Tuple[int, int]] = ()   # CPU-less nodes: (id, kB)
    nr_cpu_ids: Optional[int] = None
    flags: str = "fpu sse sse2 ht lm avx avx2 avx512f"

    def cpus(self):
        """Linux x86 numbering: the first thread of every core of every package, then the second threads."""
        out = []
        per_node = self.cores // self.nodes_per_package
        for t in range(self.threads):
            for p in range(self.packages):
                for c in range(self.cores):
                    out.append((len(out), p, c, p * self.nodes_per_package + c // per_node))
        return out


# ------------------------------------------------------------------ machines

def _gpu(i, bus, model="NVIDIA H100 80GB HBM3", device=0x2330):
    return Function(f"gpu{i}", bus, 0x10de, device, 0x030200, drm=f"card{i + 1}", gpu_model=model)


def _hca(i, bus, device=0x1021):
    return Function(f"ib{i}", bus, 0x15b3, device, 0x020700, netdevs=(f"ibp{bus}s0",), ibdevs=(f"mlx5_{i}",))


def _eth2(i, bus, first_ib, device=0x1021):
    return Function(f"eth{i}", bus, 0x15b3, device, 0x020000, funcs=(0, 1),
                    netdevs=(f"enp{bus}s0f0np0", f"enp{bus}s0f1np1"),
                    ibdevs=(f"mlx5_{first_ib}", f"mlx5_{first_ib + 1}"), link_layer="Ethernet")


def _nvme(i, bus):
    return Function(f"nvme{i}", bus, 0x144d, 0xa80a, 0x010802, link=("16.0 GT/s PCIe", 4), nvme=f"nvme{i}")


def _bmc(bus):
    return Function("bmc_vga", bus, 0x1a03, 0x2000, 0x030000, link=("5.0 GT/s PCIe", 1), drm="card0")


def dgx_h100_like(nics_on_one_socket: bool = False) -> Server:
    """2x Xeon Platinum 8480C (56 cores, SMT, SNC off), 8 H100 each behind a PCIe switch
    shared with one ConnectX-7 HCA (the DGX H100 bus numbers), 2 dual-port storage
    NICs, 10 NVMe, 4 NVSwitches (NVIDIA, but class 0x0680: not GPUs), an ASPEED BMC VGA.
    ``nics_on_one_socket`` moves all 8 HCAs and both storage NICs to socket 0: GPUs 4-7
    then have no local NIC."""
    pairs = [(0x15, 0x18, 0x1b, 0), (0x3d, 0x40, 0x43, 0), (0x4c, 0x4f, 0x52, 0), (0x5b, 0x5e, 0x61, 0),
             (0x97, 0x9a, 0x9d, 1), (0xbd, 0xc0, 0xc3, 1), (0xcb, 0xce, 0xd1, 1), (0xd9, 0xdc, 0xdf, 1)]
    stacks = []
    for i, (root, nic, gpu, node) in enumerate(pairs):
        fns = [_gpu(i, gpu)] if nics_on_one_socket else [_hca(i, nic), _gpu(i, gpu)]
        stacks.append(Stack(0, root, node, fns, switch=True))
    if nics_on_one_socket:
        for k, root in enumerate((0x20, 0x30, 0x68, 0x78)):
            stacks.append(Stack(0, root, 0, [_hca(2 * k, root + 3), _hca(2 * k + 1, root + 4)], switch=True))
    nvswitch = [Function(f"nvswitch{i}", 0x05 + i, 0x10de, 0x22a3, 0x068000, link=("16.0 GT/s PCIe", 2))
                for i in range(4)]
    stacks.append(Stack(0, 0x00, 0, [_nvme(0, 0x01), _nvme(1, 0x02), _bmc(0x04)] + nvswitch))
    stacks.append(Stack(0, 0x25, 0, [_eth2(0, 0x29, 8)] + [_nvme(2 + k, 0x2a + k) for k in range(4)]))
    # the second storage NIC sits on socket 0 too when the HCAs do: then nothing RDMA-capable is on socket 1
    stacks.append(Stack(0, 0xa5, 0 if nics_on_one_socket else 1,
                        [_eth2(1, 0xaa, 10)] + [_nvme(6 + k, 0xab + k) for k in range(4)]))
    stacks.sort(key=lambda s: (s.domain, s.root_bus))
    return Server("nics_one_socket" if nics_on_one_socket else "dgx_h100_like", "x86_64", "GenuineIntel", 6, 143,
                  "Intel(R) Xeon(R) Platinum 8480C", 2, 56, 2, 1, [1021 << 20, 1023 << 20],
                  [[10, 21], [21, 10]], 56, stacks,
                  {"sys_vendor": "NVIDIA", "product_name": "DGXH100"}, nr_cpu_ids=224)


def dgx_a100_like() -> Server:
    """2x EPYC 7742 in NPS4 (8 nodes, SLIT 10/12/32), GPU pairs with 2 HCAs behind one
    switch on nodes 3, 1, 7, 5 (as on a DGX A100), storage NICs and NVMe on nodes 2 and 6."""
    stacks = []
    gi = ni = 0
    for root, node in ((0x0c, 3), (0x44, 1), (0x84, 7), (0xc0, 5)):
        fns = []
        bus = root + 3
        for _ in range(2):
            fns.append(_hca(ni, bus, device=0x101b)); ni += 1; bus += 1
            fns.append(_gpu(gi, bus, "NVIDIA A100-SXM4-40GB", 0x20b0)); gi += 1; bus += 1
        stacks.append(Stack(0, root, node, fns, switch=True))
    stacks.append(Stack(0, 0x00, 0, [_nvme(0, 0x01), _nvme(1, 0x02), _bmc(0x03)]))
    stacks.append(Stack(0, 0x20, 2, [_eth2(0, 0x22, 8, 0x101b), _nvme(2, 0x23), _nvme(3, 0x24)]))
    stacks.append(Stack(0, 0xa0, 6, [_eth2(1, 0xa2, 10, 0x101b), _nvme(4, 0xa3), _nvme(5, 0xa4)]))
    stacks.sort(key=lambda s: (s.domain, s.root_bus))
    dist = [[10 if i == j else (12 if i // 4 == j // 4 else 32) for j in range(8)] for i in range(8)]
    return Server("dgx_a100_like", "x86_64", "AuthenticAMD", 0x17, 0x31, "AMD EPYC 7742 64-Core Processor",
                  2, 64, 2, 4, [128 << 20] * 8, dist, 4, stacks,
                  {"sys_vendor": "NVIDIA", "product_name": "DGXA100"}, nr_cpu_ids=256)


def gh200_like() -> Server:
    """Grace Hopper: 72 Neoverse-V2 cores and LPDDR5X in node 0; the H100's HBM is the
    CPU-less node 1 (numa_status "Node: 1"); nodes 2-8 are empty placeholders (MIG)."""
    gpu = Function("gpu0", 0x01, 0x10de, 0x2342, 0x030200, gpu_model="NVIDIA GH200 480GB", memory_node=1)
    stacks = [Stack(0x0009, 0x00, 0, [gpu]), Stack(0x0000, 0x00, 0, [_hca(0, 0x01)])]
    dist = [[10 if i == j else (80 if 0 in (i, j) else 120) for j in range(9)] for i in range(9)]
    return Server("gh200_like", "aarch64", "ARM", 8, 0xd4f, "Neoverse-V2", 1, 72, 1, 1, [470 << 20], dist, 72,
                  stacks, {"sys_vendor": "NVIDIA", "product_name": "P3880"},
                  extra_nodes=[(1, 96 << 20)] + [(n, 0) for n in range(2, 9)], nr_cpu_ids=72,
                  flags="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics cpuid sve sve2")


SERVERS = {"dgx_h100_like": dgx_h100_like, "nics_one_socket": lambda: dgx_h100_like(True),
           "dgx_a100_like": dgx_a100_like, "gh200_like": gh200_like}


# ------------------------------------------------------------------ writing

class _Tree:
    def __init__(self, root: Path):
        self.root = Path(root)

    def put(self, rel: str, data):
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            p.write_bytes(data)
        else:
            p.write_text(data)

    def link(self, rel: str, target: str):
        """A relative symlink at ``rel`` to ``target`` (both relative to the root)."""
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink():
            p.unlink()
        p.symlink_to(os.path.relpath(self.root / target, p.parent))


def config_space(vendor, device, cls, bridge_buses=None, link=None) -> bytes:
    """256 bytes of PCI config: ids, class, header type, bus numbers, a PCIe capability with link status."""
    cfg = bytearray(256)
    struct.pack_into("<HH", cfg, 0x00, vendor, device)
    struct.pack_into("<HH", cfg, 0x04, 0x0406, 0x0010)      # status: has a capability list
    cfg[0x08] = 0xa1
    cfg[0x09], cfg[0x0a], cfg[0x0b] = cls & 0xff, (cls >> 8) & 0xff, cls >> 16
    if bridge_buses:
        cfg[0x0e] = 1
        cfg[0x18], cfg[0x19], cfg[0x1a] = bridge_buses
    cfg[0x34] = 0x40
    cfg[0x40] = 0x10                                        # PCI Express capability
    if link:
        gts = {"2.5": 1, "5.0": 2, "8.0": 3, "16.0": 4, "32.0": 5, "64.0": 6}[link[0].split()[0]]
        struct.pack_into("<H", cfg, 0x52, gts | (link[1] << 4))
    return bytes(cfg)


def _write_pci(t: _Tree, s: Server, node_cpus: Dict[int, List[int]], nbits: int,
               overrides: Dict[str, Dict[str, str]]):
    every = sorted(c for cs in node_cpus.values() for c in cs)

    def function(path, busid, vendor, device, cls, node, buses=None, link=None):
        local = node_cpus.get(node, every)
        files = {"vendor": f"0x{vendor:04x}", "device": f"0x{device:04x}", "class": f"0x{cls:06x}",
                 "numa_node": str(node), "local_cpus": _mask(local, nbits), "local_cpulist": format_cpulist(local)}
        files.update(overrides.get(busid, {}))
        for k, v in files.items():
            t.put(f"{path}/{k}", v + "\n")
        t.put(f"{path}/config", config_space(vendor, device, cls, buses, link))
        if link:
            t.put(f"{path}/current_link_speed", f"{link[0]}\n")
            t.put(f"{path}/current_link_width", f"{link[1]}\n")
        t.link(f"sys/bus/pci/devices/{busid}", path)

    bridge_vendor = {"GenuineIntel": 0x8086, "AuthenticAMD": 0x1022}.get(s.vendor, 0x10de)
    for st in s.stacks:
        dom = f"{st.domain:04x}"
        host = f"sys/devices/pci{dom}:{st.root_bus:02x}"
        fns = sorted(st.functions, key=lambda f: f.bus)
        last = max(f.bus for f in fns)
        parents = []
        if st.switch:
            rp = f"{dom}:{st.root_bus:02x}:01.0"
            up_bus, down_bus = st.root_bus + 1, st.root_bus + 2
            function(f"{host}/{rp}", rp, bridge_vendor, 0x352a, 0x060400, st.node, (st.root_bus, up_bus, last),
                     ("32.0 GT/s PCIe", 16))
            up = f"{dom}:{up_bus:02x}:00.0"
            up_path = f"{host}/{rp}/{up}"
            function(up_path, up, 0x1000, 0xc030, 0x060400, st.node, (up_bus, down_bus, last), ("32.0 GT/s PCIe", 16))
            for k, f in enumerate(fns):
                dp = f"{dom}:{down_bus:02x}:{k:02x}.0"
                function(f"{up_path}/{dp}", dp, 0x1000, 0xc030, 0x060400, st.node, (down_bus, f.bus, f.bus),
                         ("32.0 GT/s PCIe", 16))
                parents.append((f, f"{up_path}/{dp}"))
        else:
            for k, f in enumerate(fns):
                rp = f"{dom}:{st.root_bus:02x}:{k + 1:02x}.0"
                function(f"{host}/{rp}", rp, bridge_vendor, 0x352a, 0x060400, st.node, (st.root_bus, f.bus, f.bus),
                         f.link)
                parents.append((f, f"{host}/{rp}"))
        for f, parent in parents:
            for i, fn in enumerate(f.funcs):
                busid = f"{dom}:{f.bus:02x}:00.{fn}"
                path = f"{parent}/{busid}"
                function(path, busid, f.vendor, f.device, f.cls, st.node, None, f.link)
                if f.netdevs:
                    nd = f.netdevs[i]
                    t.put(f"{path}/net/{nd}/type", "32\n" if f.link_layer == "InfiniBand" else "1\n")
                    t.put(f"{path}/net/{nd}/address", "00:00:00:00:00:00\n")
                    t.link(f"sys/class/net/{nd}", f"{path}/net/{nd}")
                if f.ibdevs:
                    ib = f.ibdevs[i]
                    t.put(f"{path}/infiniband/{ib}/node_guid", f"b83f:d203:00{f.bus:02x}:{fn:04x}\n")
                    t.put(f"{path}/infiniband/{ib}/ports/1/state", "4: ACTIVE\n")
                    t.put(f"{path}/infiniband/{ib}/ports/1/link_layer", f"{f.link_layer}\n")
                    t.link(f"sys/class/infiniband/{ib}", f"{path}/infiniband/{ib}")
                if f.nvme:
                    ctrl = f"{path}/nvme/{f.nvme}"
                    t.put(f"{ctrl}/model", "SAMSUNG MZ1L21T9HCLS\n")
                    t.put(f"{ctrl}/dev", f"240:{f.bus}\n")
                    t.put(f"{ctrl}/{f.nvme}n1/size", "3750748848\n")
                    t.put(f"{ctrl}/{f.nvme}n1/dev", f"259:{f.bus}\n")
                    t.link(f"sys/class/nvme/{f.nvme}", ctrl)
                    t.link(f"sys/class/block/{f.nvme}n1", f"{ctrl}/{f.nvme}n1")
                if f.drm:
                    t.put(f"{path}/drm/{f.drm}/dev", f"226:{f.drm[4:]}\n")
                    t.link(f"sys/class/drm/{f.drm}", f"{path}/drm/{f.drm}")
                if f.gpu_model:
                    g = f"proc/driver/nvidia/gpus/{busid}"
                    t.put(f"{g}/information", f"Model: \t\t {f.gpu_model}\nBus Location: \t {busid}\n")
                    if f.memory_node is not None:
                        t.put(f"{g}/numa_status", f"Node: {f.memory_node}\nStatus: online\n")


def write_server(dest, s: Server, pci_overrides: Optional[Dict[str, Dict[str, str]]] = None) -> Path:
    """Write ``s`` as a fake root under ``dest``; ``pci_overrides`` replaces sysfs files of
    chosen functions (busid -> {"numa_node": "-1", ...}) to model firmware mistakes."""
    t = _Tree(dest)
    cpus = s.cpus()
    nbits = s.nr_cpu_ids or len(cpus)
    every = [c[0] for c in cpus]
    node_cpus: Dict[int, List[int]] = {}
    pkg_cpus: Dict[int, List[int]] = {}
    core_cpus: Dict[Tuple[int, int], List[int]] = {}
    for cid, p, c, n in cpus:
        node_cpus.setdefault(n, []).append(cid)
        pkg_cpus.setdefault(p, []).append(cid)
        core_cpus.setdefault((p, c), []).append(cid)
    base = "sys/devices/system/cpu"
    for f in ("online", "possible", "present"):
        t.put(f"{base}/{f}", format_cpulist(every) + "\n")
    for cid, p, c, n in cpus:
        d = f"{base}/cpu{cid}"
        sib, pk = core_cpus[(p, c)], pkg_cpus[p]
        for name, ids in (("core_cpus", sib), ("thread_siblings", sib), ("package_cpus", pk), ("core_siblings", pk),
                          ("die_cpus", pk)):
            t.put(f"{d}/topology/{name}", _mask(ids, nbits) + "\n")
            t.put(f"{d}/topology/{name}_list", format_cpulist(ids) + "\n")
        t.put(f"{d}/topology/physical_package_id", f"{p}\n")
        t.put(f"{d}/topology/core_id", f"{c}\n")
        t.put(f"{d}/topology/die_id", "0\n")
        t.put(f"{d}/online", "1\n")
        l3 = [x[0] for x in cpus if x[1] == p and x[2] // s.l3_cores == c // s.l3_cores]
        for idx, level, kind, size, shared in ((0, 1, "Data", "48K", sib), (2, 2, "Unified", "2048K", sib),
                                               (3, 3, "Unified", "32768K", l3)):
            cd = f"{d}/cache/index{idx}"
            t.put(f"{cd}/level", f"{level}\n")
            t.put(f"{cd}/type", f"{kind}\n")
            t.put(f"{cd}/size", f"{size}\n")
            t.put(f"{cd}/shared_cpu_map", _mask(shared, nbits) + "\n")
            t.put(f"{cd}/shared_cpu_list", format_cpulist(shared) + "\n")
            t.put(f"{cd}/coherency_line_size", "64\n")
    nb = "sys/devices/system/node"
    extra = dict(s.extra_nodes)
    all_nodes = sorted(set(node_cpus) | set(extra))
    with_mem = [n for n in all_nodes if n in node_cpus or extra.get(n)]
    t.put(f"{nb}/online", format_cpulist(all_nodes) + "\n")
    t.put(f"{nb}/possible", format_cpulist(all_nodes) + "\n")
    t.put(f"{nb}/has_cpu", format_cpulist(node_cpus) + "\n")
    t.put(f"{nb}/has_memory", format_cpulist(with_mem) + "\n")
    for i, n in enumerate(all_nodes):
        d = f"{nb}/node{n}"
        ids = node_cpus.get(n, [])
        kb = s.node_mem_kb[n] if n in node_cpus else extra[n]
        t.put(f"{d}/cpumap", _mask(ids, nbits) + "\n")
        t.put(f"{d}/cpulist", format_cpulist(ids) + "\n")
        t.put(f"{d}/distance", " ".join(map(str, s.distances[i])) + "\n")
        t.put(f"{d}/meminfo", f"Node {n} MemTotal:       {kb} kB\nNode {n} MemFree:        {kb // 2} kB\n")
    _write_pci(t, s, node_cpus, nbits, pci_overrides or {})
    for k, v in s.dmi.items():
        t.put(f"sys/class/dmi/id/{k}", v + "\n")
    t.put("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
    t.put("sys/fs/cgroup/cpuset.cpus.effective", format_cpulist(every) + "\n")
    t.put("sys/fs/cgroup/cpuset.mems.effective", format_cpulist(with_mem) + "\n")
    t.put("proc/mounts", "sysfs /sys sysfs rw 0 0\nproc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")
    t.put("proc/self/cgroup", "0::/\n")
    total = sum(s.node_mem_kb[n] for n in node_cpus) + sum(extra.values())
    t.put("proc/meminfo", f"MemTotal:       {total} kB\n")
    t.put("proc/hwloc-nofile-info", f"OSName: Linux\nOSRelease: 6.8.0\nHostName: {s.name}\n"
                                    f"Architecture: {s.arch}\nFallbackNbProcessors: {len(cpus)}\n")
    info = []
    for cid, p, c, n in cpus:
        if s.arch == "aarch64":
            info.append(f"processor\t: {cid}\nFeatures\t: {s.flags}\nCPU implementer\t: 0x41\n"
                        f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0x{s.model:03x}\n")
        else:
            info.append(f"processor\t: {cid}\nvendor_id\t: {s.vendor}\ncpu family\t: {s.family}\n"
                        f"model\t\t: {s.model}\nmodel name\t: {s.model_name}\nphysical id\t: {p}\n"
                        f"core id\t\t: {c}\nflags\t\t: {s.flags}\n")
    t.put("proc/cpuinfo", "\n".join(info) + "\n")
    return Path(dest)


def write(dest, name: str, **kw) -> Path:
    return write_server(dest, SERVERS[name](), **kw)


__all__ = ["SERVERS", "Server", "Stack", "Function", "write", "write_server"]
