"""Collect the facts every native-debugging hunt starts with.

Sources are the kernel's own files (/proc, /sys), ``os.confstr``/``os.sysconf``,
the maps of this very process (which loader and libc are really mapped),
threadpoolctl (which BLAS/OpenMP runtimes numpy loaded) and ``nvidia-smi`` when
it exists. Nothing here prints; the CLI renders the returned ``EnvReport``.
"""
from __future__ import annotations

import os
import platform
import re
import sys
from dataclasses import dataclass, field
from typing import ClassVar, Dict, FrozenSet, List, Mapping, NamedTuple, Optional, Tuple

from mltools import __version__
from mltools._sysfs import cpuinfo_fields, isa_level_from_flags, read_text, usable_cpus
from mltools.findings import Finding, Severity

# Variables worth showing: the loader's, the allocator's, and the thread-count
# and device knobs of the numeric runtimes.
ENV_PREFIXES = ("LD_", "OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "BLIS_", "CUDA_",
                "NCCL_", "PYTORCH_", "MALLOC_")
ENV_NAMES = ("PYTHONMALLOC", "PYTHONPATH", "PYTHONHOME", "GLIBC_TUNABLES", "NVIDIA_VISIBLE_DEVICES")
THREAD_COUNT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "BLIS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")

@dataclass(frozen=True)
class PythonInfo:
    version: str
    implementation: str
    executable: str
    prefix: str
    in_virtualenv: bool


@dataclass(frozen=True)
class CpuInfo:
    model_name: Optional[str]
    vendor: Optional[str]
    family: Optional[int]
    model: Optional[int]
    stepping: Optional[int]
    architecture: str
    isa_level: Optional[int]          # from /proc/cpuinfo flags (x86-64 only)
    isa_level_runtime: Optional[int]  # from the compiled __builtin_cpu_supports check
    logical_cpus: int                 # online CPUs
    usable_cpus: int                  # in this process's affinity mask
    physical_cores: Optional[int]
    packages: int
    hypervisor: bool
    cgroup_cpu_limit: Optional[float]  # cpu.max quota/period, None when unlimited


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    available_bytes: int
    swap_total_bytes: int
    transparent_hugepages: Optional[str]   # the bracketed mode of THP "enabled"


@dataclass(frozen=True)
class NumaNodeInfo:
    node: int
    cpus: str
    memory_bytes: Optional[int]


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    driver_version: str
    memory_total_mib: Optional[int]
    uuid: str
    compute_capability: Optional[str] = None    # "9.0" (nvidia-smi 510 and later report it)


@dataclass(frozen=True)
class LibcInfo:
    name: str                       # "glibc" or what confstr says
    version: Optional[str]
    loader_path: Optional[str]      # the dynamic loader mapped into this process
    libc_path: Optional[str]


@dataclass(frozen=True)
class RuntimeLibrary:
    """One BLAS or OpenMP runtime loaded in this process (threadpoolctl)."""
    user_api: str                   # "blas" or "openmp"
    internal_api: str               # openblas, mkl, blis, openmp (gnu/intel/llvm by prefix)
    prefix: str
    filepath: str
    version: Optional[str]
    num_threads: int
    threading_layer: Optional[str]
    architecture: Optional[str]


@dataclass(frozen=True)
class EnvReport:
    SCHEMA: ClassVar[str] = "mltools.env"
    SCHEMA_VERSION: ClassVar[int] = 1

    mltools_version: str
    python: PythonInfo
    platform: Dict[str, str]
    cpu: CpuInfo
    memory: MemoryInfo
    numa_nodes: Tuple[NumaNodeInfo, ...]
    gpus: Tuple[GpuInfo, ...]
    nvidia_smi: Optional[str]
    libc: LibcInfo
    numpy_version: Optional[str]
    runtimes: Tuple[RuntimeLibrary, ...]
    environment: Dict[str, str]
    findings: Tuple[Finding, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- readers

def cpu_model_name() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (what every benchmark figure names)."""
    fields = cpuinfo_fields(read_text("/proc/cpuinfo") or "")
    return fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()


def _int_or_none(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _cgroup_cpu_limit() -> Optional[float]:
    """CPUs allowed by the cgroup v2 quota of this process (``cpu.max``), None if unlimited."""
    for line in (read_text("/proc/self/cgroup") or "").splitlines():
        if not line.startswith("0::"):
            continue
        rel = line[3:].strip().lstrip("/")
        text = read_text(os.path.join("/sys/fs/cgroup", rel, "cpu.max")) or read_text("/sys/fs/cgroup/cpu.max")
        parts = (text or "").split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                return int(parts[0]) / int(parts[1])
            except (ValueError, ZeroDivisionError):
                return None
    return None


class _CpuIdentity(NamedTuple):
    """What /proc/cpuinfo's text and the running CPU say about the CPU (no counts, no cgroup)."""
    model_name: Optional[str]
    vendor: Optional[str]
    family: Optional[int]
    model: Optional[int]
    stepping: Optional[int]
    architecture: str
    isa_level: Optional[int]
    isa_level_runtime: Optional[int]
    hypervisor: bool
    flags: FrozenSet[str]


def _cpu_identity(text: str) -> _CpuIdentity:
    """The CPU as ``text`` (/proc/cpuinfo) and the compiled ISA check describe it."""
    fields = cpuinfo_fields(text)
    flags = frozenset(fields.get("flags", "").split())
    arch = platform.machine()
    is_x86 = arch in ("x86_64", "AMD64")
    level = isa_level_from_flags(flags) if is_x86 and flags else None
    runtime_level = None
    if is_x86:
        try:
            from mltools import _cpu  # compiled; absent only in a broken build
            runtime_level = _cpu.x86_64_level()
        except ImportError:
            runtime_level = None
    return _CpuIdentity(
        model_name=fields.get("model name") or fields.get("Model") or None,
        vendor=fields.get("vendor_id") or fields.get("CPU implementer"),
        family=_int_or_none(fields.get("cpu family")),
        model=_int_or_none(fields.get("model")),
        stepping=_int_or_none(fields.get("stepping")),
        architecture=arch,
        isa_level=level,
        isa_level_runtime=runtime_level,
        hypervisor="hypervisor" in flags,
        flags=flags,
    )


def _collect_cpu() -> CpuInfo:
    text = read_text("/proc/cpuinfo") or ""
    ident = _cpu_identity(text)
    packages = {m.group(1) for m in re.finditer(r"^physical id\s*:\s*(\d+)", text, re.M)}
    try:
        import psutil
        physical = psutil.cpu_count(logical=False)
    except Exception:  # psutil can fail in odd containers; the rest still stands
        physical = None
    usable = usable_cpus()
    return CpuInfo(
        model_name=ident.model_name,
        vendor=ident.vendor,
        family=ident.family,
        model=ident.model,
        stepping=ident.stepping,
        architecture=ident.architecture,
        isa_level=ident.isa_level,
        isa_level_runtime=ident.isa_level_runtime,
        logical_cpus=os.sysconf("SC_NPROCESSORS_ONLN"),
        usable_cpus=usable,
        physical_cores=physical,
        packages=max(1, len(packages)),
        hypervisor=ident.hypervisor,
        cgroup_cpu_limit=_cgroup_cpu_limit(),
    )


def _meminfo_bytes(text: str, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+)\s*kB", text, re.M)
    return int(m.group(1)) * 1024 if m else 0


def _collect_memory() -> MemoryInfo:
    text = read_text("/proc/meminfo") or ""
    thp = read_text("/sys/kernel/mm/transparent_hugepage/enabled")
    mode = None
    if thp:
        m = re.search(r"\[(\w+)\]", thp)
        mode = m.group(1) if m else thp.strip()
    return MemoryInfo(
        total_bytes=_meminfo_bytes(text, "MemTotal"),
        available_bytes=_meminfo_bytes(text, "MemAvailable"),
        swap_total_bytes=_meminfo_bytes(text, "SwapTotal"),
        transparent_hugepages=mode,
    )


def _collect_numa(root: str = "/sys/devices/system/node") -> Tuple[NumaNodeInfo, ...]:
    nodes = []
    try:
        names = os.listdir(root)
    except OSError:
        return ()
    for name in names:
        m = re.fullmatch(r"node(\d+)", name)
        if not m:
            continue
        cpus = (read_text(os.path.join(root, name, "cpulist")) or "").strip()
        mem = _meminfo_bytes_node(read_text(os.path.join(root, name, "meminfo")) or "")
        nodes.append(NumaNodeInfo(int(m.group(1)), cpus, mem))
    return tuple(sorted(nodes, key=lambda n: n.node))


def _meminfo_bytes_node(text: str) -> Optional[int]:
    m = re.search(r"MemTotal:\s+(\d+)\s*kB", text)
    return int(m.group(1)) * 1024 if m else None


def collect_gpus() -> Tuple[Optional[str], Tuple[GpuInfo, ...]]:
    """(the nvidia-smi used, the GPUs it lists with their compute capability); (None, ()) without one."""
    from mltools import _proc

    smi = _proc.which("nvidia-smi")
    if smi is None:
        return None, ()
    fields = "index,name,driver_version,memory.total,uuid"
    res = None
    # compute_cap is known to nvidia-smi from driver 510 on; older ones reject the whole query
    for query in (fields + ",compute_cap", fields):
        try:
            res = _proc.run([smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"], timeout=20, lc_all_c=True)
        except Exception:  # a broken driver must not break the report
            return smi, ()
        if res.returncode == 0 and not res.timed_out:
            break
    if res is None or res.returncode != 0 or res.timed_out:
        return smi, ()
    gpus = []
    for line in res.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        cc = parts[5] if len(parts) > 5 and re.fullmatch(r"\d+\.\d+", parts[5]) else None
        gpus.append(GpuInfo(int(parts[0]), parts[1], parts[2], _int_or_none(parts[3]), parts[4], cc))
    return smi, tuple(gpus)


def _mapped_files(maps_text: str) -> List[str]:
    seen: List[str] = []
    for line in maps_text.splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/") and parts[5] not in seen:
            seen.append(parts[5])
    return seen


def _collect_libc() -> LibcInfo:
    try:
        conf = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):
        conf = ""
    name, _, version = conf.partition(" ")
    mapped = _mapped_files(read_text("/proc/self/maps") or "")
    loader = next((p for p in mapped if re.search(r"/ld-linux[^/]*\.so|/ld64\.so|/ld-musl", p)), None)
    libc = next((p for p in mapped if re.search(r"/libc\.so\.\d|/libc-[\d.]+\.so", p)), None)
    return LibcInfo(name or "unknown", version or None, loader, libc)


def _collect_runtimes() -> Tuple[Optional[str], Tuple[RuntimeLibrary, ...]]:
    """numpy's version and the BLAS/OpenMP runtimes loaded once numpy is imported."""
    try:
        import numpy
    except ImportError:
        return None, ()
    try:
        from threadpoolctl import threadpool_info
        infos = threadpool_info()
    except Exception:
        infos = []
    libs = []
    for info in infos:
        libs.append(RuntimeLibrary(
            user_api=str(info.get("user_api", "")),
            internal_api=str(info.get("internal_api", "")),
            prefix=str(info.get("prefix", "")),
            filepath=str(info.get("filepath", "")),
            version=info.get("version"),
            num_threads=int(info.get("num_threads") or 0),
            threading_layer=info.get("threading_layer"),
            architecture=info.get("architecture"),
        ))
    return numpy.__version__, tuple(libs)


def _platform_facts() -> Dict[str, str]:
    facts = {"system": platform.system(), "kernel": platform.release(), "machine": platform.machine()}
    osrel = read_text("/etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', osrel, re.M)
    if m:
        facts["os"] = m.group(1)
    return facts


def _interesting_environment(environ: Mapping[str, str]) -> Dict[str, str]:
    return {k: environ[k] for k in sorted(environ)
            if k.startswith(ENV_PREFIXES) or k in ENV_NAMES}


# --------------------------------------------------------------------------- traps

def environment_findings(environ: Mapping[str, str], usable_cpus: int,
                         runtimes: Tuple[RuntimeLibrary, ...] = ()) -> Tuple[Finding, ...]:
    """Known traps in the environment variables (and loaded runtimes) of a process."""
    out: List[Finding] = []
    llp = environ.get("LD_LIBRARY_PATH")
    if llp is not None:
        elements = re.split(r"[:;]", llp)
        empty_at = [i + 1 for i, e in enumerate(elements) if e == ""]
        if empty_at:
            out.append(Finding(
                "LD_LIBRARY_PATH_EMPTY_ELEMENT", Severity.WARNING,
                f"LD_LIBRARY_PATH={llp!r} has an empty element (position "
                f"{', '.join(map(str, empty_at))}): the loader searches the current directory there",
                fix="remove the leading, trailing or doubled ':' from LD_LIBRARY_PATH",
                details={"positions": empty_at}))
        for e in elements:
            if e and not e.startswith("/") and "$" not in e:
                out.append(Finding(
                    "LD_LIBRARY_PATH_RELATIVE", Severity.WARNING,
                    f"LD_LIBRARY_PATH element {e!r} is relative: it depends on the current directory",
                    fix="use absolute directories in LD_LIBRARY_PATH", details={"element": e}))
            elif e.startswith("/") and not os.path.isdir(e):
                out.append(Finding(
                    "LD_LIBRARY_PATH_MISSING_DIR", Severity.INFO,
                    f"LD_LIBRARY_PATH element {e} is not a directory",
                    fix="drop it from LD_LIBRARY_PATH", details={"element": e}))
    preload = environ.get("LD_PRELOAD")
    if preload:
        items = [p for p in re.split(r"[ :]", preload) if p]
        out.append(Finding(
            "LD_PRELOAD_SET", Severity.WARNING,
            f"LD_PRELOAD is set ({preload}): every program started from this environment loads it first",
            fix="unset LD_PRELOAD unless you mean it for every child process", details={"items": items}))
        for item in items:
            if "/" in item and not os.path.exists(item):
                out.append(Finding(
                    "LD_PRELOAD_MISSING", Severity.WARNING,
                    f"LD_PRELOAD names {item}, which does not exist: the loader prints an error for every program",
                    fix="fix or remove that LD_PRELOAD entry", details={"item": item}))
    for name in ("LD_AUDIT", "LD_DEBUG", "LD_PROFILE"):
        if environ.get(name):
            out.append(Finding(
                f"{name}_SET", Severity.INFO,
                f"{name}={environ[name]} is set: it changes or slows down every dynamically linked program",
                fix=f"unset {name} when not debugging the loader"))
    pm = environ.get("PYTHONMALLOC")
    if pm:
        slow = pm.endswith("_debug") or pm == "debug"
        out.append(Finding(
            "PYTHONMALLOC_SET", Severity.WARNING if slow else Severity.INFO,
            f"PYTHONMALLOC={pm}: " + ("debug hooks make every allocation slower"
                                     if slow else "Python's small-object allocator is replaced"),
            fix="unset PYTHONMALLOC outside debugging sessions"))
    for name in THREAD_COUNT_VARS:
        value = environ.get(name)
        if value is None:
            continue
        first = value.split(",")[0].strip()
        if not first.isdigit() or int(first) < 1:
            out.append(Finding(
                "THREAD_COUNT_INVALID", Severity.WARNING,
                f"{name}={value!r} is not a positive integer: runtimes ignore it or fail",
                fix=f"set {name} to a number of threads, e.g. {usable_cpus}", details={"variable": name}))
        elif int(first) > usable_cpus:
            out.append(Finding(
                "THREAD_OVERSUBSCRIPTION", Severity.WARNING,
                f"{name}={first} exceeds the {usable_cpus} CPUs this process may use: threads will contend",
                fix=f"set {name} to at most {usable_cpus}", details={"variable": name}))
    if environ.get("KMP_DUPLICATE_LIB_OK", "").upper() in ("TRUE", "1", "YES"):
        out.append(Finding(
            "KMP_DUPLICATE_LIB_OK", Severity.WARNING,
            "KMP_DUPLICATE_LIB_OK is set: it hides two OpenMP runtimes in one process, which can crash or give wrong results",
            fix="find the second OpenMP runtime (mltools doctor) and remove it; then unset the variable"))
    if environ.get("CUDA_VISIBLE_DEVICES") is not None and environ["CUDA_VISIBLE_DEVICES"].strip() in ("", "-1"):
        out.append(Finding(
            "CUDA_DEVICES_HIDDEN", Severity.INFO,
            "CUDA_VISIBLE_DEVICES hides every GPU from CUDA programs",
            fix="unset CUDA_VISIBLE_DEVICES or list the GPUs to use"))
    openmp = sorted({r.filepath for r in runtimes if r.user_api == "openmp"})
    if len(openmp) > 1:
        out.append(Finding(
            "DUP_OPENMP_LOADED", Severity.WARNING,
            f"{len(openmp)} OpenMP runtimes are loaded in this process: {', '.join(openmp)}",
            fix="make all packages use one OpenMP runtime", details={"paths": openmp}))
    return tuple(out)


def collect_env(environ: Optional[Mapping[str, str]] = None, *, with_numpy: bool = True) -> EnvReport:
    """Report on this machine and this process."""
    environ = dict(os.environ if environ is None else environ)
    cpu = _collect_cpu()
    numpy_version, runtimes = _collect_runtimes() if with_numpy else (None, ())
    smi, gpus = collect_gpus()
    findings = environment_findings(environ, cpu.usable_cpus, runtimes)
    if cpu.isa_level is not None and cpu.isa_level_runtime is not None and cpu.isa_level != cpu.isa_level_runtime:
        findings += (Finding(
            "ISA_LEVEL_DISAGREES", Severity.INFO,
            f"/proc/cpuinfo flags say x86-64-v{cpu.isa_level} but the CPU check of the compiler "
            f"runtime says v{cpu.isa_level_runtime} (a hypervisor may mask features)"),)
    return EnvReport(
        mltools_version=__version__,
        python=PythonInfo(
            version=platform.python_version(),
            implementation=platform.python_implementation(),
            executable=sys.executable,
            prefix=sys.prefix,
            in_virtualenv=sys.prefix != getattr(sys, "base_prefix", sys.prefix),
        ),
        platform=_platform_facts(),
        cpu=cpu,
        memory=_collect_memory(),
        numa_nodes=_collect_numa(),
        gpus=gpus,
        nvidia_smi=smi,
        libc=_collect_libc(),
        numpy_version=numpy_version,
        runtimes=runtimes,
        environment=_interesting_environment(environ),
        findings=findings,
    )
