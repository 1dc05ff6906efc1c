"""What to do about a missing library: the pip wheel or Debian package that ships it.

A small table of the libraries ML environments miss most often. Anything else
gets a generic answer that still names the owner of the module that needs it.
"""
from __future__ import annotations

import re
from typing import Optional

from mltools.doctor.owners import Owner

# soname regex -> Debian package (bookworm names)
_APT = (
    (r"^libgomp\.so\.1$", "libgomp1"),
    (r"^libstdc\+\+\.so\.6$", "libstdc++6"),
    (r"^libgcc_s\.so\.1$", "libgcc-s1"),
    (r"^libgfortran\.so\.5$", "libgfortran5"),
    (r"^libquadmath\.so\.0$", "libquadmath0"),
    (r"^libopenblas\.so\.0$", "libopenblas0"),
    (r"^libblas\.so\.3$", "libblas3"),
    (r"^liblapack\.so\.3$", "liblapack3"),
    (r"^libomp\.so\.5$", "libomp5"),
    (r"^lib(ssl|crypto)\.so\.3$", "libssl3"),
    (r"^libffi\.so\.8$", "libffi8"),
    (r"^libz\.so\.1$", "zlib1g"),
    (r"^libGL\.so\.1$", "libgl1"),
    (r"^libEGL\.so\.1$", "libegl1"),
    (r"^lib(glib|gthread|gobject)-2\.0\.so\.0$", "libglib2.0-0"),
    (r"^libSM\.so\.6$", "libsm6"),
    (r"^libICE\.so\.6$", "libice6"),
    (r"^libXext\.so\.6$", "libxext6"),
    (r"^libXrender\.so\.1$", "libxrender1"),
    (r"^libX11\.so\.6$", "libx11-6"),
    (r"^libnuma\.so\.1$", "libnuma1"),
    (r"^libaio\.so\.1$", "libaio1"),
    (r"^libjpeg\.so\.62$", "libjpeg62-turbo"),
    (r"^libpng16\.so\.16$", "libpng16-16"),
    (r"^libsndfile\.so\.1$", "libsndfile1"),
    (r"^libhdf5_serial\.so\.103$", "libhdf5-103-1"),
    (r"^libibverbs\.so\.1$", "libibverbs1"),
    (r"^librdmacm\.so\.1$", "librdmacm1"),
)
_APT_RX = tuple((re.compile(rx), pkg) for rx, pkg in _APT)

# NVIDIA's wheels: (library stem, wheel name for CUDA 11, 12, 13)
_NVIDIA = {
    "libcudart": ("nvidia-cuda-runtime-cu11", "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime"),
    "libcublas": ("nvidia-cublas-cu11", "nvidia-cublas-cu12", "nvidia-cublas"),
    "libcublasLt": ("nvidia-cublas-cu11", "nvidia-cublas-cu12", "nvidia-cublas"),
    "libcufft": ("nvidia-cufft-cu11", "nvidia-cufft-cu12", "nvidia-cufft"),
    "libcurand": ("nvidia-curand-cu11", "nvidia-curand-cu12", "nvidia-curand"),
    "libcusparse": ("nvidia-cusparse-cu11", "nvidia-cusparse-cu12", "nvidia-cusparse"),
    "libcusolver": ("nvidia-cusolver-cu11", "nvidia-cusolver-cu12", "nvidia-cusolver"),
    "libnvrtc": ("nvidia-cuda-nvrtc-cu11", "nvidia-cuda-nvrtc-cu12", "nvidia-cuda-nvrtc"),
    "libcupti": ("nvidia-cuda-cupti-cu11", "nvidia-cuda-cupti-cu12", "nvidia-cuda-cupti"),
    "libnvJitLink": (None, "nvidia-nvjitlink-cu12", "nvidia-nvjitlink"),
}
_CUDA_MAJOR_INDEX = {"11": 0, "12": 1, "13": 2}


def install_hint(soname: str, cuda_major: Optional[str] = None) -> Optional[str]:
    """The install command that provides ``soname``, when mltools knows one."""
    if soname == "libcuda.so.1":
        return ("libcuda.so.1 comes with the NVIDIA driver, not with pip: install the driver "
                "(in a container, start it with the NVIDIA container toolkit, e.g. docker run --gpus all)")
    m = re.match(r"^(lib[A-Za-z]+)\.so\.(\d+)", soname)
    if m and m.group(1) in _NVIDIA:
        wheels = _NVIDIA[m.group(1)]
        major = m.group(2) if m.group(1) in ("libcudart", "libcublas", "libcublasLt", "libcufft", "libcurand",
                                            "libcusparse", "libcusolver", "libnvrtc", "libcupti", "libnvJitLink") else None
        idx = _CUDA_MAJOR_INDEX.get(major or cuda_major or "")
        if idx is not None and wheels[idx]:
            return f"pip install {wheels[idx]}   (CUDA {major or cuda_major})"
    if soname.startswith("libcudnn"):
        suffix = {"11": "-cu11", "12": "-cu12", "13": "-cu13"}.get(cuda_major or "", "-cu12")
        return f"pip install nvidia-cudnn{suffix}   (use the -cuXX matching your CUDA)"
    if soname.startswith("libnccl"):
        suffix = {"11": "-cu11", "12": "-cu12", "13": "-cu13"}.get(cuda_major or "", "-cu12")
        return f"pip install nvidia-nccl{suffix}   (use the -cuXX matching your CUDA)"
    for rx, pkg in _APT_RX:
        if rx.match(soname):
            return f"apt-get install {pkg}"
    return None


def reinstall_hint(owner: Optional[Owner]) -> Optional[str]:
    if owner is None:
        return None
    if owner.manager == "pip":
        pin = f"=={owner.version}" if owner.version else ""
        return f"pip install --force-reinstall --no-deps {owner.name}{pin}"
    if owner.manager == "conda":
        return f"conda install --force-reinstall {owner.name}"
    if owner.manager == "dpkg":
        return f"apt-get install --reinstall {owner.name}"
    return None


def missing_library_fix(soname: str, needer_owner: Optional[Owner], near_miss_dir: Optional[str] = None,
                        cuda_major: Optional[str] = None) -> str:
    """One line: what makes ``soname`` loadable for the module that needs it."""
    hint = install_hint(soname, cuda_major)
    if near_miss_dir:
        first = f"it exists in {near_miss_dir}, which is not searched: add that directory to LD_LIBRARY_PATH " \
                f"(or run ldconfig if it is a system dir)"
        return first + (f"; or {hint}" if hint else "")
    if hint:
        return hint
    re_hint = reinstall_hint(needer_owner)
    if re_hint:
        return f"install the package that ships {soname}, or reinstall the module's package: {re_hint}"
    return f"install the package that ships {soname} (apt-file search {soname}), or add its directory to LD_LIBRARY_PATH"
