# pyzmq 7a417e2f, fixed: an unsigned pointer-sized integer (pyzmq chose size_t).
cdef extern from *:
    """
    static int ctx_storage;
    static void *ctx_new(void) { return &ctx_storage; }
    """
    void* ctx_new()


cdef class Context:
    cdef void* handle

    def __cinit__(self, size_t shadow=0):
        if shadow:
            self.handle = <void*>shadow
        else:
            self.handle = ctx_new()

    @property
    def underlying(self):
        return <size_t>self.handle
