/* Kernels for AVX-512F: 8 doubles per vector, 4 vectors make the 32 lanes.
 * Only the functions in this file use AVX-512; they run after a CPU check. */
#include <stdint.h>

#include "summation_internal.h"

#if MLT_HAVE_X86_SIMD
#pragma GCC target("avx512f")

typedef double V64 __attribute__((vector_size(64)));
typedef int64_t VI64 __attribute__((vector_size(64)));
typedef float VH32 __attribute__((vector_size(32)));
typedef float V32 __attribute__((vector_size(64)));
typedef int32_t VI32 __attribute__((vector_size(64)));
typedef float VP32 __attribute__((vector_size(32)));
#define W 8
#define W32 16
#define WP32 8
#define SFX avx512

#include "kernels_isa.h"
#endif
