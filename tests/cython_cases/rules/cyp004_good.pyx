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


# Casts to the C layout of the object itself are typed views, not addresses taken from it.
from cpython.datetime cimport PyDateTime_DateTime, datetime, import_datetime

import_datetime()

cdef extern from *:
    """
    typedef struct { PyObject_HEAD void *surface; } surface_object;
    typedef struct { PyObject ob_base; int value; } FooObject;
    typedef struct { PyObject_HEAD double total; } counter_object;
    """
    # Named like CPython's object structs (pycairo's PycairoSurface, declared without its header).
    ctypedef struct PycairoSurface "surface_object":
        void* surface
    # The header spelled out as the first member.
    ctypedef struct foo_t "FooObject":
        PyObject ob_base
        int value
    # The object struct of an extension type declared here.
    ctypedef struct counter_t "counter_object":
        double total
    ctypedef class builtins.Counter [object counter_object]:
        pass
    long to_timepoint(PyDateTime_DateTime* dt)


def timestamp(mtime):
    if isinstance(mtime, datetime):
        return to_timepoint(<PyDateTime_DateTime*>mtime)


def surface_of(image_surface):
    return <size_t>(<PycairoSurface*>image_surface).surface


def foo_value(foo):
    return (<foo_t*>foo).value


def counter_total(counter):
    return (<counter_t*>counter).total
