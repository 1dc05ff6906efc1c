# CYP002 fixed: a typed memoryview, a typed ndarray, or the ctypes address.
cimport numpy as cnp
from libc.stdint cimport uintptr_t

cnp.import_array()


def memoryview_pointer(double[::1] v not None):
    cdef double* p = &v[0]
    return p[0]


def typed_ndarray(cnp.ndarray arr not None):
    cdef double* p = <double*>arr.data
    cdef void* q = cnp.PyArray_DATA(arr)
    return p[0] + (<double*>q)[0]


def from_ctypes(arr):
    cdef double* p = <double*><uintptr_t>arr.ctypes.data
    return p[0]


def bytes_like(b):
    cdef char* p = b
    return p[0]
