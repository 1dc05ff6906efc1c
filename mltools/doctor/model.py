"""The doctor report: frozen dataclasses, JSON schema ``mltools.doctor``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, Optional, Tuple

from mltools.python import InterpreterInfo
from mltools.findings import Finding
from mltools.doctor.isa import IsaSummary
from mltools.doctor.targets import TargetCheck
from mltools.doctor.facts import NodeFacts


@dataclass(frozen=True)
class RuntimeCopy:
    """One copy of a runtime library that a process of this environment can load."""
    family: str                     # openmp, blas, libstdc++, cuda-runtime, cudnn, nccl, cublas, libc++
    implementation: str             # gnu, intel, llvm, openblas, mkl, blis, nvidia, ...
    major: Optional[str]
    soname: str                     # what the loader dedups on
    path: str
    package: Optional[str]          # "numpy 2.4.6" (pip), "libgomp1" (dpkg), None
    needed_by: Tuple[str, ...]      # the environment's ELF files whose NEEDED list names it


@dataclass(frozen=True)
class LoadedLibrary:
    """A library mapped during the dynamic pass (``--import``), in load order."""
    soname: str
    path: str
    package: Optional[str]
    loaded_by: Optional[str]        # the object whose NEEDED or dlopen brought it
    dlopened: bool
    runtime: Optional[str]          # "openmp/gnu", "cuda-runtime/12", ... when it is one
    extension_module: bool = False  # a Python extension module (the import system dlopens those)


@dataclass(frozen=True)
class DlopenLibrary:
    """An NVIDIA library a library of the environment opens by name at run time, resolved statically."""
    name: str                       # the name it passes to dlopen: libcudnn_engines_precompiled.so.9
    holder: str                     # the library that holds the name
    holder_package: Optional[str]
    path: Optional[str]             # the copy dlopen returns; None when not found
    package: Optional[str]
    via: Optional[str]              # ldtree's via, or "preload" (a framework mapped it by path first)
    how: str                        # in words: "preloaded by torch 2.14.1", "DT_RUNPATH of libcudnn_graph.so.9"
    context: Optional[str] = None   # the framework whose process it was resolved in


@dataclass(frozen=True)
class GpuTarget:
    """A GPU the GPU code is judged against."""
    name: str                       # "NVIDIA H100 80GB HBM3", or "sm_90" for --gpu-arch
    capability: Tuple[int, int]     # (9, 0)
    source: str                     # "nvidia-smi" or "--gpu-arch"
    variant: str = ""               # "a" / "f" for --gpu-arch sm_90a (as given)


@dataclass(frozen=True)
class PackageGpuCode:
    """The GPU code one package ships, summed over its files (fatbin headers only)."""
    package: str                    # "torch 2.14.1" or a directory when no package owns the files
    files: int                      # files with GPU code
    sass: Tuple[str, ...]           # sm_75, sm_80, ... (cubins)
    ptx: Tuple[str, ...]            # compute_90 (PTX, JIT-compiled by the driver)
    newest_ptx_isa: Optional[str]   # "9.0"
    summary: str                    # "sm_75-sm_121 + PTX compute_120"
    partial_files: Tuple[str, ...] = ()  # files that keep more GPU code outside .nv_fatbin (loaded by themselves)


@dataclass(frozen=True)
class DoctorReport:
    SCHEMA: ClassVar[str] = "mltools.doctor"
    SCHEMA_VERSION: ClassVar[int] = 1

    mltools_version: str
    python: InterpreterInfo
    scanned_dirs: Tuple[str, ...]
    elf_files: int
    extension_modules: int
    distributions: int
    runtimes: Tuple[RuntimeCopy, ...]
    imported: Tuple[str, ...]              # --import modules (empty: no dynamic pass)
    loaded: Tuple[LoadedLibrary, ...]      # the dynamic pass's libraries, in load order
    findings: Tuple[Finding, ...]          # worst first; details carry "path" and "package"
    fail_on: str
    failed: bool                           # a finding at or above fail_on exists
    timings_s: Dict[str, float] = field(default_factory=dict)
    scope: Tuple[str, ...] = ()            # checks that did not run, and why
    gpus: Tuple[GpuTarget, ...] = ()       # the GPUs found (or --gpu-arch) that GPU code is judged against
    gpu_code: Tuple[PackageGpuCode, ...] = ()   # per package: the SASS and PTX its files carry
    dlopens: Tuple[DlopenLibrary, ...] = ()     # NVIDIA libraries opened by name, as dlopen would resolve them
    environment: Dict[str, Optional[str]] = field(default_factory=dict)  # --env/--unset: variables changed
    isa: Optional["IsaSummary"] = None     # the CPU-instruction pass (None when not run)
    targets: Tuple["TargetCheck", ...] = ()   # --target machines the versioned needs were judged for
    facts: Optional["NodeFacts"] = None    # this machine and environment, for `doctor diff` (environment checks)
