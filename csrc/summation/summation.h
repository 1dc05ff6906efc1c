/* Floating-point summation kernels (no Python API).
 *
 * Every algorithm has one definition of its order of operations: a fixed
 * number of lanes (MLT_LANES) for the compensated sums, numpy's blocked
 * pairwise order for the pairwise sum, strict left-to-right for the naive sum,
 * and no order at all for the exact sum. The SIMD builds (SSE2, AVX2,
 * AVX-512) only change how fast that order is executed, so every ISA gives
 * the same bits.
 *
 * Reductions are described as M independent lanes of L elements:
 * element (o, l) lives at base + o*so + l*si (byte strides, any sign).
 */
#ifndef MLTOOLS_SUMMATION_H
#define MLTOOLS_SUMMATION_H

#include <stddef.h>
#include <stdint.h>

enum mlt_sum_method {
    MLT_SUM_NAIVE = 0,
    MLT_SUM_PAIRWISE = 1,
    MLT_SUM_KAHAN = 2,
    MLT_SUM_NEUMAIER = 3,
    MLT_SUM_SUM2 = 4,
    MLT_SUM_EXACT = 5,
};

enum mlt_isa {
    MLT_ISA_SSE2 = 0,
    MLT_ISA_AVX2 = 1,
    MLT_ISA_AVX512 = 2,
};

/* Return codes. */
#define MLT_OK 0
#define MLT_ENOMEM (-1)
#define MLT_EINVAL (-2)

/* 1 when this build has kernels for the ISA and the CPU/OS supports it. */
int mlt_sum_isa_available(int isa);

/* The best available ISA. */
int mlt_sum_best_isa(void);

/* Sum M lanes of L elements into out[0..M-1].
 * in_f32: elements are float (else double). acc_f32: accumulate in float and
 * round the result to float (stored in out as a double, exactly).
 * Returns MLT_OK, MLT_ENOMEM or MLT_EINVAL. */
int mlt_sum_2d(int method, int isa, int in_f32, int acc_f32,
               const char *base, ptrdiff_t M, ptrdiff_t L,
               ptrdiff_t so, ptrdiff_t si, double *out);

/* Variance helpers over one lane, accumulating in double. */
/* Sums of d = x - shift and d*d with Neumaier compensation over MLT_LANES lanes. */
void mlt_dev_sums(int in_f32, const char *p, ptrdiff_t n, ptrdiff_t stride, double shift,
                  double *sum_d, double *sum_d2);
/* Welford's streaming update: count n, mean, m2 (sum of squared deviations). */
void mlt_welford(int in_f32, const char *p, ptrdiff_t n, ptrdiff_t stride,
                 double *mean, double *m2);
/* Textbook one-pass sums: sum x and sum x*x, naive order. */
void mlt_textbook(int in_f32, const char *p, ptrdiff_t n, ptrdiff_t stride,
                  double *sum_x, double *sum_x2);

/* Lanes of the compensated sums: 24 double lanes (6 AVX2 vectors of sums and
 * compensations fit the 16 registers with room for temporaries; 3 AVX-512
 * vectors; 12 SSE2 vectors), and 32 float lanes for float accumulation. */
#define MLT_LANES 24
#define MLT_LANES32 32

#endif
