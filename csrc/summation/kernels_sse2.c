/* Kernels for the x86-64 baseline (SSE2): 2 doubles per vector, 16 vectors
 * make the 32 lanes. Also the portable build elsewhere (GCC vector types). */
#include <stdint.h>

typedef double V64 __attribute__((vector_size(16)));
typedef int64_t VI64 __attribute__((vector_size(16)));
typedef float VH32 __attribute__((vector_size(8)));
typedef float V32 __attribute__((vector_size(16)));
typedef int32_t VI32 __attribute__((vector_size(16)));
typedef float VP32 __attribute__((vector_size(16)));
#define W 2
#define W32 4
#define WP32 4
#define SFX sse2

#include "kernels_isa.h"
