"""Traps in the machine and the process environment, beyond the libraries.

The variable checks are ``mltools.env``'s; this module adds what only matters
when diagnosing an ML environment: threads against the cgroup CPU quota, the
CUDA driver against the CUDA runtimes the environment ships, and the kernel's
transparent-huge-page and NUMA-balancing settings.
"""
from __future__ import annotations

import os
import re
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from mltools._sysfs import read_text
from mltools.findings import Finding, Severity

# Oldest Linux driver that runs each CUDA major with minor-version
# compatibility (CUDA toolkit release notes, "CUDA Driver" table).
CUDA_MIN_DRIVER = {11: (450, 80, 2), 12: (525, 60, 13), 13: (580, 65, 6)}

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _bracketed(text: Optional[str]) -> Optional[str]:
    if not text:
        return None
    m = re.search(r"\[([\w+-]+)\]", text)
    return m.group(1) if m else text.strip() or None


def parse_version(text: str) -> Tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def kernel_driver_version(proc_text: Optional[str] = None) -> Optional[str]:
    """The NVIDIA kernel module's version from /proc/driver/nvidia/version, if loaded."""
    text = read_text("/proc/driver/nvidia/version") if proc_text is None else proc_text
    m = re.search(r"Kernel Module(?: for \w+)?\s+([\d.]+)", text or "")
    return m.group(1) if m else None


def cuda_driver_findings(driver_version: Optional[str], runtime_majors: Mapping[int, Sequence[str]]) -> List[Finding]:
    """A CUDA runtime major newer than the driver supports cannot start (cudaErrorInsufficientDriver)."""
    out: List[Finding] = []
    if not driver_version:
        return out
    have = parse_version(driver_version)
    for major in sorted(runtime_majors):
        need = CUDA_MIN_DRIVER.get(major)
        if need is None or have >= need:
            continue
        who = ", ".join(sorted(runtime_majors[major]))
        out.append(Finding(
            "CUDA_DRIVER_TOO_OLD", Severity.ERROR,
            f"the NVIDIA driver is {driver_version} but CUDA {major} (brought by {who}) needs at least "
            f"{'.'.join(map(str, need))}: CUDA calls fail with 'driver version is insufficient'",
            fix=f"upgrade the NVIDIA driver to {'.'.join(map(str, need))} or newer, or install the "
                f"builds of those packages made for an older CUDA major",
            details={"driver_version": driver_version, "cuda_major": major,
                     "min_driver": ".".join(map(str, need)), "brought_by": sorted(runtime_majors[major])}))
    return out


def thread_quota_findings(environ: Mapping[str, str], logical_cpus: int,
                          cgroup_limit: Optional[float], usable_cpus: int) -> List[Finding]:
    """Runtimes size their pools from the CPU count, not the cgroup quota."""
    out: List[Finding] = []
    if cgroup_limit is None or any(environ.get(v) for v in _THREAD_VARS):
        return out
    allowed = max(1, int(cgroup_limit))
    if min(logical_cpus, usable_cpus) > allowed * 1.5:
        out.append(Finding(
            "THREADS_EXCEED_CPU_QUOTA", Severity.WARNING,
            f"this cgroup may use {cgroup_limit:g} CPUs but {usable_cpus} are visible: OpenMP and BLAS "
            f"start {usable_cpus} threads each and get throttled",
            fix=f"export OMP_NUM_THREADS={allowed} (and MKL_NUM_THREADS/OPENBLAS_NUM_THREADS)",
            details={"cgroup_cpu_limit": cgroup_limit, "usable_cpus": usable_cpus}))
    return out


def kernel_findings(thp_enabled: Optional[str] = None, thp_defrag: Optional[str] = None,
                    numa_balancing: Optional[str] = None, numa_nodes: int = 1,
                    *, read_system: bool = True) -> List[Finding]:
    """THP and automatic NUMA balancing, with what each setting does to ML workloads."""
    if read_system:
        thp_enabled = thp_enabled or _bracketed(read_text("/sys/kernel/mm/transparent_hugepage/enabled"))
        thp_defrag = thp_defrag or _bracketed(read_text("/sys/kernel/mm/transparent_hugepage/defrag"))
        if numa_balancing is None:
            numa_balancing = (read_text("/proc/sys/kernel/numa_balancing") or "").strip() or None
    out: List[Finding] = []
    if thp_enabled == "never":
        out.append(Finding(
            "THP_NEVER", Severity.INFO,
            "transparent huge pages are off: large tensors and arenas use 4 KiB pages, so more TLB misses "
            "in memory-bound kernels",
            fix="echo madvise > /sys/kernel/mm/transparent_hugepage/enabled (allocators can then opt in)",
            details={"enabled": thp_enabled}))
    elif thp_enabled == "always":
        out.append(Finding(
            "THP_ALWAYS", Severity.INFO,
            "transparent huge pages are 'always': big allocations get 2 MiB pages (fewer TLB misses), "
            "but small sparse heaps grow and khugepaged can add latency spikes",
            fix="keep it for throughput jobs; use madvise for latency-sensitive serving",
            details={"enabled": thp_enabled}))
    if thp_enabled in ("always", "madvise") and thp_defrag == "always":
        out.append(Finding(
            "THP_DEFRAG_ALWAYS", Severity.WARNING,
            "THP defrag is 'always': a page fault may stall in direct compaction when memory is "
            "fragmented (multi-millisecond pauses in data loaders and allocators)",
            fix="echo defer+madvise > /sys/kernel/mm/transparent_hugepage/defrag",
            details={"defrag": thp_defrag}))
    if numa_balancing not in (None, "0") and numa_nodes > 1:
        out.append(Finding(
            "NUMA_BALANCING_ON", Severity.INFO,
            f"automatic NUMA balancing is on with {numa_nodes} nodes: the kernel unmaps pages to sample "
            "accesses and migrates them, which helps unpinned jobs but adds page faults to pinned ones",
            fix="for jobs pinned with numactl/taskset: sysctl kernel.numa_balancing=0",
            details={"numa_balancing": numa_balancing, "numa_nodes": numa_nodes}))
    return out


def torch_cuda_version(site_dirs: Iterable[str]) -> Optional[Tuple[str, str]]:
    """(torch version, CUDA version it was built for) read from torch/version.py, without importing it."""
    for d in site_dirs:
        text = read_text(os.path.join(d, "torch", "version.py"))
        if not text:
            continue
        ver = re.search(r"^__version__\s*(?::\s*str)?\s*=\s*'([^']+)'", text, re.M)
        cuda = re.search(r"^cuda\s*(?::\s*Optional\[str\])?\s*=\s*'([^']+)'", text, re.M)
        return (ver.group(1) if ver else "?", cuda.group(1) if cuda else "")
    return None
