# pyzmq 7a417e2f (zmq/backend/cython/context.pyx, socket.pyx): the native handle
# is exported and re-imported as a signed Py_ssize_t ("could result in
# OverflowErrors"): an address above PY_SSIZE_T_MAX does not survive.
cdef extern from *:
    """
    static int ctx_storage;
    static void *ctx_new(void) { return &ctx_storage; }
    """
    void* ctx_new()


cdef class Context:
    cdef void* handle

    def __cinit__(self, Py_ssize_t shadow=0):
        if shadow:
            self.handle = <void*>shadow  # expect-typed: CYP014@27
        else:
            self.handle = ctx_new()

    @property
    def underlying(self):
        return <Py_ssize_t>self.handle  # expect: CYP010@16
