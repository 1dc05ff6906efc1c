# CYP001: <T*>E with E a Python object that holds an address.
cdef extern from *:
    ctypedef struct Ctx:
        int x


def from_attribute(buf):
    cdef void* p = <void*>buf.ptr  # expect: CYP001@20
    return <size_t>p


def from_ctypes(arr):
    return <size_t><void*>arr.ctypes.data  # expect: CYP001@20


def from_interface(arr):
    cdef void* p = <void*>arr.__array_interface__['data'][0]  # expect: CYP001@20
    return <size_t>p


def from_a_name(dev_ptr):
    cdef void* p = <void*>dev_ptr  # expect: CYP001@20
    return <size_t>p


def struct_pointer(obj):
    cdef Ctx* c = <Ctx*>obj.pointer  # expect: CYP001@19
    return c.x


def typed_python_int(a: int):
    cdef void* p = <void*>a  # expect: CYP001@20
    return <size_t>p


def assigned_from_an_address(t):
    addr_value = t.data_ptr()
    cdef void* p = <void*>addr_value  # expect: CYP001@20
    return <size_t>p


def handle_value(h):
    cdef void* p = <void*>h.value  # expect: CYP001@20
    return <size_t>p
