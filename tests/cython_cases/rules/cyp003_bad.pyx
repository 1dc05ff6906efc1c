# CYP003: <void*> of bytes/bytearray/str points at the object header.
from libc.string cimport memcpy


def copy_bytes(bytes b, char* dst):
    memcpy(dst, <void*>b, len(b))  # expect: CYP003@17


def text_pointer(str s):
    return <size_t><void*>s  # expect: CYP003@20


def mutable_buffer(bytearray ba):
    cdef unsigned char* p = <unsigned char*><void*>ba  # expect: CYP003@45
    return p[0]


def local_bytes():
    cdef bytes b = b"abc"
    cdef void* p = <void*>b  # expect: CYP003@20
    return <size_t>p
