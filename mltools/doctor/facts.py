"""What a doctor report records about its machine and environment, so two can be compared.

Collected once per run (with the environment checks) from what the passes
already know: ``mltools env``'s machine report, the static pass's resolved
libraries, the pip distributions, the CPU-instruction pass. ``mltools doctor
diff`` reads these from two ``--json`` reports.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Sequence, Tuple

__all__ = ["NodeFacts", "LibraryFact", "collect_facts"]


@dataclass(frozen=True)
class LibraryFact:
    """A library the static pass resolved, by the name the loader dedups on."""
    soname: str
    path: Optional[str]                  # realpath, None when not found
    package: Optional[str]
    size: Optional[int]


@dataclass(frozen=True)
class NodeFacts:
    hostname: str
    collected_at: str                    # UTC, ISO 8601
    os: Optional[str]                    # PRETTY_NAME of /etc/os-release
    kernel: str
    glibc: Optional[str]
    cpu_model: Optional[str]
    isa_level: Optional[int]             # /proc/cpuinfo's x86-64 level
    cpu_features: Tuple[str, ...]        # the instruction-set features the kernel lists
    logical_cpus: int
    usable_cpus: int
    cgroup_cpu_limit: Optional[float]
    numa_nodes: int
    transparent_hugepages: Optional[str]
    gpus: Tuple[Tuple[str, str], ...]    # (name, driver version) per GPU
    driver_version: Optional[str]        # the NVIDIA kernel driver (also without nvidia-smi)
    environment: Dict[str, str]          # the variables that steer loading, threading and dispatch
    packages: Dict[str, str]             # pip distribution -> version
    libraries: Tuple[LibraryFact, ...]


def collect_facts(env, environ: Mapping[str, str], libraries: Sequence[Tuple[str, Optional[str]]],
                  owners, driver_version: Optional[str]) -> NodeFacts:
    """``driver_version``: the NVIDIA driver's (the first GPU's, else the kernel module's), or None."""
    from mltools._sysfs import cpuinfo_fields, read_text
    from mltools.doctor.isa import DISPATCH_VARIABLES
    from mltools.elf.cpus import features_from_flags

    flags = cpuinfo_fields(read_text("/proc/cpuinfo") or "").get("flags", "").split()
    variables = dict(env.environment)
    variables.update({k: environ[k] for k in DISPATCH_VARIABLES if environ.get(k)})
    libs = []
    for soname, path in libraries:
        size = None
        if path:
            try:
                size = os.stat(path).st_size
            except OSError:
                pass
        libs.append(LibraryFact(soname, os.path.realpath(path) if path else None, owners.label(path), size))
    return NodeFacts(
        hostname=socket.gethostname(),
        collected_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        os=env.platform.get("os"),
        kernel=env.platform.get("kernel", ""),
        glibc=env.libc.version,
        cpu_model=env.cpu.model_name,
        isa_level=env.cpu.isa_level,
        cpu_features=tuple(sorted(features_from_flags(flags))),
        logical_cpus=env.cpu.logical_cpus,
        usable_cpus=env.cpu.usable_cpus,
        cgroup_cpu_limit=env.cpu.cgroup_cpu_limit,
        numa_nodes=len(env.numa_nodes) or 1,
        transparent_hugepages=env.memory.transparent_hugepages,
        gpus=tuple((g.name, g.driver_version) for g in env.gpus),
        driver_version=driver_version,
        environment=dict(sorted(variables.items())),
        packages={d.name: d.version or "" for d in sorted(owners.distributions, key=lambda d: d.name.lower())},
        libraries=tuple(libs),
    )
