from libc.stdint cimport intptr_t


cdef class Memory:
    cdef readonly intptr_t ptr
