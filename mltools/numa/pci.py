"""Where the GPUs, NICs and disks sit: PCI devices from sysfs and their NUMA locality.

Each device under ``sys/bus/pci/devices`` gives its class, vendor, ``numa_node``
(the kernel's device -> node, from the firmware's _PXM; -1 when none) and
``local_cpus`` (a mask of the CPUs near it; ``local_cpulist`` is the same as a
list). Firmware gets these wrong often enough that both are read and compared:

- ``numa_node`` and ``local_cpus`` agree -> that node, ``high``;
- one of them says nothing (-1, or every CPU) -> the other one, ``medium``;
- they contradict each other -> ``numa_node``, ``low``, and the contradiction is noted;
- neither says anything on a machine with several CPU nodes -> locality unknown
  (not "local to everything").

hwloc does this differently on purpose: it takes one locality per host bridge,
from the ``local_cpus`` mask of the first device on the root bus, and never
reads ``numa_node`` for PCI devices. The two agree on real, consistent machines;
the tests list the dumps where they do not.

The PCI tree (host bridge, then the bridges down to the device) comes from the
path the ``sys/bus/pci/devices/<busid>`` link points to, and gives the
GPU <-> NIC relation in ``nvidia-smi topo -m`` terms: PIX (one PCIe switch
between them), PXB (several bridges, same host bridge), PHB (through the host
bridge), NODE (different host bridges of one NUMA node), SYS (across nodes).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set, Tuple

from mltools._sysfs import read_text
from mltools.numa.cpulist import format_cpulist, parse_cpulist, parse_cpumask

__all__ = ["PciDevice", "GpuNicMatrix", "IoTopology", "read_io", "device_kind", "relation",
           "RELATION_ORDER", "SYS_PCI"]

SYS_PCI = "sys/bus/pci/devices"
BUSID = re.compile(r"^[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
HOST_BRIDGE = re.compile(r"^pci([0-9a-fA-F]{4,8}:[0-9a-fA-F]{2})$")

VENDORS = {
    0x10de: "NVIDIA", 0x1002: "AMD", 0x1022: "AMD", 0x8086: "Intel", 0x15b3: "Mellanox", 0x14e4: "Broadcom",
    0x1077: "QLogic", 0x1a03: "ASPEED", 0x102b: "Matrox", 0x1013: "Cirrus Logic", 0x144d: "Samsung",
    0x1bcf: "NEC", 0x1da3: "Habana", 0x1af4: "Red Hat (virtio)", 0x1e0f: "KIOXIA", 0x1000: "Broadcom/LSI",
    0x19e5: "Huawei", 0x1924: "Solarflare", 0x1fc1: "QLogic (PathScale)", 0x8088: "Wangxun",
}
# Display controllers from these vendors are compute GPUs; the others (BMC and
# virtual VGAs: ASPEED, Matrox, Cirrus) only draw a console.
GPU_VENDORS = {0x10de, 0x1002, 0x8086}
# nvidia-smi's words, nearest first
RELATION_ORDER = ("PIX", "PXB", "PHB", "NODE", "SYS", "unknown")
LISTED_KINDS = ("gpu", "accelerator", "coprocessor", "nic_infiniband", "nic_ethernet", "nic_other", "nvme",
                "display")


@dataclass(frozen=True)
class PciDevice:
    busid: str                          # "0000:1b:00.0"
    vendor: str                         # "0x10de"
    device: Optional[str]               # "0x2330"; None when sysfs has no device file
    class_code: str                     # "0x030200"
    vendor_name: Optional[str]
    kind: str                           # one of LISTED_KINDS
    numa_node: Optional[int]            # sysfs numa_node; None for -1 or no file
    local_cpus: str                     # the local_cpus mask as a cpulist ("" when absent)
    node: Optional[int]                 # the node this device is local to; None = unknown
    nodes: Tuple[int, ...]              # CPU nodes that local_cpus touches
    locality_confidence: str            # high, medium, low, none
    locality_evidence: str
    locality_notes: Tuple[str, ...]     # contradictions between numa_node, local_cpus and local_cpulist
    host_bridge: Optional[str]          # "0000:00": the root bus the device hangs off
    bridges: Tuple[str, ...]            # PCI bridges from the host bridge down, top first
    link: Optional[str]                 # "32.0 GT/s PCIe x16"
    os_devices: Tuple[str, ...]         # eth0, mlx5_0, nvme0n1, card1, ...
    link_layers: Tuple[str, ...]        # per InfiniBand port: "InfiniBand" or "Ethernet" (RoCE)
    memory_node: Optional[int] = None   # GPU memory exposed as this NUMA node (Grace Hopper, POWER9+V100)

    @property
    def rdma(self) -> bool:
        """An RDMA-capable NIC (InfiniBand, or RoCE on an Ethernet port)."""
        return bool(self.link_layers) or self.kind == "nic_infiniband"


@dataclass(frozen=True)
class GpuNicMatrix:
    gpus: Tuple[str, ...]
    nics: Tuple[str, ...]
    relations: Tuple[Tuple[str, ...], ...]       # gpus x nics, RELATION_ORDER words


@dataclass(frozen=True)
class IoTopology:
    devices: Tuple[PciDevice, ...]               # GPUs, accelerators, NICs, NVMe, displays (bus order)
    other_functions: int                         # PCI functions of other classes (bridges, chipset, ...)
    virtual_functions: int                       # SR-IOV VFs, left out
    gpu_nic: GpuNicMatrix
    notes: Tuple[str, ...] = ()

    def of_kind(self, *kinds: str) -> Tuple[PciDevice, ...]:
        return tuple(d for d in self.devices if d.kind in kinds)

    @property
    def gpus(self) -> Tuple[PciDevice, ...]:
        return self.of_kind("gpu")

    @property
    def nics(self) -> Tuple[PciDevice, ...]:
        return tuple(d for d in self.devices if d.kind.startswith("nic_"))


def _hex(text: Optional[str]) -> Optional[int]:
    try:
        return int((text or "").strip(), 16)
    except ValueError:
        return None


def device_kind(class_code: int, vendor: int, link_layers: Sequence[str] = ()) -> str:
    """The kind of a PCI function from its 24-bit class code (and, for class
    0x0280 "network, other", the link layer of its InfiniBand ports)."""
    cls = class_code >> 8
    if cls >> 8 == 0x03:
        return "gpu" if vendor in GPU_VENDORS else "display"
    if cls == 0x0200:
        return "nic_ethernet"
    if cls in (0x0207, 0x0c06):          # InfiniBand: network class, or the old serial-bus class
        return "nic_infiniband"
    if cls == 0x0280:
        if "InfiniBand" in link_layers:
            return "nic_infiniband"
        if "Ethernet" in link_layers:
            return "nic_ethernet"
        return "nic_other"
    if cls == 0x0108:
        return "nvme"
    if cls == 0x0b40:
        return "coprocessor"
    if cls == 0x1200:
        return "accelerator"
    return "other"


def torch_busid(props, domain_digits: int = 4) -> Optional[str]:
    """The PCI address of a GPU from torch's device properties ("0000:1b:00.0"; NVML
    writes the domain with 8 digits), or None where torch does not give it (older torch)."""
    try:
        return f"{props.pci_domain_id:0{domain_digits}x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    except AttributeError:
        return None


def relation(a: PciDevice, b: PciDevice) -> str:
    """How the path between two devices runs, in ``nvidia-smi topo -m`` words."""
    if a.host_bridge is not None and a.host_bridge == b.host_bridge:
        common = 0
        for x, y in zip(a.bridges, b.bridges):
            if x != y:
                break
            common += 1
        if common:
            below = max(len(a.bridges) - common, len(b.bridges) - common)
            return "PIX" if below <= 1 else "PXB"
        return "PHB"
    if a.node is None or b.node is None:
        return "unknown"
    return "NODE" if a.node == b.node else "SYS"


def _locality(numa_node: Optional[int], mask: Optional[Tuple[int, ...]], listed: Optional[Tuple[int, ...]],
              node_cpus: Dict[int, Tuple[int, ...]], online: Set[int]):
    """(node, nodes, confidence, evidence, notes) for one device."""
    notes: List[str] = []
    if mask is not None and listed is not None and set(mask) != set(listed):
        notes.append(f"local_cpus mask ({format_cpulist(mask) or 'empty'}) and local_cpulist "
                     f"({format_cpulist(listed) or 'empty'}) disagree: the mask is used, as hwloc does")
    cpus = set(mask if mask is not None else (listed or ())) & online
    cpu_nodes = {n: set(c) for n, c in node_cpus.items() if c}
    touched = tuple(sorted(n for n, c in cpu_nodes.items() if c & cpus))
    specific = bool(cpus) and cpus != online
    if len(cpu_nodes) <= 1:
        only = next(iter(cpu_nodes), numa_node if numa_node is not None else 0)
        if numa_node is not None and numa_node != only:
            notes.append(f"numa_node {numa_node} is not the CPU node {only}")
        return only, touched, "high", "one CPU node: every device is local to it", tuple(notes)
    if numa_node is not None:
        if specific and numa_node not in touched:
            notes.append(f"numa_node {numa_node} contradicts local_cpus {format_cpulist(cpus)} "
                         f"(node(s) {format_cpulist(touched)}); numa_node is root-writable and may be an override")
            return numa_node, touched, "low", f"numa_node {numa_node}, contradicted by local_cpus", tuple(notes)
        if specific:
            return numa_node, touched, "high", f"numa_node {numa_node} and local_cpus agree", tuple(notes)
        if cpus:
            notes.append(f"local_cpus lists every CPU while numa_node says {numa_node}")
        return numa_node, touched, "medium", f"numa_node {numa_node} (local_cpus says nothing)", tuple(notes)
    if specific:
        if len(touched) == 1:
            return touched[0], touched, "medium", \
                f"numa_node is -1; local_cpus {format_cpulist(cpus)} lies in node {touched[0]}", tuple(notes)
        return None, touched, "low", \
            f"numa_node is -1; local_cpus {format_cpulist(cpus)} spans nodes {format_cpulist(touched)}", tuple(notes)
    return None, touched, "none", \
        "numa_node is -1 and local_cpus " + ("lists every CPU" if cpus else "is missing") + \
        ": the firmware says nothing about where this device sits", tuple(notes)


def _tree(root: str, busid: str) -> Tuple[Optional[str], Tuple[str, ...]]:
    """(host bridge, bridges from the top) from where sys/bus/pci/devices/<busid> points."""
    link = os.path.join(root, SYS_PCI, busid)
    try:
        target = os.readlink(link)
    except OSError:
        # a plain directory (a partial dump): the function's own bus stands for its root bus, as in hwloc
        return busid.lower().rsplit(":", 1)[0], ()
    parts = os.path.normpath(os.path.join(os.path.dirname(os.path.join(SYS_PCI, busid)), target)).split(os.sep)
    host = next((m.group(1).lower() for p in parts if (m := HOST_BRIDGE.match(p))), None)
    chain = [p.lower() for p in parts if BUSID.match(p)]
    if not chain or chain[-1] != busid.lower():
        return host, ()
    # bridges the root does not list are left out, as in hwloc (a partial dump may lack some)
    return host, tuple(b for b in chain[:-1] if os.path.lexists(os.path.join(root, SYS_PCI, b)))


def _listdir(path: str) -> List[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


CLASSES = ("net", "infiniband", "block", "drm")


def _class_devices(root: str) -> Dict[str, List[Tuple[str, str, str]]]:
    """busid -> [(class, name, target dir)] from the sys/class links, the way hwloc finds
    OS devices: the last PCI bus id in the link's target is the function they belong to
    (a virtio NIC sits one level further down, under virtio0/)."""
    out: Dict[str, List[Tuple[str, str, str]]] = {}
    for cls in CLASSES:
        base = os.path.join(root, "sys/class", cls)
        for name in _listdir(base):
            link = os.path.join(base, name)
            try:
                target = os.path.normpath(os.path.join(base, os.readlink(link)))
            except OSError:
                continue
            if cls == "block" and os.path.exists(os.path.join(target, "partition")):
                continue
            if cls == "drm" and not re.fullmatch(r"card\d+", name):
                continue
            ids = [p.lower() for p in target.split(os.sep) if BUSID.match(p)]
            if ids:
                out.setdefault(ids[-1], []).append((cls, name, target))
    return out


def _os_devices(dev_dir: str, from_classes: Sequence[Tuple[str, str, str]]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(names, InfiniBand link layers) of what the kernel made of the function: the
    sys/class links that lead to it, and what its own directory holds."""
    names: List[str] = [name for _, name, _ in from_classes]
    hcas = [target for cls, _, target in from_classes if cls == "infiniband"]
    names += _listdir(os.path.join(dev_dir, "net"))
    for hca in _listdir(os.path.join(dev_dir, "infiniband")):
        names.append(hca)
        hcas.append(os.path.join(dev_dir, "infiniband", hca))
    for ctrl in _listdir(os.path.join(dev_dir, "nvme")):
        names += [n for n in _listdir(os.path.join(dev_dir, "nvme", ctrl)) if re.fullmatch(r"nvme\d+(c\d+)?n\d+", n)]
    names += [c for c in _listdir(os.path.join(dev_dir, "drm")) if re.fullmatch(r"card\d+", c)]
    layers: List[str] = []
    for hca in dict.fromkeys(os.path.realpath(h) for h in hcas):
        for port in _listdir(os.path.join(hca, "ports")):
            layer = read_text(os.path.join(hca, "ports", port, "link_layer"))
            if layer and layer.strip():
                layers.append(layer.strip())
    return tuple(dict.fromkeys(names)), tuple(layers)


def _link(r: str, d: str) -> Optional[str]:
    speed = (read_text(f"{d}/current_link_speed", r) or "").strip()
    width = (read_text(f"{d}/current_link_width", r) or "").strip()
    if not speed or speed.lower().startswith("unknown"):
        return None
    return f"{speed} x{width}" if width and width != "0" else speed


def read_io(root: str, node_cpus: Dict[int, Tuple[int, ...]], online_cpus: Sequence[int],
            nvidia_gpus: Optional[Dict[str, Optional[int]]] = None) -> IoTopology:
    """The GPUs, accelerators, NICs and NVMe drives under ``root`` with their locality.
    ``nvidia_gpus``: the bus ids the NVIDIA driver lists, with the node of each GPU's
    memory where it is one (a display-class function there is a GPU even when sysfs
    lacks its vendor file)."""
    nvidia_gpus = nvidia_gpus or {}
    base = os.path.join(root, SYS_PCI)
    online = set(online_cpus)
    devices: List[PciDevice] = []
    other = vfs = 0
    by_class = _class_devices(root)
    for busid in _listdir(base):
        if not BUSID.match(busid):
            continue
        d = f"{SYS_PCI}/{busid}"
        full = os.path.join(root, d)
        if os.path.lexists(os.path.join(full, "physfn")):
            vfs += 1
            continue
        cls, vendor, device = (_hex(read_text(f"{d}/{k}", root)) for k in ("class", "vendor", "device"))
        if vendor is None and busid.lower() in nvidia_gpus:
            vendor = 0x10de
        if cls is None or vendor is None:
            other += 1
            continue
        # The link layers only tell class 0x0280 apart, and every kind of it is listed:
        # a function can be counted as other before its OS devices are looked at.
        if device_kind(cls, vendor) not in LISTED_KINDS:
            other += 1
            continue
        os_devs, layers = _os_devices(full, by_class.get(busid.lower(), ()))
        kind = device_kind(cls, vendor, layers)
        numa_text = (read_text(f"{d}/numa_node", root) or "").strip()
        try:
            numa_node: Optional[int] = int(numa_text)
        except ValueError:
            numa_node = None
        if numa_node is not None and numa_node < 0:
            numa_node = None
        mask_text = read_text(f"{d}/local_cpus", root)
        list_text = read_text(f"{d}/local_cpulist", root)
        try:
            mask = parse_cpumask(mask_text) if mask_text and mask_text.strip() else None
        except ValueError:
            mask = None
        try:
            listed = parse_cpulist(list_text) if list_text is not None else None
        except ValueError:
            listed = None
        node, nodes, conf, evidence, notes = _locality(numa_node, mask, listed, node_cpus, online)
        host, bridges = _tree(root, busid)
        devices.append(PciDevice(
            busid=busid.lower(), vendor=f"0x{vendor:04x}", device=None if device is None else f"0x{device:04x}",
            class_code=f"0x{cls:06x}",
            vendor_name=VENDORS.get(vendor), kind=kind, numa_node=numa_node,
            local_cpus=format_cpulist(mask if mask is not None else (listed or ())),
            node=node, nodes=nodes, locality_confidence=conf, locality_evidence=evidence, locality_notes=notes,
            host_bridge=host, bridges=bridges, link=_link(root, d), os_devices=os_devs, link_layers=layers,
            memory_node=nvidia_gpus.get(busid.lower())))
    gpus = [x for x in devices if x.kind == "gpu"]
    nics = [x for x in devices if x.kind.startswith("nic_")]
    matrix = GpuNicMatrix(tuple(g.busid for g in gpus), tuple(n.busid for n in nics),
                          tuple(tuple(relation(g, n) for n in nics) for g in gpus))
    notes = []
    if not os.path.isdir(base):
        notes.append(f"no {SYS_PCI} under the root: no PCI devices known")
    return IoTopology(tuple(devices), other, vfs, matrix, tuple(notes))
