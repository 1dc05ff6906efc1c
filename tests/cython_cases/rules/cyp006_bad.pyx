# CYP006: &v[...] of a strided memoryview handed to C.
cdef extern from *:
    """
    static double sum_n(const double *p, int n) { double s = 0; for (int i = 0; i < n; i++) s += p[i]; return s; }
    """
    double sum_n(const double* p, int n)


def strided(double[:] v):
    return sum_n(&v[0], v.shape[0])  # expect: CYP006@18


def strided_2d(double[:, :] m):
    return sum_n(&m[0, 0], m.shape[1])  # expect: CYP006@18
