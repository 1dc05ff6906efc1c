from not_installed_pkg cimport Thing


def through_missing_type(Thing t):
    cdef void* p = <void*>t.ptr
    return <size_t>p
