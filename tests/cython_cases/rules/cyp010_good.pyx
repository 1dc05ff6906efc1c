# CYP010 fixed: pointer-sized integers, judged by their declared names.
from libc.stdint cimport intptr_t, int64_t, uintptr_t
cimport numpy as cnp


def wide(int n):
    cdef void* p = &n
    cdef uintptr_t a = <uintptr_t>p
    cdef intptr_t b = <intptr_t>p
    cdef size_t c = <size_t>p
    cdef unsigned long long d = <unsigned long long>p
    # Cython declares int64_t and npy_intp as typedefs of long; the C headers make them 64 bits.
    cdef int64_t e = <int64_t>p
    cdef cnp.npy_intp f = <cnp.npy_intp>p
    return a + b + c + d + e + f + (<int>n)


def low_bits(int n):
    # Only the low bits of the address are used: truncation changes nothing.
    cdef void* p = &n
    return (<long>p % 16) + (<int>p & 7)
