# CYP006 fixed: contiguous views.
from libc.string cimport memcpy
cdef extern from *:
    """
    static double sum_n(const double *p, int n) { double s = 0; for (int i = 0; i < n; i++) s += p[i]; return s; }
    """
    double sum_n(const double* p, int n)


def c_contiguous(double[::1] v):
    return sum_n(&v[0], v.shape[0])


def c_contiguous_2d(double[:, ::1] m):
    return sum_n(&m[0, 0], m.shape[1])


def f_contiguous_2d(double[::1, :] m):
    return sum_n(&m[0, 0], m.shape[0])


def first_row(const double[:, :] values, double[:, :] out):
    # The strides are tested before the rows are copied as contiguous memory (pandas' take).
    cdef Py_ssize_t k = values.shape[1]
    if values.strides[1] == sizeof(double) and out.strides[1] == sizeof(double):
        memcpy(&out[0, 0], &values[0, 0], k * sizeof(double))
