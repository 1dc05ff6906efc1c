/* Memory bandwidth and latency kernels for `mltools bench numa` (no Python API).
 *
 * Bandwidth kernels work on arrays of double, STREAM style:
 *   read   s  = sum(a)            8 counted bytes per element
 *   write  c  = v                 8 counted (16 with write-allocate)
 *   copy   c  = a                 16 counted (24 with write-allocate)
 *   triad  a  = b + s * c         24 counted (32 with write-allocate)
 * Each has a normal-store and a non-temporal-store variant (read has no store)
 * and an AVX-512, AVX2, SSE2 (x86-64 baseline) and portable C version; the ISA
 * is chosen at run time (csrc/cpu/cpu_features.h). Kernels never allocate.
 *
 * The runner pins one POSIX thread per CPU, first-touches each thread's slice
 * from that thread, times every repetition across all threads (first start to
 * last end) and validates the arrays afterwards.
 */
#ifndef MLTOOLS_NUMA_KERNELS_H
#define MLTOOLS_NUMA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

enum mltools_bw_kernel {
    MLTOOLS_BW_READ = 0,
    MLTOOLS_BW_WRITE = 1,
    MLTOOLS_BW_COPY = 2,
    MLTOOLS_BW_TRIAD = 3,
};

enum mltools_isa {
    MLTOOLS_ISA_PORTABLE = 0,   /* plain C, no non-temporal stores */
    MLTOOLS_ISA_SSE2 = 1,       /* x86-64 baseline */
    MLTOOLS_ISA_AVX2 = 2,
    MLTOOLS_ISA_AVX512 = 3,
};

/* CPUID leaf 0x40000000 vendor ("KVMKVMKVM", "Microsoft Hv", ...) into out
 * (NUL-terminated); 1 when a hypervisor is present, 0 otherwise. */
int mltools_hypervisor_vendor(char out[13]);

/* The best ISA this CPU and this build support. */
int mltools_numa_best_isa(void);
/* 1 when `isa` can run here. */
int mltools_numa_isa_usable(int isa);

/* One kernel call over n elements on the calling thread. `scalar` is v for
 * write and s for triad; unused otherwise. Returns the sum for read, 0
 * otherwise. Returns NaN-free results for any n and any 8-byte alignment. */
double mltools_bw_kernel_apply(int kernel, int nontemporal, int isa, double *a,
                               double *b, double *c, size_t n, double scalar);

/* Values the runner uses so validation can check the last repetition. */
#define MLTOOLS_BW_INIT_A 1.0
#define MLTOOLS_BW_INIT_B 2.0
#define MLTOOLS_BW_INIT_C 0.5

typedef struct {
    int kernel;
    int nontemporal;
    int isa;
    int nthreads;
    const int *cpus;        /* CPU of each thread; -1 leaves it unpinned */
    double *a, *b, *c;      /* nthreads * n_per_thread elements each (b, c may be
                               NULL when the kernel does not use them) */
    size_t n_per_thread;
    int reps;
    int init;               /* first-touch/initialise the slices before timing */
    double *seconds;        /* out: reps wall-clock times */
    double max_rel_error;   /* out: validation after the last repetition */
    int failed_cpu;         /* out: the CPU that could not be pinned, or -1 */
} mltools_bw_job;

/* Runs the job; 0 on success, an errno value when threads could not be
 * created or pinned (failed_cpu says which). */
int mltools_bw_run(mltools_bw_job *job);

/* Expected value of the written array after `reps` repetitions (read: the
 * expected per-element value of a). */
double mltools_bw_expected(int kernel, int reps);

/* Max relative error of the kernel's output over [0, n) against the values the
 * runner's initialisation and `reps` repetitions give. `read_sum` is the sum
 * the last read returned (read kernel only). */
double mltools_bw_validate(int kernel, const double *a, const double *b,
                           const double *c, size_t n, int reps, double read_sum);

/* Latency: a random cyclic permutation (Sattolo) of `n_lines` lines of
 * `line_bytes` each in `buf`; every line's first word points to the next line.
 * Builds in place, no allocation. */
void mltools_chase_build(void *buf, size_t n_lines, size_t line_bytes, uint64_t seed);

/* Follows `steps` pointers from `start`; returns where it stopped. */
void *mltools_chase_walk(void *start, size_t steps);

typedef struct {
    int cpu;                /* -1: unpinned */
    void *buf;
    size_t n_lines;
    size_t line_bytes;
    uint64_t seed;
    int build;              /* build the ring first (from the pinned thread) */
    int samples;
    size_t steps_per_sample;
    double *ns_per_load;    /* out: samples values */
    void *end;              /* out: final pointer (keeps the walk observable) */
} mltools_chase_job;

/* Runs the chase on a thread pinned to job->cpu; 0 or an errno value. */
int mltools_chase_run(mltools_chase_job *job);

#endif
