# CYP014 fixed: the address lives in uintptr_t; small tags and constants are not addresses.
from libc.stdint cimport uintptr_t

cdef extern from *:
    ctypedef void* Handle
    ctypedef enum kind_t:
        KIND_A


cdef class Wrapper:
    cdef Handle handle

    def attach(self, uintptr_t address):
        self.handle = <Handle>address

    def reset(self):
        self.handle = <Handle>0
        self.handle = <Handle>KIND_A


def tag(int slot):
    # An int is 32 bits everywhere: if it held an address it would fail on Linux too.
    return <size_t><void*>slot
