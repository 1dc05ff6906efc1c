# CYP004: <void*> of a generic object that nothing keeps alive.
cdef extern from *:
    """
    static void *registered;
    static void c_register(void *p) { registered = p; }
    """
    void c_register(void* p)


def register(callback):
    c_register(<void*>callback)  # expect: CYP004@16


def identity(obj):
    cdef void* p = <void*>obj  # expect: CYP004@20
    return <size_t>p


def attribute_of_object(obj):
    c_register(<void*>obj.callback)  # expect: CYP004@16


# A struct that is not an object's layout is still an address taken from the object.
from cpython.buffer cimport Py_buffer

cdef extern from *:
    ctypedef struct plain_t:
        int value


def plain(obj):
    return (<plain_t*>obj).value  # expect: CYP004@13


def buffer_struct(obj):
    return (<Py_buffer*>obj).len  # expect: CYP004@13
