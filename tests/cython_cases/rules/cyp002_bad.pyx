# CYP002: .data of an untyped array is a buffer object, not its memory.
from libc.string cimport memcpy


def void_data(arr):
    cdef void* p = <void*>arr.data  # expect: CYP002@20
    return <size_t>p


def double_through_void(arr):
    cdef double* p = <double*><void*>arr.data  # expect: CYP002@31
    return p[0]


def char_from_data(arr):
    cdef char* p = arr.data  # expect: CYP002@20
    return p[0]


def copy_into(arr, const char* src, size_t n):
    memcpy(<void*>arr.data, src, n)  # expect: CYP002@12


def local_array(n):
    import numpy as np
    out = np.empty(n)
    cdef char* p
    p = out.data  # expect: CYP002@9
    return p[0]
