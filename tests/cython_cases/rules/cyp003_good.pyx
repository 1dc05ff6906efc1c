# CYP003 fixed: let Cython convert to the character buffer.
from cpython.bytes cimport PyBytes_AS_STRING
from libc.string cimport memcpy


def copy_bytes(bytes b, char* dst):
    memcpy(dst, <const char*>b, len(b))


def as_string(bytes b):
    cdef char* p = PyBytes_AS_STRING(b)
    cdef char* q = <char*>b
    return p[0] + q[0]
