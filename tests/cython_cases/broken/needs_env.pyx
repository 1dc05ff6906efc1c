IF WITH_HANDLES:
    def f(h):
        cdef void* p = <void*>h.handle
        return <size_t>p
