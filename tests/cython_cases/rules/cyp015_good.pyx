# CYP015 fixed: no round trip, or one through uintptr_t.
from libc.stdint cimport uintptr_t
cimport numpy as cnp


def first_byte(cnp.ndarray x not None):
    cdef char* p = cnp.PyArray_BYTES(x)
    return p[0]


def shifted(int n):
    cdef void* p = &n
    return <size_t><char*><uintptr_t>p
