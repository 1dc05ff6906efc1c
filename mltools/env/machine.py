"""The machine a measurement came from, collected once per run: ``collect_machine()``.

Every ``bench`` report embeds one :class:`Machine`, so a figure read a week
later still says what it was measured on and in what state: CPU model and
ISA, frequency governor and current clocks where the kernel shows them, the
load average, kernel, Python and library versions, and (for GPU runs) each
GPU's model, driver and clocks. Where a fact has a name in pyperf's metadata
(``cpu_model_name``, ``cpu_count``, ``cpu_affinity``, ``cpu_freq``,
``cpu_config``, ``load_avg_1min``, ``runnable_threads``, ``hostname``,
``platform``, ``python_version``, ...), the field has that name, so the two
formats read alike. All reads of /proc and /sys go through ``mltools._sysfs``.
"""
from __future__ import annotations

import datetime
import os
import platform
import socket
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from mltools import __version__
from mltools._sysfs import read_text

__all__ = ["Machine", "GpuState", "collect_machine", "describe_machine", "load_average", "now_iso",
           "machine_differences"]


@dataclass(frozen=True)
class GpuState:
    """One GPU as NVML saw it when the machine was described."""

    index: int
    name: str
    uuid: Optional[str]
    pci_bus_id: Optional[str]
    driver_version: Optional[str]
    memory_total_mib: Optional[int]
    sm_clock_mhz: Optional[int]
    mem_clock_mhz: Optional[int]
    max_sm_clock_mhz: Optional[int]
    max_mem_clock_mhz: Optional[int]
    temperature_c: Optional[int]
    power_w: Optional[float]
    power_limit_w: Optional[float]


@dataclass(frozen=True)
class Machine:
    date: str                          # when it was described (ISO 8601, local time with offset)
    hostname: str
    platform: str                      # platform.platform(), as pyperf records it
    kernel: str
    cpu_model_name: Optional[str]
    cpu_vendor: Optional[str]
    architecture: str
    isa: str                           # x86-64 level and the vector extensions the kernels dispatch on
    hypervisor: bool
    cpu_count: int                     # online CPUs
    cpu_affinity: str                  # CPUs this process may use, e.g. "0-1"
    usable_cpus: int
    cpu_freq: Dict[str, int]           # MHz per usable CPU: cpufreq's scaling_cur_freq, else /proc/cpuinfo
    cpu_freq_source: Optional[str]     # "cpufreq" or "cpuinfo"; None when neither says
    cpu_config: Dict[str, str]         # cpufreq driver and governor per usable CPU, and the cpuidle driver
    governor: Optional[str]            # the governors of the usable CPUs, joined ("performance")
    load_avg_1min: Optional[float]
    runnable_threads: Optional[int]
    memory_total_bytes: Optional[int]
    python_implementation: str
    python_version: str
    python_executable: str
    libc: Optional[str]
    versions: Dict[str, str]           # mltools, numpy, torch, CUDA... those loaded in this process
    gpus: Tuple[GpuState, ...] = ()
    gpu_note: Optional[str] = None     # why GPU facts are missing, when they are

    def summary(self) -> str:
        """One line: CPU model, ISA, usable CPUs, kernel, load."""
        load = f", load {self.load_avg_1min:.2f}" if self.load_avg_1min is not None else ""
        return (f"{self.cpu_model_name or self.architecture}, {self.isa}, {self.usable_cpus} usable of "
                f"{self.cpu_count} CPUs{' under a hypervisor' if self.hypervisor else ''}, "
                f"{self.libc or 'libc -'}, Linux {self.kernel}{load}")


def now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def load_average() -> Tuple[Optional[float], Optional[int]]:
    """(1-minute load average, runnable threads) from /proc/loadavg."""
    fields = (read_text("/proc/loadavg") or "").split()
    try:
        load = float(fields[0])
    except (IndexError, ValueError):
        return None, None
    runnable = None
    if len(fields) >= 4 and "/" in fields[3]:
        try:
            runnable = int(fields[3].split("/", 1)[0])
        except ValueError:
            runnable = None
    return load, runnable


def _cpuinfo_mhz(text: str) -> Dict[int, int]:
    """``cpu MHz`` (x86) or ``clock ... MHz`` (POWER) per processor of /proc/cpuinfo."""
    out: Dict[int, int] = {}
    cpu = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "processor":
            try:
                cpu = int(value)
            except ValueError:
                cpu = None
        elif cpu is not None and (key == "cpu MHz" or (key == "clock" and value.endswith("MHz"))):
            try:
                out[cpu] = int(round(float(value.rstrip("MHz").strip())))
            except ValueError:
                pass
    return out


def _frequencies(cpus: List[int], cpuinfo: str) -> Tuple[Dict[str, int], Optional[str]]:
    freq: Dict[str, int] = {}
    for c in cpus:
        khz = read_text(f"/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq")
        if khz and khz.strip().isdigit():
            freq[str(c)] = int(khz.strip()) // 1000
    if freq:
        return freq, "cpufreq"
    mhz = _cpuinfo_mhz(cpuinfo)
    freq = {str(c): mhz[c] for c in cpus if c in mhz}
    return freq, ("cpuinfo" if freq else None)


def _cpu_config(cpus: List[int]) -> Tuple[Dict[str, str], Optional[str]]:
    config: Dict[str, str] = {}
    governors: List[str] = []
    for c in cpus:
        base = f"/sys/devices/system/cpu/cpu{c}/cpufreq/"
        parts = []
        driver = (read_text(base + "scaling_driver") or "").strip()
        if driver:
            parts.append(f"driver:{driver}")
        governor = (read_text(base + "scaling_governor") or "").strip()
        if governor:
            parts.append(f"governor:{governor}")
            if governor not in governors:
                governors.append(governor)
        if parts:
            config[str(c)] = ", ".join(parts)
    no_turbo = (read_text("/sys/devices/system/cpu/intel_pstate/no_turbo") or "").strip()
    if no_turbo in ("0", "1"):
        config["intel_pstate"] = "no turbo" if no_turbo == "1" else "turbo"
    boost = (read_text("/sys/devices/system/cpu/cpufreq/boost") or "").strip()
    if boost in ("0", "1"):
        config["boost"] = "on" if boost == "1" else "off"
    idle = (read_text("/sys/devices/system/cpu/cpuidle/current_driver") or "").strip()
    if idle:
        config["idle"] = idle
    return config, (", ".join(governors) or None)


def _versions() -> Dict[str, str]:
    v = {"mltools": __version__}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        v["numpy"] = numpy.__version__
    torch = sys.modules.get("torch")
    if torch is not None:
        v["torch"] = torch.__version__
        if getattr(torch.version, "cuda", None):
            v["cuda"] = torch.version.cuda
        try:
            if torch.backends.cudnn.is_available():
                v["cudnn"] = str(torch.backends.cudnn.version())
        except Exception:   # noqa: BLE001 - informative only
            pass
    return v


def collect_machine(*, gpus: Tuple[GpuState, ...] = (), gpu_note: Optional[str] = None) -> Machine:
    """This machine and its state now (call it once, just before measuring).

    ``gpus`` come from the caller (``mltools.shakeshake.telemetry.gpu_states``
    reads them through NVML), so describing a CPU benchmark's machine never
    touches a GPU driver."""
    from mltools.env.report import _collect_libc, _cpu_identity, _meminfo_bytes
    from mltools.numa.cpulist import format_cpulist

    cpuinfo = read_text("/proc/cpuinfo") or ""
    cpu = _cpu_identity(cpuinfo)
    online = os.sysconf("SC_NPROCESSORS_ONLN")
    try:
        usable = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = list(range(online))
    if cpu.isa_level:
        vector = ",".join(f for f in ("avx2", "avx512f") if f in cpu.flags) or "no AVX2"
        isa = f"x86-64-v{cpu.isa_level_runtime or cpu.isa_level} ({vector})"
    else:
        isa = cpu.architecture
    freq, freq_source = _frequencies(usable, cpuinfo)
    config, governor = _cpu_config(usable)
    load, runnable = load_average()
    libc = _collect_libc()
    mem = _meminfo_bytes(read_text("/proc/meminfo") or "", "MemTotal") or None
    return Machine(
        date=now_iso(), hostname=socket.gethostname(), platform=platform.platform(True, False),
        kernel=platform.release(), cpu_model_name=cpu.model_name, cpu_vendor=cpu.vendor,
        architecture=cpu.architecture, isa=isa, hypervisor=cpu.hypervisor, cpu_count=online,
        cpu_affinity=format_cpulist(usable), usable_cpus=len(usable), cpu_freq=freq,
        cpu_freq_source=freq_source, cpu_config=config, governor=governor, load_avg_1min=load,
        runnable_threads=runnable, memory_total_bytes=mem,
        python_implementation=platform.python_implementation(), python_version=platform.python_version(),
        python_executable=sys.executable,
        libc=f"{libc.name} {libc.version}" if libc.version else libc.name,
        versions=_versions(), gpus=tuple(gpus), gpu_note=gpu_note)


# What makes two machines different for a comparison, in the order a reader cares.
_COMPARED = (("cpu_model_name", "CPU"), ("isa", "ISA"), ("usable_cpus", "usable CPUs"), ("hypervisor", "hypervisor"),
             ("governor", "governor"), ("kernel", "kernel"), ("libc", "libc"), ("python_version", "Python"),
             ("hostname", "host"))


def machine_differences(a: Optional[dict], b: Optional[dict]) -> List[str]:
    """What differs between two machines (JSON dicts of :class:`Machine`), as short phrases
    ("CPU: AMD EPYC -> Intel Xeon"). Library versions and GPUs are compared too."""
    if not a or not b:
        return ["machine not recorded in " + ("both files" if not a and not b else "one file")]
    out = []
    for key, label in _COMPARED:
        va, vb = a.get(key), b.get(key)
        if va is not None and vb is not None and va != vb:
            out.append(f"{label}: {va} -> {vb}")
    ga = [g.get("name") for g in a.get("gpus") or ()]
    gb = [g.get("name") for g in b.get("gpus") or ()]
    if ga != gb:
        out.append(f"GPUs: {', '.join(ga) or 'none'} -> {', '.join(gb) or 'none'}")
    va, vb = a.get("versions") or {}, b.get("versions") or {}
    for lib in sorted(set(va) & set(vb)):
        if va[lib] != vb[lib]:
            out.append(f"{lib}: {va[lib]} -> {vb[lib]}")
    return out


def describe_machine() -> str:
    """One line naming the machine a measurement came from (every benchmark script prints it)."""
    return collect_machine().summary()
