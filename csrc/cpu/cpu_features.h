/* Run-time CPU feature detection for x86-64 (no Python API).
 * Kernels elsewhere in csrc/ use these to pick an ISA at run time. */
#ifndef MLTOOLS_CPU_FEATURES_H
#define MLTOOLS_CPU_FEATURES_H

/* x86-64 micro-architecture level (psABI): 1..4, or 0 off x86-64. */
int mltools_x86_64_level(void);

/* 1 when the CPU and OS support the named feature ("avx2", "avx512f", ...),
 * 0 when not, -1 for a name this build does not know. */
int mltools_cpu_supports(const char *feature);

#endif
