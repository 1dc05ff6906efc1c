# CYP010: a pointer kept in an integer that cannot hold it everywhere.
from libc.stdint cimport int32_t


def narrow(int n):
    cdef void* p = &n
    cdef int a = <int>p  # expect: CYP010@18
    cdef unsigned int b = <unsigned int>p  # expect: CYP010@27
    cdef short c = <short>p  # expect: CYP010@20
    cdef int32_t d = <int32_t>p  # expect: CYP010@22
    return a + b + c + d


def llp64(int n):
    # 64 bits on Linux and macOS, 32 bits on 64-bit Windows (MXNet, pyjnius).
    cdef void* p = &n
    cdef long a = <long>p  # expect: CYP010@19
    cdef unsigned long b = <unsigned long>p  # expect: CYP010@28
    return a + b


def signed_size(int n):
    # Pointer-sized but signed: a high address comes back negative (pyzmq).
    cdef void* p = &n
    return <Py_ssize_t>p  # expect: CYP010@12
