def f(a):
    cdef void* p = <void*>a.ptr
    return (p +
