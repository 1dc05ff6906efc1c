# CYP010 fixed: pointer-sized integers.
from libc.stdint cimport intptr_t, uintptr_t


def wide(int n):
    cdef void* p = &n
    cdef uintptr_t a = <uintptr_t>p
    cdef intptr_t b = <intptr_t>p
    cdef size_t c = <size_t>p
    cdef Py_ssize_t d = <Py_ssize_t>p
    return a + b + c + d + (<int>n)
