/* Summation driver: lanes and tiles, the exact accumulator's slow paths,
 * run-time ISA choice, and the variance helpers. The per-ISA inner loops
 * are in kernels_isa.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_features.h"
#include "summation_internal.h"

__extension__ typedef __int128 mlt_i128;

/* ---------------------------------------------------------------- ISA --- */

int mlt_sum_isa_available(int isa)
{
    switch (isa) {
    case MLT_ISA_SSE2:
        return 1;   /* the x86-64 baseline, or the portable build elsewhere */
#if MLT_HAVE_X86_SIMD
    case MLT_ISA_AVX2:
        return mltools_cpu_supports("avx2") == 1;
    case MLT_ISA_AVX512:
        return mltools_cpu_supports("avx512f") == 1;
#endif
    default:
        return 0;
    }
}

int mlt_sum_best_isa(void)
{
    if (mlt_sum_isa_available(MLT_ISA_AVX512))
        return MLT_ISA_AVX512;
    if (mlt_sum_isa_available(MLT_ISA_AVX2))
        return MLT_ISA_AVX2;
    return MLT_ISA_SSE2;
}

static const mlt_kernels *kernels_for(int isa)
{
    if (!mlt_sum_isa_available(isa))
        return NULL;
    switch (isa) {
    case MLT_ISA_SSE2:
        return &mlt_kernels_sse2;
#if MLT_HAVE_X86_SIMD
    case MLT_ISA_AVX2:
        return &mlt_kernels_avx2;
    case MLT_ISA_AVX512:
        return &mlt_kernels_avx512;
#endif
    default:
        return NULL;
    }
}

/* -------------------------------------------------------------- exact --- */

void mlt_exact_specials(mlt_exact *st, const double *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, x + i, 8);
        if (((bits >> 52) & 0x7ff) != 0x7ff)
            continue;
        if (bits & 0xfffffffffffffULL)
            st->has_nan = 1;
        else if (bits >> 63)
            st->has_ninf = 1;
        else
            st->has_pinf = 1;
    }
}

static void limbs_normalize(mlt_exact *st)
{
    int64_t carry = 0;
    for (int i = 0; i < MLT_XLIMBS - 1; i++) {
        int64_t t = st->limb[i] + carry;
        st->limb[i] = t & 0xffffffffLL;
        carry = t >> 32;   /* arithmetic shift: floor division by 2^32 */
    }
    st->limb[MLT_XLIMBS - 1] += carry;
    st->limb_adds = 0;
}

/* Add v * 2^(max(e,1) - 1075) to the fixed-point limbs. */
static void exact_spill(mlt_exact *st, int e, int64_t v)
{
    int p = (e ? e : 1) - 1;            /* position of the significand's bit 0 */
    int i0 = p >> 5, s = p & 31;
    mlt_i128 w = (mlt_i128)v * ((mlt_i128)1 << s);
    st->limb[i0] += (int64_t)((uint64_t)w & 0xffffffffULL);
    st->limb[i0 + 1] += (int64_t)((uint64_t)(w >> 32) & 0xffffffffULL);
    st->limb[i0 + 2] += (int64_t)(w >> 64);
    if (++st->limb_adds >= ((int64_t)1 << 28))
        limbs_normalize(st);
}

static void exact_check(mlt_exact *st, int e)
{
    const int64_t lim = (int64_t)1 << 62;
    for (int c = 0; c < MLT_XCOPIES; c++) {
        int64_t v = st->chunk[c][e];
        if (v >= lim || v <= -lim) {
            exact_spill(st, e, v);
            st->chunk[c][e] = 0;
        }
    }
}

void mlt_exact_after_block(mlt_exact *st, int emin, int emax)
{
    if (emax == 2047) {         /* inf and nan were recorded, not summed */
        for (int c = 0; c < MLT_XCOPIES; c++)
            st->chunk[c][2047] = 0;
        emax = 2046;
    }
    exact_check(st, 0);
    if (emin < 1)
        emin = 1;
    for (int e = emin; e <= emax; e++)
        exact_check(st, e);
    if (emin <= emax) {
        if (emin < st->lo)
            st->lo = emin;
        if (emax > st->hi)
            st->hi = emax;
    }
}

static int limb_bit(const mlt_exact *st, int i)
{
    return (int)((st->limb[i >> 5] >> (i & 31)) & 1);
}

/* Bits lo .. lo+count-1 (count <= 60) of the normalised magnitude. */
static uint64_t limb_bits(const mlt_exact *st, int lo, int count)
{
    int i = lo >> 5;
    __extension__ unsigned __int128 w = 0;
    for (int k = 2; k >= 0; k--)
        w = (w << 32) | (uint32_t)(i + k < MLT_XLIMBS ? st->limb[i + k] : 0);
    w >>= (lo & 31);
    return (uint64_t)w & (((uint64_t)1 << count) - 1);
}

double mlt_exact_round(mlt_exact *st, int prec, int qmin, int emax)
{
    /* Fold every chunk into the limbs; this also clears them for reuse. */
    for (int c = 0; c < MLT_XCOPIES; c++) {
        if (st->chunk[c][0]) {
            exact_spill(st, 0, st->chunk[c][0]);
            st->chunk[c][0] = 0;
        }
        for (int e = st->lo; e <= st->hi; e++) {
            if (st->chunk[c][e]) {
                exact_spill(st, e, st->chunk[c][e]);
                st->chunk[c][e] = 0;
            }
        }
    }
    double result;
    if (st->has_nan || (st->has_pinf && st->has_ninf)) {
        result = NAN;
    } else if (st->has_pinf) {
        result = INFINITY;
    } else if (st->has_ninf) {
        result = -INFINITY;
    } else {
        limbs_normalize(st);
        int negative = st->limb[MLT_XLIMBS - 1] < 0;
        if (negative) {
            for (int i = 0; i < MLT_XLIMBS; i++)
                st->limb[i] = -st->limb[i];
            limbs_normalize(st);
        }
        int h = MLT_XLIMBS - 1;
        while (h >= 0 && st->limb[h] == 0)
            h--;
        if (h < 0) {
            result = 0.0;       /* an exact zero is +0.0, as math.fsum */
        } else {
            /* magnitude M = sum limb[i] 2^(32 i); value = M * 2^-1074 */
            int top = 32 * h + 63 - __builtin_clzll((uint64_t)st->limb[h]);
            int q = top - (prec - 1);
            int qlo = qmin + 1074;
            if (q < qlo)
                q = qlo;
            uint64_t mant = 0;
            if (q <= 0) {
                mant = limb_bits(st, 0, top + 1);
                result = ldexp((double)mant, -1074);
            } else {
                mant = limb_bits(st, q, top - q + 1);
                int round = limb_bit(st, q - 1);
                int sticky = 0;
                int rb = q - 1;
                if (rb & 31)
                    sticky = (st->limb[rb >> 5] & ((1LL << (rb & 31)) - 1)) != 0;
                for (int i = (rb >> 5) - 1; i >= 0 && !sticky; i--)
                    sticky = st->limb[i] != 0;
                if (round && (sticky || (mant & 1)))
                    mant++;
                int msb = q - 1074 + 63 - __builtin_clzll(mant);
                result = msb >= emax ? INFINITY : ldexp((double)mant, q - 1074);
            }
            if (negative)
                result = -result;
        }
    }
    memset(st->limb, 0, sizeof st->limb);
    st->limb_adds = 0;
    st->lo = MLT_XCHUNKS;
    st->hi = -1;
    st->has_nan = st->has_pinf = st->has_ninf = 0;
    return result;
}

/* ------------------------------------------------------------- driver --- */

typedef struct {
    double level[64];
    uint64_t count;
} cascade;

typedef union {
    mlt_lanes64 l64;
    mlt_lanes32 l32;
    cascade cas;
    double acc;
} lane_state;

typedef struct {
    int method, in_f32, acc_f32, variant;
    size_t isz;
    const mlt_kernels *K;
    mlt_exact *exact;           /* allocated on first use */
    void *gather;               /* MLT_XBLOCK elements, for strided exact lanes */
} ctx;

#define TILE_ROWS 768           /* a multiple of MLT_LANES, MLT_LANES32 and 8 */
#define TILE_COLS 32

static inline double add_acc(const ctx *cx, double a, double b)
{
    return cx->acc_f32 ? (double)((float)a + (float)b) : a + b;
}

static void state_init(const ctx *cx, lane_state *st)
{
    switch (cx->method) {
    case MLT_SUM_NAIVE:
        st->acc = -0.0;         /* -0.0 + x == x for every x, -0.0 included */
        break;
    case MLT_SUM_PAIRWISE:
        st->cas.count = 0;
        break;
    default:
        if (cx->acc_f32) {
            for (int j = 0; j < MLT_LANES32; j++) {
                st->l32.s[j] = -0.0f;
                st->l32.c[j] = 0.0f;
            }
        } else {
            for (int j = 0; j < MLT_LANES; j++) {
                st->l64.s[j] = -0.0;
                st->l64.c[j] = 0.0;
            }
        }
    }
}

static void cascade_push(const ctx *cx, cascade *cs, double v)
{
    int k = 0;
    while (cs->count & ((uint64_t)1 << k)) {
        v = add_acc(cx, cs->level[k], v);
        k++;
    }
    cs->level[k] = v;
    cs->count++;
}

static void state_feed(const ctx *cx, lane_state *st, const char *x, size_t n)
{
    switch (cx->method) {
    case MLT_SUM_NAIVE:
        if (!cx->in_f32) {
            const double *d = (const double *)x;
            double a = st->acc;
            for (size_t i = 0; i < n; i++)
                a += d[i];
            st->acc = a;
        } else if (!cx->acc_f32) {
            const float *f = (const float *)x;
            double a = st->acc;
            for (size_t i = 0; i < n; i++)
                a += (double)f[i];
            st->acc = a;
        } else {
            const float *f = (const float *)x;
            float a = (float)st->acc;
            for (size_t i = 0; i < n; i++)
                a += f[i];
            st->acc = a;
        }
        break;
    case MLT_SUM_PAIRWISE: {
        double leaf;
        if (!cx->in_f32)
            leaf = cx->K->pairwise_f64((const double *)x, (ptrdiff_t)n);
        else if (!cx->acc_f32)
            leaf = cx->K->pairwise_f32to64((const float *)x, (ptrdiff_t)n);
        else
            leaf = cx->K->pairwise_f32((const float *)x, (ptrdiff_t)n);
        cascade_push(cx, &st->cas, leaf);
        break;
    }
    case MLT_SUM_KAHAN:
        cx->K->kahan[cx->variant](st, x, n);
        break;
    case MLT_SUM_NEUMAIER:
        cx->K->neumaier[cx->variant](st, x, n);
        break;
    case MLT_SUM_SUM2:
        cx->K->sum2[cx->variant](st, x, n);
        break;
    }
}

/* Fixed-order error-free fold of the lanes: s lanes, then the compensations
 * (negated for Kahan, whose c holds minus the lost low part). Only the first
 * `used` lanes can hold anything but -0.0 (s) and 0.0 (c), and adding -0.0
 * changes nothing, so short lanes fold only what they used. */
static double fold64(const mlt_lanes64 *l, int negate_c, int used)
{
    double s = -0.0, e = 0.0;
    for (int pass = 0; pass < 2; pass++) {
        for (int j = 0; j < used; j++) {
            double v = pass == 0 ? l->s[j] : (negate_c ? -l->c[j] : l->c[j]);
            if (pass == 1 && v == 0.0)
                continue;       /* keep the sign of an all -0.0 sum */
            double t = s + v;
            double z = t - s;
            e += (s - (t - z)) + (v - z);
            s = t;
        }
    }
    return e == 0.0 ? s : s + e;
}

static double fold32(const mlt_lanes32 *l, int negate_c, int used)
{
    float s = -0.0f, e = 0.0f;
    for (int pass = 0; pass < 2; pass++) {
        for (int j = 0; j < used; j++) {
            float v = pass == 0 ? l->s[j] : (negate_c ? -l->c[j] : l->c[j]);
            if (pass == 1 && v == 0.0f)
                continue;
            float t = s + v;
            float z = t - s;
            e += (s - (t - z)) + (v - z);
            s = t;
        }
    }
    return e == 0.0f ? s : (double)(s + e);
}

static double state_finish(const ctx *cx, lane_state *st, ptrdiff_t n)
{
    switch (cx->method) {
    case MLT_SUM_NAIVE:
        return st->acc;
    case MLT_SUM_PAIRWISE: {
        double r = -0.0;
        for (int k = 0; k < 64; k++)
            if (st->cas.count & ((uint64_t)1 << k))
                r = add_acc(cx, st->cas.level[k], r);
        return r;
    }
    default: {
        int neg = cx->method == MLT_SUM_KAHAN;
        if (cx->acc_f32)
            return fold32(&st->l32, neg, n < MLT_LANES32 ? (int)n : MLT_LANES32);
        return fold64(&st->l64, neg, n < MLT_LANES ? (int)n : MLT_LANES);
    }
    }
}

/* A compensated sum of at most one element per lane: every lane's update
 * leaves s = x and c = 0, so the result is the fold of the elements in
 * order, which this computes without the lane machinery (same bits). */
static double short_fold(const ctx *cx, const char *p, ptrdiff_t n, ptrdiff_t stride)
{
    if (cx->acc_f32) {
        float s = -0.0f, e = 0.0f;
        for (ptrdiff_t j = 0; j < n; j++) {
            float v;
            memcpy(&v, p + j * stride, 4);
            float t = s + v, z = t - s;
            e += (s - (t - z)) + (v - z);
            s = t;
        }
        return e == 0.0f ? s : (double)(s + e);
    }
    double s = -0.0, e = 0.0;
    for (ptrdiff_t j = 0; j < n; j++) {
        double v;
        if (cx->in_f32) {
            float f;
            memcpy(&f, p + j * stride, 4);
            v = (double)f;
        } else {
            memcpy(&v, p + j * stride, 8);
        }
        double t = s + v, z = t - s;
        e += (s - (t - z)) + (v - z);
        s = t;
    }
    return e == 0.0 ? s : s + e;
}

static int ensure_exact(ctx *cx)
{
    if (cx->exact)
        return MLT_OK;
    /* calloc: large blocks come as fresh zero pages, so only the pages of the
     * exponents a sum touches cost anything (small sums stay cheap). */
    cx->exact = calloc(1, sizeof(mlt_exact));
    cx->gather = malloc((size_t)MLT_XBLOCK * cx->isz);
    if (!cx->exact || !cx->gather)
        return MLT_ENOMEM;
    cx->exact->lo = MLT_XCHUNKS;
    cx->exact->hi = -1;
    return MLT_OK;
}

static void exact_feed(ctx *cx, const char *x, size_t n)
{
    if (cx->in_f32)
        cx->K->exact_f32(cx->exact, (const float *)x, n);
    else
        cx->K->exact_f64(cx->exact, (const double *)x, n);
}

/* The exact sum of one lane, correctly rounded to the accumulation type. */
static int exact_lane(ctx *cx, const char *p, ptrdiff_t n, ptrdiff_t stride, double *out)
{
    if (ensure_exact(cx) != MLT_OK)
        return MLT_ENOMEM;
    if (stride == (ptrdiff_t)cx->isz) {
        exact_feed(cx, p, (size_t)n);
    } else {
        for (ptrdiff_t l0 = 0; l0 < n; l0 += MLT_XBLOCK) {
            ptrdiff_t m = n - l0 < MLT_XBLOCK ? n - l0 : MLT_XBLOCK;
            char *g = cx->gather;
            const char *src = p + l0 * stride;
            if (cx->isz == 8)
                for (ptrdiff_t i = 0; i < m; i++)
                    memcpy(g + 8 * i, src + i * stride, 8);
            else
                for (ptrdiff_t i = 0; i < m; i++)
                    memcpy(g + 4 * i, src + i * stride, 4);
            exact_feed(cx, g, (size_t)m);
        }
    }
    *out = cx->acc_f32 ? mlt_exact_round(cx->exact, 24, -149, 128)
                       : mlt_exact_round(cx->exact, 53, -1074, 1024);
    return MLT_OK;
}

/* numpy's add.reduce of a contiguous lane: the identity 0.0 plus its pairwise
 * sum of the whole lane (so -0.0 sums to +0.0, as in numpy; checked bit for
 * bit against numpy in the tests). */
static double numpy_reduce(const ctx *cx, const char *x, ptrdiff_t n)
{
    if (!cx->in_f32)
        return 0.0 + cx->K->pairwise_f64((const double *)x, n);
    if (cx->acc_f32)
        return (double)(0.0f + cx->K->pairwise_f32((const float *)x, n));
    return 0.0 + cx->K->pairwise_f32to64((const float *)x, n);
}

static int is_compensated(int method)
{
    return method == MLT_SUM_KAHAN || method == MLT_SUM_NEUMAIER || method == MLT_SUM_SUM2;
}

int mlt_sum_2d(int method, int isa, int in_f32, int acc_f32,
               const char *base, ptrdiff_t M, ptrdiff_t L,
               ptrdiff_t so, ptrdiff_t si, double *out)
{
    if (method < MLT_SUM_NAIVE || method > MLT_SUM_EXACT || M < 0 || L < 0)
        return MLT_EINVAL;
    if (acc_f32 && !in_f32)
        return MLT_EINVAL;
    ctx cx = {
        .method = method, .in_f32 = in_f32 != 0, .acc_f32 = acc_f32 != 0,
        .variant = !in_f32 ? 0 : (acc_f32 ? 2 : 1),
        .isz = in_f32 ? 4 : 8, .K = kernels_for(isa), .exact = NULL, .gather = NULL,
    };
    if (!cx.K)
        return MLT_EINVAL;
    const ptrdiff_t isz = (ptrdiff_t)cx.isz;
    int rc = MLT_OK;
    lane_state *states = NULL;
    char *tile = NULL;

    if (M == 0)
        return MLT_OK;
    if (L == 0) {
        for (ptrdiff_t o = 0; o < M; o++)
            out[o] = 0.0;
        return MLT_OK;
    }

    if (method == MLT_SUM_EXACT) {
        for (ptrdiff_t o = 0; o < M && rc == MLT_OK; o++)
            rc = exact_lane(&cx, base + o * so, L, si, &out[o]);
        goto done;
    }

    if (method == MLT_SUM_PAIRWISE && (si == isz || M == 1)) {
        /* numpy's order over the whole lane. */
        char *copy = NULL;
        if (si != isz) {
            copy = malloc((size_t)L * cx.isz);
            if (!copy)
                return MLT_ENOMEM;
        }
        for (ptrdiff_t o = 0; o < M; o++) {
            const char *p = base + o * so;
            if (copy) {
                for (ptrdiff_t i = 0; i < L; i++)
                    memcpy(copy + i * isz, p + i * si, cx.isz);
                p = copy;
            }
            out[o] = numpy_reduce(&cx, p, L);
        }
        free(copy);
        return MLT_OK;
    }

    if (is_compensated(method) && L <= (acc_f32 ? MLT_LANES32 : MLT_LANES)) {
        for (ptrdiff_t o = 0; o < M; o++)
            out[o] = short_fold(&cx, base + o * so, L, si);
    } else if (si == isz) {
        /* Contiguous lanes: feed each one whole. */
        lane_state st;
        for (ptrdiff_t o = 0; o < M; o++) {
            state_init(&cx, &st);
            state_feed(&cx, &st, base + o * so, (size_t)L);
            out[o] = state_finish(&cx, &st, L);
        }
    } else {
        /* Strided lanes (axis=0 and friends): copy tiles of TILE_COLS lanes x
         * TILE_ROWS elements, reading memory row by row, and feed each lane's
         * state in blocks that keep the lane assignment of the 1-D case. */
        ptrdiff_t G = M < TILE_COLS ? M : TILE_COLS;
        states = malloc((size_t)G * sizeof *states);
        tile = malloc((size_t)G * TILE_ROWS * cx.isz);
        if (!states || !tile) {
            rc = MLT_ENOMEM;
            goto done;
        }
        for (ptrdiff_t o0 = 0; o0 < M; o0 += G) {
            ptrdiff_t gg = M - o0 < G ? M - o0 : G;
            for (ptrdiff_t g = 0; g < gg; g++)
                state_init(&cx, &states[g]);
            for (ptrdiff_t l0 = 0; l0 < L; l0 += TILE_ROWS) {
                ptrdiff_t rr = L - l0 < TILE_ROWS ? L - l0 : TILE_ROWS;
                /* Column by column within bands of 128 rows: the band's
                 * cache lines stay in L1 across its columns, and each copy
                 * loop is a plain strided one. */
                const char *row = base + o0 * so + l0 * si;
                for (ptrdiff_t r0 = 0; r0 < rr; r0 += 128) {
                    ptrdiff_t r1 = rr - r0 < 128 ? rr : r0 + 128;
                    for (ptrdiff_t g = 0; g < gg; g++) {
                        const char *src = row + g * so;
                        if (isz == 8) {
                            double *t = (double *)tile + g * TILE_ROWS;
                            for (ptrdiff_t r = r0; r < r1; r++)
                                memcpy(&t[r], src + r * si, 8);
                        } else {
                            float *t = (float *)tile + g * TILE_ROWS;
                            for (ptrdiff_t r = r0; r < r1; r++)
                                memcpy(&t[r], src + r * si, 4);
                        }
                    }
                }
                for (ptrdiff_t g = 0; g < gg; g++)
                    state_feed(&cx, &states[g], tile + (size_t)g * TILE_ROWS * cx.isz,
                               (size_t)rr);
            }
            for (ptrdiff_t g = 0; g < gg; g++)
                out[o0 + g] = state_finish(&cx, &states[g], L);
        }
    }

    /* A compensated sum that is not finite (an infinity in the input, or an
     * intermediate overflow) is replaced by the exact result: never a NaN
     * from finite inputs plus an infinity, never a spurious overflow. */
    if (is_compensated(method)) {
        for (ptrdiff_t o = 0; o < M && rc == MLT_OK; o++)
            if (!isfinite(out[o]))
                rc = exact_lane(&cx, base + o * so, L, si, &out[o]);
    }

done:
    free(states);
    free(tile);
    free(cx.exact);
    free(cx.gather);
    return rc;
}

/* ----------------------------------------------------------- variance --- */

static inline double load_elem(int in_f32, const char *p)
{
    if (in_f32) {
        float f;
        memcpy(&f, p, 4);
        return (double)f;
    }
    double d;
    memcpy(&d, p, 8);
    return d;
}

static double fold_pairs(const double *s, const double *c)
{
    double t = -0.0, e = 0.0;
    for (int pass = 0; pass < 2; pass++) {
        for (int j = 0; j < MLT_LANES; j++) {
            double v = pass ? c[j] : s[j];
            double u = t + v, z = u - t;
            e += (t - (u - z)) + (v - z);
            t = u;
        }
    }
    return t + e;
}

void mlt_dev_sums(int in_f32, const char *p, ptrdiff_t n, ptrdiff_t stride, double shift,
                  double *sum_d, double *sum_d2)
{
    double s1[MLT_LANES] = {0}, c1[MLT_LANES] = {0}, s2[MLT_LANES] = {0}, c2[MLT_LANES] = {0};
    for (ptrdiff_t i0 = 0; i0 < n; i0 += MLT_LANES) {
        int m = n - i0 < MLT_LANES ? (int)(n - i0) : MLT_LANES;
        for (int j = 0; j < m; j++) {
            double d = load_elem(in_f32, p + (i0 + j) * stride) - shift;
            double d2 = d * d;
            double t = s1[j] + d;
            if (fabs(s1[j]) >= fabs(d)) c1[j] += (s1[j] - t) + d;
            else c1[j] += (d - t) + s1[j];
            s1[j] = t;
            t = s2[j] + d2;
            if (s2[j] >= d2) c2[j] += (s2[j] - t) + d2;
            else c2[j] += (d2 - t) + s2[j];
            s2[j] = t;
        }
    }
    *sum_d = fold_pairs(s1, c1);
    *sum_d2 = fold_pairs(s2, c2);
}

void mlt_welford(int in_f32, const char *p, ptrdiff_t n, ptrdiff_t stride,
                 double *mean, double *m2)
{
    double mu = 0.0, q = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double x = load_elem(in_f32, p + i * stride);
        double d = x - mu;
        mu += d / (double)(i + 1);
        q += d * (x - mu);
    }
    *mean = mu;
    *m2 = q;
}

void mlt_textbook(int in_f32, const char *p, ptrdiff_t n, ptrdiff_t stride,
                  double *sum_x, double *sum_x2)
{
    double a = 0.0, b = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        double x = load_elem(in_f32, p + i * stride);
        a += x;
        b += x * x;
    }
    *sum_x = a;
    *sum_x2 = b;
}
