# CYP013 fixed: 'not None', or an explicit None check.
cimport numpy as cnp

cnp.import_array()


def fill(cnp.ndarray arr not None, double value):
    cdef double* p = <double*>arr.data
    p[0] = value


def checked(cnp.ndarray arr):
    if arr is None:
        raise TypeError("arr must be an array")
    return (<double*>cnp.PyArray_DATA(arr))[0]


cdef double c_level(cnp.ndarray arr):
    return (<double*>arr.data)[0]
