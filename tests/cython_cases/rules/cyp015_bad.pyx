# CYP015: a pointer converted to an integer and back through a type other than (u)intptr_t.
cimport numpy as cnp


def first_byte(cnp.ndarray x not None):
    cdef char* p = <char*><size_t>cnp.PyArray_DATA(x)  # expect-typed: CYP015@20
    return p[0]


def shifted(int n):
    cdef void* p = &n
    return <size_t><char*><unsigned long long>p  # expect-typed: CYP015@20
