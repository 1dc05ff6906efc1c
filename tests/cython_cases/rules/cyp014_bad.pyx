# CYP014: an address kept in long, unsigned long or Py_ssize_t, cast back to a pointer.
cdef extern from *:
    ctypedef void* Handle


cdef class Wrapper:
    cdef Handle handle

    def attach(self, unsigned long address):
        self.handle = <Handle>address  # expect-typed: CYP014@23

    def adopt(self, Py_ssize_t shadow):
        self.handle = <void*>shadow  # expect-typed: CYP014@23


def from_int(obj):
    cdef long value = obj
    return <size_t><char*>value  # expect-typed: CYP014@20
