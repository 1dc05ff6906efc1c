/* A plain C pointer chase, the reference for `mltools bench numa` latency.
 *
 *   numa_chase RING_BYTES STEPS SAMPLES CPU [4k|thp]
 *
 * Random cyclic permutation of 64-byte lines (its own Sattolo shuffle with a
 * different generator from mltools'), one dependent load per step; prints the
 * median ns per load over SAMPLES timed walks. Build: gcc -O2 numa_chase.c
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return *s = x;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s RING_BYTES STEPS SAMPLES CPU [4k|thp]\n", argv[0]);
        return 2;
    }
    size_t bytes = strtoull(argv[1], NULL, 0), steps = strtoull(argv[2], NULL, 0);
    int samples = atoi(argv[3]), cpu = atoi(argv[4]);
    int thp = argc < 6 || strcmp(argv[5], "4k") != 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) { perror("sched_setaffinity"); return 1; }
    size_t align = 2u << 20;
    char *raw = mmap(NULL, bytes + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) { perror("mmap"); return 1; }
    char *buf = (char *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
    madvise(buf, bytes, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    size_t n = bytes / 64;
    for (size_t i = 0; i < n; i++)
        *(size_t *)(buf + i * 64) = i;
    uint64_t s = 88172645463325252ull;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = xorshift(&s) % i;
        size_t *pi = (size_t *)(buf + i * 64), *pj = (size_t *)(buf + j * 64), t = *pi;
        *pi = *pj; *pj = t;
    }
    for (size_t i = 0; i < n; i++)
        *(void **)(buf + i * 64) = buf + *(size_t *)(buf + i * 64) * 64;
    void **p = (void **)buf;
    for (size_t i = 0; i < (n < steps ? n : steps); i++)
        p = *p;
    double *ns = calloc((size_t)samples, sizeof *ns);
    for (int k = 0; k < samples; k++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (size_t i = 0; i < steps; i++)
            p = *p;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        ns[k] = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / (double)steps;
    }
    qsort(ns, (size_t)samples, sizeof *ns, cmp);
    printf("%.3f %p\n", ns[samples / 2], (void *)p);
    return 0;
}
