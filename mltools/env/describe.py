"""Text for people of ``mltools env`` (its JSON is the dataclass itself)."""
from __future__ import annotations

from mltools._text import Table, findings_text, key_values

__all__ = ["render_env"]


def _gib(n) -> str:
    return f"{n / 2**30:.1f} GiB" if n else "-"


def render_env(r) -> str:
    cpu, mem = r.cpu, r.memory
    isa = f"x86-64-v{cpu.isa_level}" if cpu.isa_level else "-"
    if cpu.isa_level_runtime and cpu.isa_level_runtime != cpu.isa_level:
        isa += f" (runtime check: v{cpu.isa_level_runtime})"
    cores = f"{cpu.logical_cpus} logical, {cpu.usable_cpus} usable"
    if cpu.physical_cores:
        cores += f", {cpu.physical_cores} physical"
    if cpu.cgroup_cpu_limit:
        cores += f", cgroup quota {cpu.cgroup_cpu_limit:g}"
    sections = [key_values([
        ("mltools", r.mltools_version),
        ("python", f"{r.python.implementation} {r.python.version} ({r.python.executable})"
                   + (" in a virtualenv" if r.python.in_virtualenv else "")),
        ("os", f"{r.platform.get('os', r.platform['system'])}, kernel {r.platform['kernel']}"),
        ("cpu", f"{cpu.model_name or '-'} ({cpu.architecture}"
                + (f", family {cpu.family} model {cpu.model}" if cpu.family is not None else "") + ")"
                + (" under a hypervisor" if cpu.hypervisor else "")),
        ("isa level", isa),
        ("cores", cores + f", {cpu.packages} package(s)"),
        ("memory", f"{_gib(mem.total_bytes)} total, {_gib(mem.available_bytes)} available, "
                   f"swap {_gib(mem.swap_total_bytes)}, THP {mem.transparent_hugepages or '-'}"),
        ("numa nodes", ", ".join(f"{n.node}: cpus {n.cpus or '-'}" + (f", {_gib(n.memory_bytes)}" if n.memory_bytes else "")
                                 for n in r.numa_nodes) or "-"),
        ("libc", f"{r.libc.name} {r.libc.version or '-'}"),
        ("loader", r.libc.loader_path or "-"),
        ("numpy", r.numpy_version or "not installed"),
        ("gpus", "none (no nvidia-smi)" if r.nvidia_smi is None else (str(len(r.gpus)) if r.gpus else "none found by nvidia-smi")),
    ])]
    if r.gpus:
        t = Table(["gpu", "name", "driver", "memory MiB"], title="\nGPUs")
        for g in r.gpus:
            t.add(g.index, g.name, g.driver_version, g.memory_total_mib)
        sections.append(t.render())
    if r.runtimes:
        t = Table(["api", "library", "version", "threads", "path"], title="\nBLAS/OpenMP runtimes loaded with numpy")
        for lib in r.runtimes:
            t.add(lib.user_api, lib.internal_api if lib.user_api == "blas" else lib.prefix,
                  lib.version, lib.num_threads, lib.filepath)
        sections.append(t.render())
    if r.environment:
        sections.append(key_values(r.environment.items(), title="\nEnvironment"))
    else:
        sections.append("\nEnvironment: no LD_*, OMP_*, MKL_*, OPENBLAS_*, CUDA_* or PYTHONMALLOC variables set")
    if r.findings:
        sections.append("\nFindings\n" + findings_text(r.findings))
    return "\n".join(sections)
