"""Helpers for the bench numa tests: the sysfs dumps and small synthetic roots.

The dumps in ../shared/fixtures/sysfs (or $MLTOOLS_NUMA_FIXTURES) are real
machines' /sys and /proc from hwloc's test suite; they are unpacked into a
temp dir per test process and never committed unpacked. lstopo's view of a
root is in hwloc_oracle.py; servers with GPUs and NICs in numa_synth.py.
"""
from __future__ import annotations

import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from mltools.numa.cpulist import format_cpulist, format_cpumask

REPO = Path(__file__).resolve().parent.parent


def fixtures_dir() -> Optional[Path]:
    for cand in (os.environ.get("MLTOOLS_NUMA_FIXTURES"), REPO / "shared" / "fixtures" / "sysfs",
                 REPO.parent / "shared" / "fixtures" / "sysfs"):
        if cand and Path(cand).is_dir() and any(Path(cand).glob("*.tar.bz2")):
            return Path(cand)
    return None


def scratch_dir(fallback: Path) -> Path:
    """A tmpfs directory when there is one (tens of thousands of small files unpack
    several times faster there), else ``fallback``."""
    import tempfile
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return Path(tempfile.mkdtemp(prefix="mltools-numa-", dir="/dev/shm"))
    return fallback


def stems() -> List[str]:
    """The tarball names (without .tar.bz2) of every dump in the fixtures directory."""
    src = fixtures_dir()
    return sorted(p.name[:-len(".tar.bz2")] for p in src.glob("*.tar.bz2")) if src else []


_UNPACKED: Dict[str, Path] = {}


def unpacked() -> Dict[str, Path]:
    """stem -> the unpacked root of every dump (PCI trees included), unpacked once per
    test process into a tmpfs directory that is removed when the process ends."""
    if _UNPACKED or fixtures_dir() is None:
        return _UNPACKED
    import atexit
    import tempfile
    dest = scratch_dir(Path(tempfile.mkdtemp(prefix="mltools-numa-")))
    atexit.register(shutil.rmtree, dest, True)
    for stem in stems():
        with tarfile.open(fixtures_dir() / f"{stem}.tar.bz2") as tf:
            members = [m for m in tf.getmembers() if not m.name.endswith("/uevent")]
            tops = {m.name.split("/")[0] for m in members}
            tf.extractall(dest, members=members, filter="data")
        assert len(tops) == 1, f"{stem}: one top directory expected, found {sorted(tops)}"
        _UNPACKED[stem] = dest / tops.pop()   # the top directory is not always the tarball's name
    return _UNPACKED


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
    return format_cpumask(ids)


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


# ---------------------------------------------- roots that contradict themselves

def _put(root: Path, rel: str, text: str):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def synth_buggy_numa(root: Path) -> Path:
    """Firmware that puts every CPU in every node (hwloc's 8em64t-buggynuma case)."""
    synth_cod(root)
    for n in range(4):
        _put(root, f"sys/devices/system/node/node{n}/cpulist", "0-27\n")
        _put(root, f"sys/devices/system/node/node{n}/cpumap", cpumask(range(28)) + "\n")
    return root


def synth_offline_cpus(root: Path) -> Path:
    """No cpu/online file; CPUs 2 and 5 are offline only in their own cpuN/online (and, as
    the kernel does, gone from their node's mask; the node's cpulist still names them)."""
    synth_cxl(root)
    (root / "sys/devices/system/cpu/online").unlink()
    for c in range(16):
        _put(root, f"sys/devices/system/cpu/cpu{c}/online", "0\n" if c in (2, 5) else "1\n")
    _put(root, "sys/devices/system/node/node0/cpumap", cpumask([0, 1, 3, 4, 6, 7]) + "\n")
    return root


def synth_package_conflict(root: Path) -> Path:
    """cpu3's package mask covers CPUs 0-3 while its list and every other CPU say 0-7:
    the masks overlap without one holding the other (hwloc drops the conflicting package)."""
    synth_cxl(root)
    t = "sys/devices/system/cpu/cpu3/topology"
    for name in ("package_cpus", "core_siblings"):
        _put(root, f"{t}/{name}", cpumask([0, 1, 2, 3]) + "\n")
    return root


def synth_power_like(root: Path) -> Path:
    """POWER-like: physical_package_id -1 and each package mask is one SMT4 core; two nodes."""
    cores = [list(range(i, i + 4)) for i in range(0, 32, 4)]
    write_root(root, vendor="GenuineIntel", family=6, model=85, model_name="stand-in",
               packages={0: list(range(16)), 1: list(range(16, 32))},
               nodes=[SynthNode(0, list(range(16))), SynthNode(1, list(range(16, 32)))],
               distances=[[10, 40], [40, 10]], l3_groups=[])
    (root / "proc/cpuinfo").write_text("".join(f"processor\t: {c}\ncpu\t\t: POWER7 (architected)\n\n"
                                               for c in range(32)))
    for core in cores:
        for c in core:
            t = f"sys/devices/system/cpu/cpu{c}/topology"
            _put(root, f"{t}/physical_package_id", "-1\n")
            for name in ("core_siblings", "package_cpus", "thread_siblings", "core_cpus"):
                _put(root, f"{t}/{name}", cpumask(core) + "\n")
                _put(root, f"{t}/{name}_list", format_cpulist(core) + "\n")
    return root


def synth_cod_bad_slit(root: Path) -> Path:
    """Cluster-on-Die whose SLIT puts the sibling node (31) farther than the other socket (21)."""
    synth_cod(root)
    rows = [[10, 31, 21, 21], [31, 10, 21, 21], [21, 21, 10, 31], [21, 21, 31, 10]]
    for n, row in enumerate(rows):
        _put(root, f"sys/devices/system/node/node{n}/distance", " ".join(map(str, row)) + "\n")
    return root


def synth_cgroup_v1_noprefix(root: Path) -> Path:
    """A cgroup v1 cpuset mounted with noprefix (files cpus/mems), listed after a cgroup2
    mount without the cpuset controller: the first mount that carries cpusets wins."""
    synth_cxl(root)
    _put(root, "proc/mounts", "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
                              "cgroup /dev/cpuset cgroup rw,cpuset,noprefix 0 0\n")
    _put(root, "sys/fs/cgroup/unified/cgroup.controllers", "memory pids\n")
    _put(root, "proc/self/cgroup", "3:cpuset:/job7\n0::/job7\n")
    _put(root, "dev/cpuset/job7/cpus", "2-9\n")
    _put(root, "dev/cpuset/job7/mems", "1-2\n")
    return root


def synth_cxl_dax(root: Path) -> Path:
    """The CXL machine with its node 2 onlined the way the kernel does it: a DAX device on a
    CXL region (ACPI0017 root, decoder, region), bound to the kmem driver."""
    synth_cxl(root)
    target = root / "sys/devices/platform/ACPI0017:00/root0/decoder0.0/region0/dax_region0/dax0.0"
    target.mkdir(parents=True)
    (target / "target_node").write_text("2\n")
    for link, to in (("sys/bus/dax/devices/dax0.0", target), ("sys/bus/dax/drivers/kmem/dax0.0", target)):
        p = root / link
        p.parent.mkdir(parents=True, exist_ok=True)
        p.symlink_to(os.path.relpath(to, p.parent))
    return root


EDGE_CASES = {"buggy_numa": synth_buggy_numa, "offline_cpus": synth_offline_cpus,
              "package_conflict": synth_package_conflict, "power_like": synth_power_like,
              "cod_bad_slit": synth_cod_bad_slit, "cgroup_v1_noprefix": synth_cgroup_v1_noprefix,
              "cxl_dax": synth_cxl_dax}
