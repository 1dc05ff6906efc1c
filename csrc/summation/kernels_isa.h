/* One instance of every SIMD kernel. Included once per ISA by kernels_*.c
 * with these macros defined:
 *   SFX           name suffix (sse2, avx2, avx512)
 *   V64, VI64, W  vector of W doubles and of W int64 (the native width)
 *   CVT_F32(p)    W floats at p converted to a V64
 *   V32, VI32, W32  vector of W32 floats and int32 (float accumulation)
 *   VP32, WP32    vector of at most 8 floats (pairwise float accumulators)
 * The lane counts are MLT_LANES / MLT_LANES32 in every instance, so the order of operations,
 * and thus every bit of every result, is the same on every ISA. */
#include <math.h>
#include <string.h>

#include "summation_internal.h"

#define MLT_CAT_(a, b) a##_##b
#define MLT_CAT(a, b) MLT_CAT_(a, b)
#define FN(name) MLT_CAT(name, SFX)

#define LOAD(v, p) __builtin_memcpy(&(v), (p), sizeof(v))

/* The three compensated updates, written once for vectors and scalars. */
#define KAHAN_STEP(s, c, x) do {            \
        __typeof__(s) y_ = (x) - (c);        \
        __typeof__(s) t_ = (s) + y_;         \
        (c) = (t_ - (s)) - y_;               \
        (s) = t_;                            \
    } while (0)

#define SUM2_STEP(s, c, x) do {             \
        __typeof__(s) t_ = (s) + (x);        \
        __typeof__(s) z_ = t_ - (s);         \
        (c) += ((s) - (t_ - z_)) + ((x) - z_); \
        (s) = t_;                            \
    } while (0)

/* Neumaier: the larger of |s| and |x| loses the low bits. */
#define NEUMAIER_STEP_SCALAR(s, c, x, ABS) do {                  \
        __typeof__(s) t_ = (s) + (x);                             \
        if (ABS(s) >= ABS(x)) (c) += ((s) - t_) + (x);            \
        else (c) += ((x) - t_) + (s);                             \
        (s) = t_;                                                 \
    } while (0)

/* (an ISA file may define its own, with the same bits) */
#ifndef NEUMAIER_STEP_VEC
#define NEUMAIER_STEP_VEC(s, c, x, V, VI, ABSMASK, SELECT) do {  \
        V t_ = (s) + (x);                                         \
        VI m_ = (V)((VI)(s) & (ABSMASK)) >= (V)((VI)(x) & (ABSMASK)); \
        V big_ = SELECT(m_, s, x);                                \
        V small_ = SELECT(m_, x, s);                              \
        (c) += (big_ - t_) + small_;                              \
        (s) = t_;                                                 \
    } while (0)
#endif

/* m ? a : b for lane masks of all ones or all zeros (ISA files may override
 * with a blend instruction). */
#ifndef SELECT64
#define SELECT64(m, a, b) ((V64)(((VI64)(a) & (m)) | ((VI64)(b) & ~(m))))
#endif
#ifndef SELECT32
#define SELECT32(m, a, b) ((V32)(((VI32)(a) & (m)) | ((VI32)(b) & ~(m))))
#endif

#define ABS64(v) __builtin_fabs(v)
#define ABS32(v) __builtin_fabsf(v)
#define ABSMASK64 ((int64_t)0x7fffffffffffffffLL)
#define ABSMASK32 ((int32_t)0x7fffffff)

#define LOAD_F64(v, p) LOAD(v, p)
#define LOAD_F32TO64(v, p) do { (v) = CVT_F32(p); } while (0)
#define LOAD_F32(v, p) LOAD(v, p)

#define V_KAHAN64(s, c, x) KAHAN_STEP(s, c, x)
#define V_SUM264(s, c, x) SUM2_STEP(s, c, x)
#define V_NEU64(s, c, x) NEUMAIER_STEP_VEC(s, c, x, V64, VI64, ABSMASK64, SELECT64)
#define V_NEU32(s, c, x) NEUMAIER_STEP_VEC(s, c, x, V32, VI32, ABSMASK32, SELECT32)
#define S_KAHAN(s, c, x) KAHAN_STEP(s, c, x)
#define S_SUM2(s, c, x) SUM2_STEP(s, c, x)
#define S_NEU64(s, c, x) NEUMAIER_STEP_SCALAR(s, c, x, ABS64)
#define S_NEU32(s, c, x) NEUMAIER_STEP_SCALAR(s, c, x, ABS32)

/* A lanes kernel: n elements into the MLT_LANES lanes, element i into lane
 * i % NL (callers pass whole multiples of NL except in the last call). */
#define LANES_KERNEL(NAME, IN_T, ACC_T, ST_T, NL, V, WV, LOADV, STEPV, STEPS)      \
    static void FN(NAME)(void *stv, const void *xv, size_t n)                \
    {                                                                         \
        ST_T *st = (ST_T *)stv;                                               \
        const IN_T *x = (const IN_T *)xv;                                     \
        enum { U = (NL) / (WV) };                                             \
        V s[U], c[U];                                                         \
        _Pragma("GCC unroll 16")                                              \
        for (int u = 0; u < U; u++) {                                         \
            LOAD(s[u], st->s + u * (WV));                                     \
            LOAD(c[u], st->c + u * (WV));                                     \
        }                                                                     \
        size_t nv = n - n % (NL), i;                                          \
        for (i = 0; i < nv; i += (NL)) {                                      \
            _Pragma("GCC unroll 16")                                          \
            for (int u = 0; u < U; u++) {                                     \
                V xu;                                                         \
                LOADV(xu, x + i + (size_t)u * (WV));                          \
                STEPV(s[u], c[u], xu);                                        \
            }                                                                 \
        }                                                                     \
        _Pragma("GCC unroll 16")                                              \
        for (int u = 0; u < U; u++) {                                         \
            __builtin_memcpy(st->s + u * (WV), &s[u], sizeof(V));             \
            __builtin_memcpy(st->c + u * (WV), &c[u], sizeof(V));             \
        }                                                                     \
        for (int j = 0; i < n; i++, j++) {                                    \
            ACC_T xs = (ACC_T)x[i];                                           \
            STEPS(st->s[j], st->c[j], xs);                                    \
        }                                                                     \
    }

LANES_KERNEL(kahan_f64, double, double, mlt_lanes64, MLT_LANES, V64, W, LOAD_F64, V_KAHAN64, S_KAHAN)
LANES_KERNEL(kahan_f32to64, float, double, mlt_lanes64, MLT_LANES, V64, W, LOAD_F32TO64, V_KAHAN64, S_KAHAN)
LANES_KERNEL(kahan_f32, float, float, mlt_lanes32, MLT_LANES32, V32, W32, LOAD_F32, V_KAHAN64, S_KAHAN)
LANES_KERNEL(neumaier_f64, double, double, mlt_lanes64, MLT_LANES, V64, W, LOAD_F64, V_NEU64, S_NEU64)
LANES_KERNEL(neumaier_f32to64, float, double, mlt_lanes64, MLT_LANES, V64, W, LOAD_F32TO64, V_NEU64, S_NEU64)
LANES_KERNEL(neumaier_f32, float, float, mlt_lanes32, MLT_LANES32, V32, W32, LOAD_F32, V_NEU32, S_NEU32)
LANES_KERNEL(sum2_f64, double, double, mlt_lanes64, MLT_LANES, V64, W, LOAD_F64, V_SUM264, S_SUM2)
LANES_KERNEL(sum2_f32to64, float, double, mlt_lanes64, MLT_LANES, V64, W, LOAD_F32TO64, V_SUM264, S_SUM2)
LANES_KERNEL(sum2_f32, float, float, mlt_lanes32, MLT_LANES32, V32, W32, LOAD_F32, V_SUM264, S_SUM2)

/* numpy's pairwise sum (loops_utils.h.src): below 8 elements a plain loop
 * starting from -0.0; up to 128 elements 8 accumulators in a fixed order;
 * above, split at half rounded down to a multiple of 8. The 8 accumulators
 * are held in vectors; each is still its own sequential chain. */
#define PAIRWISE_KERNEL(NAME, IN_T, ACC_T, V, WV, LOADV)                      \
    /* One leaf of 8..128 elements: 8 accumulators, fixed combine, tail. */  \
    static inline ACC_T FN(NAME##_leaf)(const IN_T *a, ptrdiff_t n)           \
    {                                                                         \
        enum { U = 8 / (WV) };                                                \
        V r[U];                                                               \
        _Pragma("GCC unroll 8")                                               \
        for (int u = 0; u < U; u++)                                           \
            LOADV(r[u], a + u * (WV));                                        \
        ptrdiff_t i;                                                          \
        for (i = 8; i < n - (n % 8); i += 8) {                                \
            /* as numpy: 512 bytes ahead */                                   \
            __builtin_prefetch(a + i + 512 / sizeof(IN_T), 0, 3);             \
            _Pragma("GCC unroll 8")                                           \
            for (int u = 0; u < U; u++) {                                     \
                V v;                                                          \
                LOADV(v, a + i + u * (WV));                                   \
                r[u] += v;                                                    \
            }                                                                 \
        }                                                                     \
        ACC_T t[8];                                                           \
        __builtin_memcpy(t, r, sizeof t);                                     \
        ACC_T res = ((t[0] + t[1]) + (t[2] + t[3])) +                         \
                    ((t[4] + t[5]) + (t[6] + t[7]));                          \
        for (; i < n; i++)                                                    \
            res += (ACC_T)a[i];                                               \
        return res;                                                           \
    }                                                                         \
    static ACC_T FN(NAME)(const IN_T *a, ptrdiff_t n)                         \
    {                                                                         \
        if (n < 8) {                                                          \
            ACC_T res = -0.0;                                                 \
            for (ptrdiff_t i = 0; i < n; i++)                                 \
                res += (ACC_T)a[i];                                           \
            return res;                                                       \
        }                                                                     \
        if (n <= 128)                                                         \
            return FN(NAME##_leaf)(a, n);                                     \
        ptrdiff_t n2 = n / 2;                                                 \
        n2 -= n2 % 8;                                                         \
        return FN(NAME)(a, n2) + FN(NAME)(a + n2, n - n2);                    \
    }

PAIRWISE_KERNEL(pairwise_f64, double, double, V64, W, LOAD_F64)
PAIRWISE_KERNEL(pairwise_f32to64, float, double, V64, W, LOAD_F32TO64)
PAIRWISE_KERNEL(pairwise_f32, float, float, VP32, WP32, LOAD)

/* The exponent range of a block (smallest non-zero and largest biased
 * exponent): portable scalar version, unless the ISA file has a vector one. */
#ifndef XR_DECL
#define XR_DECL int64_t xr_max = 0, xr_min = 2047
#define XR_SCALAR(e) do {                                   \
        int64_t e_ = (e);                                   \
        xr_max = e_ > xr_max ? e_ : xr_max;                 \
        if (e_ && e_ < xr_min) xr_min = e_;                 \
    } while (0)
#define XR_UPDATE8(p) do {                                  \
        for (int k_ = 0; k_ < 8; k_++) {                    \
            uint64_t b_;                                    \
            __builtin_memcpy(&b_, (p) + k_, 8);             \
            XR_SCALAR((int64_t)((b_ >> 52) & 0x7ff));       \
        }                                                   \
    } while (0)
#define XR_RESULT(emin, emax) do { (emin) = xr_min; (emax) = xr_max; } while (0)
#endif

/* Exact sum of doubles into the superaccumulator. A vector pass splits each
 * sub-block into exponents and signed significands (and tracks the exponent
 * range); a scalar pass adds them to the chunks. */
#define MLT_XSUB 512
static void FN(exact_f64)(mlt_exact *st, const double *x, size_t n)
{
    int64_t idx[MLT_XSUB], val[MLT_XSUB];
    for (size_t b = 0; b < n; b += MLT_XBLOCK) {
        size_t m = n - b < MLT_XBLOCK ? n - b : MLT_XBLOCK;
        const double *xb = x + b;
        XR_DECL;
        size_t done = 0;
        while (done < m) {
            size_t sm = m - done < MLT_XSUB ? m - done : MLT_XSUB;
            const double *xs = xb + done;
            size_t i = 0;
            for (; i + 8 <= sm; i += 8) {
                _Pragma("GCC unroll 8")
                for (int j = 0; j < 8; j++) {
                    uint64_t bits;
                    __builtin_memcpy(&bits, xs + i + j, 8);
                    int64_t e = (int64_t)((bits >> 52) & 0x7ff);
                    int64_t mant = (int64_t)((bits & 0xfffffffffffffULL) |
                                             ((uint64_t)(e != 0) << 52));
                    int64_t sg = (int64_t)bits >> 63;
                    idx[i + j] = e;
                    val[i + j] = (mant ^ sg) - sg;
                }
                XR_UPDATE8(xs + i);
            }
            for (int j = 0; i < sm; i++, j++) {
                uint64_t bits;
                __builtin_memcpy(&bits, xs + i, 8);
                int64_t e = (int64_t)((bits >> 52) & 0x7ff);
                int64_t mant = (int64_t)((bits & 0xfffffffffffffULL) | ((uint64_t)(e != 0) << 52));
                int64_t sg = (int64_t)bits >> 63;
                idx[i] = e;
                val[i] = (mant ^ sg) - sg;
                XR_SCALAR(e);
                (void)j;
            }
            /* Element k of the block goes to copy k % 8 (sub-blocks are
             * multiples of 8), so each copy gets at most MLT_XPERCOPY. */
            i = 0;
            for (; i + MLT_XCOPIES <= sm; i += MLT_XCOPIES) {
                _Pragma("GCC unroll 8")
                for (int j = 0; j < MLT_XCOPIES; j++)
                    st->chunk[j][idx[i + j]] += val[i + j];
            }
            for (int j = 0; i < sm; i++, j++)
                st->chunk[j][idx[i]] += val[i];
            done += sm;
        }
        int64_t emax, emin;
        XR_RESULT(emin, emax);
        if (emax == 2047)
            mlt_exact_specials(st, xb, m);
        mlt_exact_after_block(st, (int)emin, (int)emax);
    }
}

static void FN(exact_f32)(mlt_exact *st, const float *x, size_t n)
{
    double buf[1024];
    for (size_t b = 0; b < n; b += 1024) {
        size_t m = n - b < 1024 ? n - b : 1024;
        size_t i = 0;
        for (; i + W <= m; i += W) {
            V64 v;
            LOAD_F32TO64(v, x + b + i);
            __builtin_memcpy(buf + i, &v, sizeof v);
        }
        for (; i < m; i++)
            buf[i] = (double)x[b + i];
        FN(exact_f64)(st, buf, m);
    }
}

const mlt_kernels MLT_CAT(mlt_kernels, SFX) = {
    .kahan = {FN(kahan_f64), FN(kahan_f32to64), FN(kahan_f32)},
    .neumaier = {FN(neumaier_f64), FN(neumaier_f32to64), FN(neumaier_f32)},
    .sum2 = {FN(sum2_f64), FN(sum2_f32to64), FN(sum2_f32)},
    .pairwise_f64 = FN(pairwise_f64),
    .pairwise_f32to64 = FN(pairwise_f32to64),
    .pairwise_f32 = FN(pairwise_f32),
    .exact_f64 = FN(exact_f64),
    .exact_f32 = FN(exact_f32),
};
