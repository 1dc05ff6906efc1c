# CYP005: <void*> of an ndarray or array.array is the object, not its data.
cimport numpy as cnp
from cpython cimport array

cnp.import_array()


def ndarray_object(cnp.ndarray arr not None):
    cdef void* p = <void*>arr  # expect: CYP005@20
    return <size_t>p


def array_object(array.array a not None):
    cdef void* p = <void*>a  # expect: CYP005@20
    return <size_t>p
