/* Kernels for AVX-512F: 8 doubles per vector, 3 vectors make the 24 lanes.
 * Only the functions in this file use AVX-512; they run after a CPU check. */
#include <stdint.h>

#include "summation_internal.h"

#if MLT_HAVE_X86_SIMD
#pragma GCC target("avx512f,avx2")

typedef double V64 __attribute__((vector_size(64)));
typedef int64_t VI64 __attribute__((vector_size(64)));
typedef float V32 __attribute__((vector_size(64)));
typedef int32_t VI32 __attribute__((vector_size(64)));
typedef float VP32 __attribute__((vector_size(32)));
#define W 8
#define W32 16
#define WP32 8
#define SFX avx512

#include <immintrin.h>
#define CVT_F32(p) ((V64)_mm512_cvtps_pd(_mm256_loadu_ps(p)))

#include "xr_avx2.h"

#include "kernels_isa.h"
#endif
