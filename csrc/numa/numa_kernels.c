/* Bandwidth kernels: one version per ISA, chosen at run time.
 *
 * The vector versions use per-function target attributes, so this file builds
 * with the project's portable flags and never needs -march. Stores that must
 * be non-temporal first align the destination with a scalar prologue; loads
 * are unaligned-safe. -ffp-contract=off keeps triad a separate multiply and
 * add, as STREAM counts it.
 */
#include "numa_kernels.h"
#include "cpu_features.h"

#if defined(__x86_64__) || defined(__i386__)
#define MLTOOLS_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif
#include <string.h>

/* ---------------------------------------------------------------- portable */

static double read_portable(const double *a, size_t n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i]; s1 += a[i + 1]; s2 += a[i + 2]; s3 += a[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i];
    return (s0 + s1) + (s2 + s3);
}

static void write_portable(double *c, size_t n, double v)
{
    for (size_t i = 0; i < n; i++)
        c[i] = v;
}

static void copy_portable(double *restrict c, const double *restrict a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        c[i] = a[i];
}

static void triad_portable(double *restrict a, const double *restrict b,
                           const double *restrict c, size_t n, double s)
{
    for (size_t i = 0; i < n; i++)
        a[i] = b[i] + s * c[i];
}

#ifdef MLTOOLS_X86

/* Elements to store one at a time before `p` is aligned to `align` bytes. */
static size_t head_count(const double *p, size_t n, size_t align)
{
    size_t mis = (uintptr_t)p & (align - 1);
    size_t head = mis ? (align - mis) / sizeof(double) : 0;
    /* 8-byte aligned pointers only; anything else never aligns: do it all scalar */
    if (((uintptr_t)p & 7u) != 0)
        return n;
    return head < n ? head : n;
}

/* -------------------------------------------------------------------- SSE2 */

static double read_sse2(const double *a, size_t n)
{
    __m128d s0 = _mm_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = _mm_add_pd(s0, _mm_loadu_pd(a + i));
        s1 = _mm_add_pd(s1, _mm_loadu_pd(a + i + 2));
        s2 = _mm_add_pd(s2, _mm_loadu_pd(a + i + 4));
        s3 = _mm_add_pd(s3, _mm_loadu_pd(a + i + 6));
    }
    __m128d s = _mm_add_pd(_mm_add_pd(s0, s1), _mm_add_pd(s2, s3));
    double lanes[2];
    _mm_storeu_pd(lanes, s);
    return lanes[0] + lanes[1] + read_portable(a + i, n - i);
}

static void write_sse2(double *c, size_t n, double v, int nt)
{
    size_t i = head_count(c, n, nt ? 64 : 16);   /* NT: whole lines per write-combining buffer */
    write_portable(c, i, v);
    __m128d x = _mm_set1_pd(v);
    if (nt) {
        for (; i + 2 <= n; i += 2)
            _mm_stream_pd(c + i, x);
        _mm_sfence();
    } else {
        for (; i + 2 <= n; i += 2)
            _mm_store_pd(c + i, x);
    }
    write_portable(c + i, n - i, v);
}

static void copy_sse2(double *restrict c, const double *restrict a, size_t n, int nt)
{
    size_t i = head_count(c, n, nt ? 64 : 16);   /* NT: whole lines per write-combining buffer */
    copy_portable(c, a, i);
    if (nt) {
        for (; i + 2 <= n; i += 2)
            _mm_stream_pd(c + i, _mm_loadu_pd(a + i));
        _mm_sfence();
    } else {
        for (; i + 2 <= n; i += 2)
            _mm_store_pd(c + i, _mm_loadu_pd(a + i));
    }
    copy_portable(c + i, a + i, n - i);
}

static void triad_sse2(double *restrict a, const double *restrict b,
                       const double *restrict c, size_t n, double s, int nt)
{
    size_t i = head_count(a, n, nt ? 64 : 16);   /* NT: whole lines per write-combining buffer */
    triad_portable(a, b, c, i, s);
    __m128d vs = _mm_set1_pd(s);
    if (nt) {
        for (; i + 2 <= n; i += 2)
            _mm_stream_pd(a + i, _mm_add_pd(_mm_loadu_pd(b + i), _mm_mul_pd(vs, _mm_loadu_pd(c + i))));
        _mm_sfence();
    } else {
        for (; i + 2 <= n; i += 2)
            _mm_store_pd(a + i, _mm_add_pd(_mm_loadu_pd(b + i), _mm_mul_pd(vs, _mm_loadu_pd(c + i))));
    }
    triad_portable(a + i, b + i, c + i, n - i, s);
}

/* -------------------------------------------------------------------- AVX2 */

#define AVX2 __attribute__((target("avx2")))

AVX2 static double read_avx2(const double *a, size_t n)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_add_pd(s0, _mm256_loadu_pd(a + i));
        s1 = _mm256_add_pd(s1, _mm256_loadu_pd(a + i + 4));
        s2 = _mm256_add_pd(s2, _mm256_loadu_pd(a + i + 8));
        s3 = _mm256_add_pd(s3, _mm256_loadu_pd(a + i + 12));
    }
    __m256d s = _mm256_add_pd(_mm256_add_pd(s0, s1), _mm256_add_pd(s2, s3));
    double lanes[4];
    _mm256_storeu_pd(lanes, s);
    return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + read_portable(a + i, n - i);
}

AVX2 static void write_avx2(double *c, size_t n, double v, int nt)
{
    size_t i = head_count(c, n, nt ? 64 : 32);   /* NT: whole lines per write-combining buffer */
    write_portable(c, i, v);
    __m256d x = _mm256_set1_pd(v);
    if (nt) {
        for (; i + 16 <= n; i += 16) {
            _mm256_stream_pd(c + i, x);
            _mm256_stream_pd(c + i + 4, x);
            _mm256_stream_pd(c + i + 8, x);
            _mm256_stream_pd(c + i + 12, x);
        }
        _mm_sfence();
    } else {
        for (; i + 16 <= n; i += 16) {
            _mm256_store_pd(c + i, x);
            _mm256_store_pd(c + i + 4, x);
            _mm256_store_pd(c + i + 8, x);
            _mm256_store_pd(c + i + 12, x);
        }
    }
    write_portable(c + i, n - i, v);
}

/* 128 bytes per iteration, all loads before the stores (as STREAM-like
 * hand-written kernels do), so the loads of one block overlap. */
#define COPY_BLOCK_AVX2(STORE)                                  \
    for (; i + 16 <= n; i += 16) {                              \
        __m256d x0 = _mm256_loadu_pd(a + i);                    \
        __m256d x1 = _mm256_loadu_pd(a + i + 4);                \
        __m256d x2 = _mm256_loadu_pd(a + i + 8);                \
        __m256d x3 = _mm256_loadu_pd(a + i + 12);               \
        STORE(c + i, x0);                                       \
        STORE(c + i + 4, x1);                                   \
        STORE(c + i + 8, x2);                                   \
        STORE(c + i + 12, x3);                                  \
    }

AVX2 static void copy_avx2(double *restrict c, const double *restrict a, size_t n, int nt)
{
    size_t i = head_count(c, n, nt ? 64 : 32);   /* NT: whole lines per write-combining buffer */
    copy_portable(c, a, i);
    if (nt) {
        COPY_BLOCK_AVX2(_mm256_stream_pd)
        _mm_sfence();
    } else {
        COPY_BLOCK_AVX2(_mm256_store_pd)
    }
    copy_portable(c + i, a + i, n - i);
}

#define TRIAD_BLOCK_AVX2(STORE)                                                         \
    for (; i + 16 <= n; i += 16) {                                                      \
        __m256d b0 = _mm256_loadu_pd(b + i), c0 = _mm256_loadu_pd(c + i);               \
        __m256d b1 = _mm256_loadu_pd(b + i + 4), c1 = _mm256_loadu_pd(c + i + 4);       \
        __m256d b2 = _mm256_loadu_pd(b + i + 8), c2 = _mm256_loadu_pd(c + i + 8);       \
        __m256d b3 = _mm256_loadu_pd(b + i + 12), c3 = _mm256_loadu_pd(c + i + 12);     \
        STORE(a + i, _mm256_add_pd(b0, _mm256_mul_pd(vs, c0)));                         \
        STORE(a + i + 4, _mm256_add_pd(b1, _mm256_mul_pd(vs, c1)));                     \
        STORE(a + i + 8, _mm256_add_pd(b2, _mm256_mul_pd(vs, c2)));                     \
        STORE(a + i + 12, _mm256_add_pd(b3, _mm256_mul_pd(vs, c3)));                    \
    }

AVX2 static void triad_avx2(double *restrict a, const double *restrict b,
                            const double *restrict c, size_t n, double s, int nt)
{
    size_t i = head_count(a, n, nt ? 64 : 32);   /* NT: whole lines per write-combining buffer */
    triad_portable(a, b, c, i, s);
    __m256d vs = _mm256_set1_pd(s);
    if (nt) {
        TRIAD_BLOCK_AVX2(_mm256_stream_pd)
        _mm_sfence();
    } else {
        TRIAD_BLOCK_AVX2(_mm256_store_pd)
    }
    triad_portable(a + i, b + i, c + i, n - i, s);
}

/* ----------------------------------------------------------------- AVX-512 */

#define AVX512 __attribute__((target("avx512f")))

AVX512 static double read_avx512(const double *a, size_t n)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_add_pd(s0, _mm512_loadu_pd(a + i));
        s1 = _mm512_add_pd(s1, _mm512_loadu_pd(a + i + 8));
        s2 = _mm512_add_pd(s2, _mm512_loadu_pd(a + i + 16));
        s3 = _mm512_add_pd(s3, _mm512_loadu_pd(a + i + 24));
    }
    __m512d s = _mm512_add_pd(_mm512_add_pd(s0, s1), _mm512_add_pd(s2, s3));
    double lanes[8];
    _mm512_storeu_pd(lanes, s);
    double t = 0;
    for (int k = 0; k < 8; k++)
        t += lanes[k];
    return t + read_portable(a + i, n - i);
}

AVX512 static void write_avx512(double *c, size_t n, double v, int nt)
{
    size_t i = head_count(c, n, 64);
    write_portable(c, i, v);
    __m512d x = _mm512_set1_pd(v);
    if (nt) {
        for (; i + 8 <= n; i += 8)
            _mm512_stream_pd(c + i, x);
        _mm_sfence();
    } else {
        for (; i + 8 <= n; i += 8)
            _mm512_store_pd(c + i, x);
    }
    write_portable(c + i, n - i, v);
}

AVX512 static void copy_avx512(double *restrict c, const double *restrict a, size_t n, int nt)
{
    size_t i = head_count(c, n, 64);
    copy_portable(c, a, i);
    if (nt) {
        for (; i + 16 <= n; i += 16) {
            __m512d x0 = _mm512_loadu_pd(a + i), x1 = _mm512_loadu_pd(a + i + 8);
            _mm512_stream_pd(c + i, x0);
            _mm512_stream_pd(c + i + 8, x1);
        }
        _mm_sfence();
    } else {
        for (; i + 16 <= n; i += 16) {
            __m512d x0 = _mm512_loadu_pd(a + i), x1 = _mm512_loadu_pd(a + i + 8);
            _mm512_store_pd(c + i, x0);
            _mm512_store_pd(c + i + 8, x1);
        }
    }
    copy_portable(c + i, a + i, n - i);
}

AVX512 static void triad_avx512(double *restrict a, const double *restrict b,
                                const double *restrict c, size_t n, double s, int nt)
{
    size_t i = head_count(a, n, 64);
    triad_portable(a, b, c, i, s);
    __m512d vs = _mm512_set1_pd(s);
    if (nt) {
        for (; i + 8 <= n; i += 8)
            _mm512_stream_pd(a + i, _mm512_add_pd(_mm512_loadu_pd(b + i), _mm512_mul_pd(vs, _mm512_loadu_pd(c + i))));
        _mm_sfence();
    } else {
        for (; i + 8 <= n; i += 8)
            _mm512_store_pd(a + i, _mm512_add_pd(_mm512_loadu_pd(b + i), _mm512_mul_pd(vs, _mm512_loadu_pd(c + i))));
    }
    triad_portable(a + i, b + i, c + i, n - i, s);
}

#endif /* MLTOOLS_X86 */

int mltools_numa_isa_usable(int isa)
{
    switch (isa) {
    case MLTOOLS_ISA_PORTABLE:
        return 1;
#ifdef MLTOOLS_X86
    case MLTOOLS_ISA_SSE2:
        return mltools_cpu_supports("sse2") == 1;
    case MLTOOLS_ISA_AVX2:
        return mltools_cpu_supports("avx2") == 1;
    case MLTOOLS_ISA_AVX512:
        return mltools_cpu_supports("avx512f") == 1;
#endif
    default:
        return 0;
    }
}

int mltools_numa_best_isa(void)
{
    for (int isa = MLTOOLS_ISA_AVX512; isa > MLTOOLS_ISA_PORTABLE; isa--)
        if (mltools_numa_isa_usable(isa))
            return isa;
    return MLTOOLS_ISA_PORTABLE;
}

double mltools_bw_kernel_apply(int kernel, int nt, int isa, double *a, double *b,
                               double *c, size_t n, double scalar)
{
#ifdef MLTOOLS_X86
    switch (isa) {
    case MLTOOLS_ISA_AVX512:
        switch (kernel) {
        case MLTOOLS_BW_READ: return read_avx512(a, n);
        case MLTOOLS_BW_WRITE: write_avx512(c, n, scalar, nt); return 0;
        case MLTOOLS_BW_COPY: copy_avx512(c, a, n, nt); return 0;
        case MLTOOLS_BW_TRIAD: triad_avx512(a, b, c, n, scalar, nt); return 0;
        }
        return 0;
    case MLTOOLS_ISA_AVX2:
        switch (kernel) {
        case MLTOOLS_BW_READ: return read_avx2(a, n);
        case MLTOOLS_BW_WRITE: write_avx2(c, n, scalar, nt); return 0;
        case MLTOOLS_BW_COPY: copy_avx2(c, a, n, nt); return 0;
        case MLTOOLS_BW_TRIAD: triad_avx2(a, b, c, n, scalar, nt); return 0;
        }
        return 0;
    case MLTOOLS_ISA_SSE2:
        switch (kernel) {
        case MLTOOLS_BW_READ: return read_sse2(a, n);
        case MLTOOLS_BW_WRITE: write_sse2(c, n, scalar, nt); return 0;
        case MLTOOLS_BW_COPY: copy_sse2(c, a, n, nt); return 0;
        case MLTOOLS_BW_TRIAD: triad_sse2(a, b, c, n, scalar, nt); return 0;
        }
        return 0;
    default:
        break;
    }
#endif
    (void)nt;   /* the portable version has no non-temporal store */
    switch (kernel) {
    case MLTOOLS_BW_READ: return read_portable(a, n);
    case MLTOOLS_BW_WRITE: write_portable(c, n, scalar); return 0;
    case MLTOOLS_BW_COPY: copy_portable(c, a, n); return 0;
    case MLTOOLS_BW_TRIAD: triad_portable(a, b, c, n, scalar); return 0;
    }
    return 0;
}

int mltools_hypervisor_vendor(char out[13])
{
    memset(out, 0, 13);
#ifdef MLTOOLS_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 31)))
        return 0;                       /* no hypervisor bit */
    __cpuid(0x40000000, a, b, c, d);
    memcpy(out, &b, 4);
    memcpy(out + 4, &c, 4);
    memcpy(out + 8, &d, 4);
    return 1;
#else
    return 0;
#endif
}
