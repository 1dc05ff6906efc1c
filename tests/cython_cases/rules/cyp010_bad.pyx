# CYP010: a pointer cast to a narrow integer.
from libc.stdint cimport int32_t


def narrow(int n):
    cdef void* p = &n
    cdef int a = <int>p  # expect: CYP010@18
    cdef unsigned int b = <unsigned int>p  # expect: CYP010@27
    cdef short c = <short>p  # expect: CYP010@20
    cdef int32_t d = <int32_t>p  # expect: CYP010@22
    return a + b + c + d
