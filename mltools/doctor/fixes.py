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

def install_hint(soname: str, cuda_major: Optional[str] = None) -> Optional[str]:
    """The install command that provides ``soname``, when mltools knows one."""
    from mltools.doctor.cuda_libs import cuda_majors_of, is_driver_library, nvidia_library, wheel_names

    if is_driver_library(soname):
        return (f"{soname} comes with the NVIDIA driver, not with pip: install the driver "
                "(in a container, start it with the NVIDIA container toolkit, e.g. docker run --gpus all)")
    if nvidia_library(soname) is not None:
        want = int(cuda_major) if cuda_major and str(cuda_major).isdigit() else None
        wheels = wheel_names(soname, want)
        majors = sorted(cuda_majors_of(soname)) if want is None else [want]
        if len(wheels) == 1:
            return f"pip install {wheels[0]}" + (f"   (CUDA {majors[0]})" if len(majors) == 1 else "")
        if wheels:
            listed = ", ".join(map(str, majors[:-1])) + f" and {majors[-1]}" if len(majors) > 1 else str(majors[0])
            return (f"pip install {' or '.join(wheels)} (the one for your CUDA major: "
                    f"{soname} is the name in CUDA {listed})")
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
                        cuda_major: Optional[str] = None, required: Optional[str] = None) -> str:
    """One line: what makes ``soname`` loadable for the module that needs it.

    ``required``: the requirement (``nvidia-cudnn-cu13==9.24.0.43``) of the
    needer's package that ships it, when there is one: installing that is the fix.
    """
    if required:
        return f"pip install '{required}' (required by {needer_owner.name if needer_owner else 'its package'})"
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
