# CYP001 fixed: convert the int to a C integer before making it a pointer.
from cpython.long cimport PyLong_AsVoidPtr
from libc.stdint cimport intptr_t, uintptr_t


cdef class Memory:
    cdef readonly intptr_t ptr


def typed_local(buf):
    cdef uintptr_t addr = buf.ptr
    cdef void* p = <void*>addr
    return <size_t>p


def double_cast(buf):
    cdef void* p = <void*><uintptr_t>buf.ptr
    return <size_t>p


def signed_double_cast(buf):
    return <size_t><void*><intptr_t>buf.ptr


def from_pylong(buf):
    cdef void* p = PyLong_AsVoidPtr(buf.ptr)
    return <size_t>p


def extension_attribute(Memory m):
    # .ptr is a C intptr_t here: the cast is right.
    cdef void* p = <void*>m.ptr
    return <size_t>p


def inferred_extension_type():
    m = Memory()
    cdef void* p = <void*>m.ptr  # expect-syntax: CYP001@20
    return <size_t>p


def suppressed(buf):
    cdef void* p = <void*>buf.ptr  # noqa: CYP001
    cdef void* q = <void*>buf.handle  # noqa
    return <size_t>p + <size_t>q
