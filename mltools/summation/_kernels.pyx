# cython: language_level=3, boundscheck=False, wraparound=False
"""Bindings to the summation kernels in ``csrc/summation``.

Arrays are passed as a data address plus a 2-D description (M lanes of L
elements, byte strides so and si) that ``mltools.summation._core`` computes;
the caller keeps the array alive. The GIL is released while a kernel runs.
"""
from libc.stddef cimport ptrdiff_t

cdef extern from "summation.h" nogil:
    int mlt_sum_isa_available(int isa)
    int mlt_sum_best_isa()
    int mlt_sum_2d(int method, int isa, int in_f32, int acc_f32,
                   const char *base, ptrdiff_t M, ptrdiff_t L,
                   ptrdiff_t so, ptrdiff_t si, double *out)
    void mlt_dev_sums(int in_f32, const char *p, ptrdiff_t n, ptrdiff_t stride,
                      double shift, double *sum_d, double *sum_d2)
    void mlt_welford(int in_f32, const char *p, ptrdiff_t n, ptrdiff_t stride,
                     double *mean, double *m2)
    void mlt_textbook(int in_f32, const char *p, ptrdiff_t n, ptrdiff_t stride,
                      double *sum_x, double *sum_x2)
    int MLT_LANES


LANES = MLT_LANES


def isa_available(int isa):
    return bool(mlt_sum_isa_available(isa))


def best_isa():
    return mlt_sum_best_isa()


cdef inline void _check(int rc) except *:
    if rc == -1:
        raise MemoryError("summation: out of memory for the work buffers")
    if rc != 0:
        raise ValueError("summation: invalid kernel arguments (an ISA this CPU lacks?)")


def sum_1(int method, int isa, bint in_f32, bint acc_f32, size_t addr,
          ptrdiff_t n, ptrdiff_t stride):
    """The sum of one lane of n elements at addr with a byte stride."""
    cdef double out = 0.0
    cdef int rc
    cdef const char *p = <const char *>addr
    with nogil:
        rc = mlt_sum_2d(method, isa, in_f32, acc_f32, p, 1, n, 0, stride, &out)
    _check(rc)
    return out


def sum_2d(int method, int isa, bint in_f32, bint acc_f32, size_t addr,
           ptrdiff_t M, ptrdiff_t L, ptrdiff_t so, ptrdiff_t si, double[::1] out):
    """Sums of M lanes into out (M doubles)."""
    cdef int rc
    cdef const char *p = <const char *>addr
    if out.shape[0] < M:
        raise ValueError("summation: output buffer too small")
    with nogil:
        rc = mlt_sum_2d(method, isa, in_f32, acc_f32, p, M, L, so, si, &out[0] if M > 0 else NULL)
    _check(rc)


def dev_sums_2d(bint in_f32, size_t addr, ptrdiff_t M, ptrdiff_t L, ptrdiff_t so, ptrdiff_t si,
                const double[::1] shift, double[::1] sum_d, double[::1] sum_d2):
    """Per lane: compensated sums of d = x - shift[o] and of d*d."""
    cdef const char *p = <const char *>addr
    cdef ptrdiff_t o
    with nogil:
        for o in range(M):
            mlt_dev_sums(in_f32, p + o * so, L, si, shift[o], &sum_d[o], &sum_d2[o])


def welford_2d(bint in_f32, size_t addr, ptrdiff_t M, ptrdiff_t L, ptrdiff_t so, ptrdiff_t si,
               double[::1] mean, double[::1] m2):
    """Per lane: Welford's running mean and sum of squared deviations."""
    cdef const char *p = <const char *>addr
    cdef ptrdiff_t o
    with nogil:
        for o in range(M):
            mlt_welford(in_f32, p + o * so, L, si, &mean[o], &m2[o])


def textbook_2d(bint in_f32, size_t addr, ptrdiff_t M, ptrdiff_t L, ptrdiff_t so, ptrdiff_t si,
                double[::1] sum_x, double[::1] sum_x2):
    """Per lane: plain sums of x and x*x."""
    cdef const char *p = <const char *>addr
    cdef ptrdiff_t o
    with nogil:
        for o in range(M):
            mlt_textbook(in_f32, p + o * so, L, si, &sum_x[o], &sum_x2[o])
