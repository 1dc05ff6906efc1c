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
    isa: Optional["IsaSummary"] = None     # the CPU-instruction pass (None when not run)
    targets: Tuple["TargetCheck", ...] = ()   # --target machines the versioned needs were judged for
    facts: Optional["NodeFacts"] = None    # this machine and environment, for `doctor diff` (environment checks)
