# py-libzfs c0465725, fixed: a local holds the str while C reads it.
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
        path = self.path
        cdef const char* c_path = path
        cdef int rv
        with nogil:
            rv = device_detach(c_path)
        return rv
