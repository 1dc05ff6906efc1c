# MXNet fbc69105 / 758d529b (python/mxnet/cython/ndarray.pyx, symbol.pyx): a C
# handle travels through `unsigned long`, 32 bits on 64-bit Windows, both ways.
import ctypes

cdef extern from *:
    ctypedef void* ArrayHandle


cdef class ArrayBase:
    cdef ArrayHandle chandle

    cdef set_handle(self, handle):
        cdef unsigned long address
        if handle is None:
            self.chandle = NULL
        else:
            address = handle.value
            self.chandle = <ArrayHandle>address  # expect-typed: CYP014@28

    @property
    def handle(self):
        if self.chandle == NULL:
            return None
        return ctypes.cast(<unsigned long>self.chandle, ctypes.c_void_p)  # expect-typed: CYP010@28
