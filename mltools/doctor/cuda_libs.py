"""What mltools knows about NVIDIA's libraries: their names, the wheels that ship them, the driver's.

One table, used by the fixes (which wheel to install), the dlopen-name pass
(which names are worth resolving) and the version-skew check. The SONAME
majors do not follow the CUDA major (CUDA 12's cuFFT is ``libcufft.so.11``,
CUDA 13's cuSPARSE still ``libcusparse.so.12``, cuRAND is ``.so.10`` in all
three); the table is read from the installed wheels of each CUDA major.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional, Sequence, Tuple

__all__ = ["NvidiaLibrary", "nvidia_library", "is_driver_library", "cuda_majors_of", "wheel_names",
           "complete_name", "cuda_major_of_file", "stem_of"]


@dataclass(frozen=True)
class NvidiaLibrary:
    stem: str                           # libcufft
    component: str                      # the wheel's component name: cufft, cuda-runtime, cudnn
    soname_majors: Tuple[Tuple[int, str], ...]  # (CUDA major, SONAME version) pairs
    toolkit: bool = True                # part of the CUDA toolkit: CUDA 13 wheels drop the -cu13 suffix
    wheel_prefix: str = "nvidia-"       # cutensor's wheels are cutensor-cuXX

    def wheel(self, cuda_major: int) -> str:
        if self.toolkit and cuda_major >= 13:
            return f"{self.wheel_prefix}{self.component}"
        return f"{self.wheel_prefix}{self.component}-cu{cuda_major}"


def _t(stem, component, majors, **kw) -> NvidiaLibrary:
    return NvidiaLibrary(stem, component, tuple(sorted(majors.items())), **kw)


_LIBS = (
    _t("libcudart", "cuda-runtime", {11: "11.0", 12: "12", 13: "13"}),
    _t("libcublas", "cublas", {11: "11", 12: "12", 13: "13"}),
    _t("libcublasLt", "cublas", {11: "11", 12: "12", 13: "13"}),
    _t("libnvblas", "cublas", {11: "11", 12: "12", 13: "13"}),
    _t("libcufft", "cufft", {11: "10", 12: "11", 13: "12"}),
    _t("libcufftw", "cufft", {11: "10", 12: "11", 13: "12"}),
    _t("libcurand", "curand", {11: "10", 12: "10", 13: "10"}),
    _t("libcusolver", "cusolver", {11: "11", 12: "11", 13: "12"}),
    _t("libcusolverMg", "cusolver", {11: "11", 12: "11", 13: "12"}),
    _t("libcusparse", "cusparse", {11: "11", 12: "12", 13: "12"}),
    _t("libnvrtc", "cuda-nvrtc", {11: "11", 12: "12", 13: "13"}),
    _t("libnvrtc-builtins", "cuda-nvrtc", {11: "11", 12: "12", 13: "13"}),
    _t("libnvJitLink", "nvjitlink", {12: "12", 13: "13"}),
    _t("libcupti", "cuda-cupti", {11: "11", 12: "12", 13: "13"}),
    _t("libnvperf_host", "cuda-cupti", {}),
    _t("libnvperf_target", "cuda-cupti", {}),
    _t("libnvToolsExt", "nvtx", {11: "1", 12: "1", 13: "1"}),
    _t("libnvfatbin", "nvfatbin", {12: "12", 13: "13"}),
    _t("libnvjpeg", "nvjpeg", {11: "11", 12: "12", 13: "13"}),
    _t("libcufile", "cufile", {12: "0", 13: "0"}),
    _t("libcufile_rdma", "cufile", {12: "1", 13: "1"}),
    _t("libcudnn", "cudnn", {11: "8", 12: "9", 13: "9"}, toolkit=False),
    _t("libnccl", "nccl", {11: "2", 12: "2", 13: "2"}, toolkit=False),
    _t("libnvshmem_host", "nvshmem", {12: "3", 13: "3"}, toolkit=False),
    _t("libcusparseLt", "cusparselt", {12: "0", 13: "0"}, toolkit=False),
    _t("libcutensor", "", {11: "2", 12: "2", 13: "2"}, toolkit=False, wheel_prefix="cutensor"),
    _t("libcutensorMg", "", {11: "2", 12: "2", 13: "2"}, toolkit=False, wheel_prefix="cutensor"),
)
_BY_STEM: Dict[str, NvidiaLibrary] = {lib.stem: lib for lib in _LIBS}
# cuDNN's sub-libraries (libcudnn_ops, libcudnn_engines_precompiled, ...) come with libcudnn
_CUDNN_PART = re.compile(r"^libcudnn_[a-z_]+$")
_STEM = re.compile(r"^(lib[A-Za-z0-9_+\-]+?)(?:\.alt)?\.so(?:\.|$)")

# The NVIDIA driver's user-space libraries for compute: installed with the driver (or
# mounted into a container by the NVIDIA container toolkit), never by pip. (CUPTI also
# names the graphics ones, libnvidia-glcore, libnvoptix, ...: not what CUDA needs.)
_DRIVER = re.compile(r"^lib(cuda|nvidia-ml|nvidia-ptxjitcompiler|nvidia-nvvm|nvidia-tileiras|cudadebugger)"
                     r"\.so(\.\d+)*$")


def stem_of(name: str) -> Optional[str]:
    """``libcublasLt.so.13`` -> ``libcublasLt``; ``libnvrtc.alt.so.13`` -> ``libnvrtc``."""
    m = _STEM.match(os.path.basename(name))
    return m.group(1) if m else None


def nvidia_library(name: str) -> Optional[NvidiaLibrary]:
    """The table entry for a library name (any version suffix), None for anything else."""
    stem = stem_of(name)
    if stem is None:
        return None
    hit = _BY_STEM.get(stem)
    if hit is None and _CUDNN_PART.match(stem):
        cudnn = _BY_STEM["libcudnn"]
        return NvidiaLibrary(stem, cudnn.component, cudnn.soname_majors, toolkit=False)
    return hit


def is_driver_library(name: str) -> bool:
    """``libcuda.so.1``, ``libnvidia-ml.so.1``, ``libnvidia-ptxjitcompiler.so.1``, ..."""
    return _DRIVER.match(os.path.basename(name)) is not None


def _version_of(name: str, stem: str) -> Optional[str]:
    base = os.path.basename(name).replace(".alt.so", ".so")
    rest = base[len(stem):]
    if not rest.startswith(".so"):
        return None
    return rest[4:] if rest.startswith(".so.") else ""


def cuda_majors_of(name: str) -> FrozenSet[int]:
    """The CUDA majors whose wheels ship a library of this name (empty when unknown)."""
    lib = nvidia_library(name)
    if lib is None:
        return frozenset()
    version = _version_of(name, lib.stem)
    if not version:
        return frozenset()
    return frozenset(cuda for cuda, v in lib.soname_majors
                     if version == v or version.startswith(v + "."))


def wheel_names(name: str, cuda_major: Optional[int] = None) -> Tuple[str, ...]:
    """The pip wheels that ship ``name``: the one for ``cuda_major`` when given and possible,
    else one per CUDA major its SONAME fits."""
    lib = nvidia_library(name)
    if lib is None:
        return ()
    majors = cuda_majors_of(name) or frozenset(c for c, _ in lib.soname_majors)
    if cuda_major is not None and (cuda_major in majors or not majors):
        return (lib.wheel(cuda_major),)
    return tuple(lib.wheel(c) for c in sorted(majors))


def complete_name(stem_name: str, holder_soname: Optional[str]) -> Optional[str]:
    """A stem found in a library's data, as its holder completes it: cuDNN opens
    ``libcudnn_ops.so`` as ``libcudnn_ops.so.<its own major>``."""
    if not stem_name.endswith(".so") or not holder_soname:
        return None
    major = holder_soname.rsplit(".so.", 1)[-1].split(".")[0] if ".so." in holder_soname else ""
    if not major.isdigit():
        return None
    holder = nvidia_library(holder_soname)
    named = nvidia_library(stem_name)
    # cuDNN's sub-libraries share its major (libcudnn_ops.so.9); other families do not
    # (libcufile.so.0 opens libcufile_rdma.so.1), so their stems are not completed
    if holder is None or named is None or holder.component != named.component or named.component != "cudnn":
        return None
    return f"{stem_name}.{major}"


_CU_DIR = re.compile(r"/nvidia/cu(\d+)/")
_CU_SUFFIX = re.compile(r"-cu(?:da)?(\d+)x?$")      # nvidia-cudnn-cu13, cupy-cuda12x


def cuda_major_of_file(path: str, needed: Sequence[str] = (), package_name: Optional[str] = None) -> Optional[int]:
    """The CUDA major a library belongs to: its wheel directory (``nvidia/cu13/lib``), its
    wheel's ``-cuNN`` suffix, or the CUDA libraries it needs (``libcudart.so.12``)."""
    m = _CU_DIR.search(path)
    if m:
        return int(m.group(1))
    if package_name:
        m = _CU_SUFFIX.search(package_name.lower())
        if m:
            return int(m.group(1))
    votes = set()
    for n in needed:
        majors = cuda_majors_of(n)
        if len(majors) == 1:
            votes |= majors
    return votes.pop() if len(votes) == 1 else None

