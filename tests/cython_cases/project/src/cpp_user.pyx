cdef extern from *:
    """
    struct Box { int size() { return 1; } };
    """
    cdef cppclass Box:
        int size()


def f(x):
    cdef Box b
    cdef void* p = <void*>x.ptr
    return <size_t>p + b.size()
