# CYP004 quiet: extension types, containers, kept-alive objects, user-data slots.
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF

cdef extern from *:
    """
    typedef struct { void *data; } handle_t;
    static void *registered;
    static void c_register(void *p) { registered = p; }
    """
    ctypedef struct handle_t:
        void* data
    void c_register(void* p)


cdef class Loop:
    cdef handle_t handle
    cdef object callback

    def __cinit__(self):
        self.handle.data = <void*>self

    def keep(self, callback):
        self.callback = callback
        c_register(<void*>callback)


def increfed(callback):
    Py_INCREF(callback)
    c_register(<void*>callback)


def container(tuple args):
    Py_INCREF(args)
    c_register(<void*>args)


def user_data_slot(owner):
    cdef handle_t h
    h.data = <void*>owner
    return <size_t>h.data


def intended(obj):
    c_register(<void*>obj)  # noqa: CYP004


def as_pyobject(obj):
    cdef PyObject* o = <PyObject*>obj
    return <size_t>o
