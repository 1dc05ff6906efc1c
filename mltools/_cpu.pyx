# cython: language_level=3
"""Run-time CPU features as the C kernels see them (``csrc/cpu``)."""

cdef extern from "cpu_features.h":
    int mltools_x86_64_level() nogil
    int mltools_cpu_supports(const char *feature) nogil


def x86_64_level():
    """x86-64 psABI level 1..4 of this CPU with OS support; 0 off x86-64."""
    return mltools_x86_64_level()


def cpu_supports(str feature):
    """True/False for a known feature name; ValueError for an unknown one."""
    cdef bytes name = feature.encode("ascii")
    cdef int r = mltools_cpu_supports(name)
    if r < 0:
        raise ValueError(f"unknown CPU feature name: {feature!r}")
    return bool(r)
