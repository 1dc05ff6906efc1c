# CYP013: .data of a typed ndarray parameter that may be None.
cimport numpy as cnp

cnp.import_array()


def fill(cnp.ndarray arr, double value):
    cdef double* p = <double*>arr.data  # expect: CYP013@31
    p[0] = value


def first(cnp.ndarray arr):
    return (<double*>cnp.PyArray_DATA(arr))[0]  # expect: CYP013@39
