# numpy 61783b48, fixed: PyArray_BYTES returns the char* directly.
cimport numpy as cnp


def first_item(cnp.ndarray values not None):
    cdef char* data = cnp.PyArray_BYTES(values)
    return data[0]
