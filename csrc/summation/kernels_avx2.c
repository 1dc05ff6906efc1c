/* Kernels for AVX2: 4 doubles per vector, 8 vectors make the 32 lanes.
 * Only the functions in this file use AVX2; they run after a CPU check. */
#include <stdint.h>

#include "summation_internal.h"

#if MLT_HAVE_X86_SIMD
#pragma GCC target("avx2")

typedef double V64 __attribute__((vector_size(32)));
typedef int64_t VI64 __attribute__((vector_size(32)));
typedef float VH32 __attribute__((vector_size(16)));
typedef float V32 __attribute__((vector_size(32)));
typedef int32_t VI32 __attribute__((vector_size(32)));
typedef float VP32 __attribute__((vector_size(32)));
#define W 4
#define W32 8
#define WP32 8
#define SFX avx2

#include "kernels_isa.h"
#endif
