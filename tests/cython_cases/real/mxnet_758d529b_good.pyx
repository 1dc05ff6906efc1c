# MXNet 758d529b, fixed: unsigned long long is 64 bits everywhere (uintptr_t is the exact type).
import ctypes

cdef extern from *:
    ctypedef void* ArrayHandle


cdef class ArrayBase:
    cdef ArrayHandle chandle

    cdef set_handle(self, handle):
        cdef unsigned long long address
        if handle is None:
            self.chandle = NULL
        else:
            address = handle.value
            self.chandle = <ArrayHandle>address

    @property
    def handle(self):
        if self.chandle == NULL:
            return None
        return ctypes.cast(<unsigned long long>self.chandle, ctypes.c_void_p)
