# xNVMe 70d769af (python bindings): another wrapper hands over its address as a
# Python int attribute; casting it straight to a struct pointer gives the int object.
cdef extern from *:
    ctypedef struct geometry_t:
        unsigned int nsid


cdef class Geometry:
    cdef geometry_t* ptr

    def adopt(self, source):
        self.ptr = <geometry_t*>source.void_pointer  # expect: CYP001@20
