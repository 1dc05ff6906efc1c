/* Types shared by the per-ISA kernel instances and the driver. */
#ifndef MLTOOLS_SUMMATION_INTERNAL_H
#define MLTOOLS_SUMMATION_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "summation.h"

/* Compensated sums: lane j holds the elements i with i % lanes == j. */
typedef struct {
    double s[MLT_LANES];
    double c[MLT_LANES];
} mlt_lanes64;

typedef struct {
    float s[MLT_LANES32];
    float c[MLT_LANES32];
} mlt_lanes32;

/* Exact sum: a superaccumulator in two levels (after R. M. Neal's "large"
 * accumulator).
 *  - chunk[copy][e] sums the signed 53-bit integer significands of the
 *    doubles whose biased exponent is e (value = chunk * 2^(max(e,1)-1075)).
 *    Consecutive elements go to different copies, so adds to the same exponent
 *    do not wait on each other's stores.
 *  - Every block of MLT_XCOPIES*MLT_XPERCOPY elements adds fewer than 2^62 to
 *    any chunk; chunks at or above 2^62 after a block are spilled into limb[],
 *    a fixed-point integer: value = sum limb[i] * 2^(32*i - 1074).
 * Only integer arithmetic: the result cannot depend on the FP environment or
 * the order of the elements. */
#define MLT_XCOPIES 8
#define MLT_XPERCOPY 512
#define MLT_XBLOCK (MLT_XCOPIES * MLT_XPERCOPY)
#define MLT_XCHUNKS 2048
#define MLT_XLIMBS 72

typedef struct {
    /* Rows padded so that copies of one exponent are not 4 KiB apart. */
    int64_t chunk[MLT_XCOPIES][MLT_XCHUNKS + 24];
    int64_t limb[MLT_XLIMBS];
    int64_t limb_adds;
    int lo, hi;                  /* touched exponents (besides 0); lo > hi: none */
    int has_nan, has_pinf, has_ninf;
} mlt_exact;

void mlt_exact_specials(mlt_exact *st, const double *x, size_t n);
void mlt_exact_after_block(mlt_exact *st, int emin, int emax);
/* Correctly rounded result to a binary format with `prec` significand bits,
 * smallest exponent of the last place `qmin` (-1074 double, -149 float) and
 * overflow threshold 2^emax. Resets the accumulator for reuse. */
double mlt_exact_round(mlt_exact *st, int prec, int qmin, int emax);

typedef void (*mlt_lanes_fn)(void *state, const void *x, size_t n);

typedef struct {
    /* [0]: double in, [1]: float in, double accumulators, [2]: float in and out */
    mlt_lanes_fn kahan[3];
    mlt_lanes_fn neumaier[3];
    mlt_lanes_fn sum2[3];
    double (*pairwise_f64)(const double *a, ptrdiff_t n);
    double (*pairwise_f32to64)(const float *a, ptrdiff_t n);
    float (*pairwise_f32)(const float *a, ptrdiff_t n);
    void (*exact_f64)(mlt_exact *st, const double *x, size_t n);
    void (*exact_f32)(mlt_exact *st, const float *x, size_t n);
} mlt_kernels;

extern const mlt_kernels mlt_kernels_sse2;
#if defined(__x86_64__) && defined(__GNUC__)
#define MLT_HAVE_X86_SIMD 1
extern const mlt_kernels mlt_kernels_avx2;
extern const mlt_kernels mlt_kernels_avx512;
#else
#define MLT_HAVE_X86_SIMD 0
#endif

#endif
