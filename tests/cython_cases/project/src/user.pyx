from memdecl cimport Memory


def f(Memory m):
    cdef void* p = <void*>m.ptr
    return <size_t>p
