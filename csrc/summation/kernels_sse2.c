/* Kernels for the x86-64 baseline (SSE2): 2 doubles per vector, 12 vectors
 * make the 24 lanes. Also the portable build elsewhere (GCC vector types). */
#include <stdint.h>

typedef double V64 __attribute__((vector_size(16)));
typedef int64_t VI64 __attribute__((vector_size(16)));
typedef float V32 __attribute__((vector_size(16)));
typedef int32_t VI32 __attribute__((vector_size(16)));
typedef float VP32 __attribute__((vector_size(16)));
#define W 2
#define W32 4
#define WP32 4
#define SFX sse2
#if defined(__SSE2__)
#include <emmintrin.h>
#define CVT_F32(p) ((V64)_mm_cvtps_pd(_mm_castpd_ps(_mm_load_sd((const double *)(const void *)(p)))))
#else
typedef float VH32 __attribute__((vector_size(8)));
static inline V64 cvt_f32_portable(const float *p)
{
    VH32 h;
    __builtin_memcpy(&h, p, sizeof h);
    return __builtin_convertvector(h, V64);
}
#define CVT_F32(p) cvt_f32_portable(p)
#endif

#include "kernels_isa.h"
