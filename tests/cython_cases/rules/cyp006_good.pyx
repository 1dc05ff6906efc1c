# CYP006 fixed: contiguous views.
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
