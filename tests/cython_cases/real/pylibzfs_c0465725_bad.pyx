# py-libzfs c0465725 (libzfs.pyx, PR #50): a const char* taken from a property
# that builds a new str on each read; the str is gone before the C call.
# cython: c_string_type=unicode, c_string_encoding=utf8
cdef extern from *:
    """
    static int device_detach(const char *path) { return path[0]; }
    """
    int device_detach(const char* path) nogil


cdef class Device:
    cdef dict config

    @property
    def path(self):
        return "/dev/" + self.config["name"]

    def detach(self):
        cdef const char* path = self.path  # expect-typed: CYP020@9
        cdef int rv
        with nogil:
            rv = device_detach(path)
        return rv
