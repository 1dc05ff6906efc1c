# xNVMe 70d769af, fixed: through uintptr_t.
from libc.stdint cimport uintptr_t

cdef extern from *:
    ctypedef struct geometry_t:
        unsigned int nsid


cdef class Geometry:
    cdef geometry_t* ptr

    def adopt(self, source):
        self.ptr = <geometry_t*><uintptr_t>source.void_pointer
