#include "cpu_features.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define MLTOOLS_X86 1
#else
#define MLTOOLS_X86 0
#endif

int mltools_x86_64_level(void)
{
#if MLTOOLS_X86
    /* __builtin_cpu_supports checks OS support (XSAVE state) too, which
     * /proc/cpuinfo flags alone do not. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4"))
        return 4;
    if (__builtin_cpu_supports("x86-64-v3"))
        return 3;
    if (__builtin_cpu_supports("x86-64-v2"))
        return 2;
    return 1;
#else
    return 0;
#endif
}

int mltools_cpu_supports(const char *feature)
{
#if MLTOOLS_X86
    __builtin_cpu_init();
    /* __builtin_cpu_supports needs a literal, hence the table. */
#define MLTOOLS_FEATURE(name)              \
    if (strcmp(feature, name) == 0)        \
        return __builtin_cpu_supports(name) ? 1 : 0;
    MLTOOLS_FEATURE("sse2")
    MLTOOLS_FEATURE("sse3")
    MLTOOLS_FEATURE("ssse3")
    MLTOOLS_FEATURE("sse4.1")
    MLTOOLS_FEATURE("sse4.2")
    MLTOOLS_FEATURE("popcnt")
    MLTOOLS_FEATURE("avx")
    MLTOOLS_FEATURE("avx2")
    MLTOOLS_FEATURE("fma")
    MLTOOLS_FEATURE("bmi")
    MLTOOLS_FEATURE("bmi2")
    MLTOOLS_FEATURE("avx512f")
    MLTOOLS_FEATURE("avx512bw")
    MLTOOLS_FEATURE("avx512cd")
    MLTOOLS_FEATURE("avx512dq")
    MLTOOLS_FEATURE("avx512vl")
#undef MLTOOLS_FEATURE
    return -1;
#else
    (void)feature;
    return -1;
#endif
}
