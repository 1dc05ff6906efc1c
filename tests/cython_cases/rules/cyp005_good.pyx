# CYP005 fixed: the data pointer.
cimport numpy as cnp
from cpython cimport array

cnp.import_array()


def ndarray_data(cnp.ndarray arr not None):
    cdef void* p = cnp.PyArray_DATA(arr)
    return <size_t>p


def array_data(array.array a not None):
    cdef void* p = a.data.as_voidptr
    return <size_t>p
