/* Threaded runner for the bandwidth kernels, validation, and the pointer chase.
 *
 * Threads pin themselves before touching memory, so first touch (and with
 * it page placement under the default policy) happens on the intended CPU.
 * All state lives in the job and in per-run arrays: nothing global.
 */
#define _GNU_SOURCE
#include "numa_kernels.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int pin_self(int cpu)
{
    if (cpu < 0)
        return 0;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (cpu >= CPU_SETSIZE)
        return EINVAL;
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* Repetition r (0-based) writes these, so validation sees the last one. */
static double write_value(int r) { return (double)(r + 1); }
static double triad_scalar(int r) { return (double)(r + 1); }

double mltools_bw_expected(int kernel, int reps)
{
    switch (kernel) {
    case MLTOOLS_BW_READ: return MLTOOLS_BW_INIT_A;
    case MLTOOLS_BW_WRITE: return reps > 0 ? write_value(reps - 1) : MLTOOLS_BW_INIT_C;
    case MLTOOLS_BW_COPY: return reps > 0 ? MLTOOLS_BW_INIT_A : MLTOOLS_BW_INIT_C;
    case MLTOOLS_BW_TRIAD:
        return reps > 0 ? MLTOOLS_BW_INIT_B + triad_scalar(reps - 1) * MLTOOLS_BW_INIT_C
                        : MLTOOLS_BW_INIT_A;
    }
    return NAN;
}

static double rel_err(double got, double want)
{
    if (got == want)
        return 0.0;
    double e = fabs(got - want) / (want != 0 ? fabs(want) : 1.0);
    return isnan(e) ? INFINITY : e;
}

static double max_rel_err_array(const double *x, size_t n, double want)
{
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = rel_err(x[i], want);
        if (e > worst)
            worst = e;
    }
    return worst;
}

double mltools_bw_validate(int kernel, const double *a, const double *b,
                           const double *c, size_t n, int reps, double read_sum)
{
    double want = mltools_bw_expected(kernel, reps);
    double worst = 0;
    switch (kernel) {
    case MLTOOLS_BW_READ:
        worst = max_rel_err_array(a, n, want);
        if (reps > 0 && n > 0) {
            double e = rel_err(read_sum, want * (double)n);
            if (e > worst)
                worst = e;
        }
        return worst;
    case MLTOOLS_BW_WRITE:
        return max_rel_err_array(c, n, want);
    case MLTOOLS_BW_COPY:
        worst = max_rel_err_array(c, n, want);
        if (a) {
            double e = max_rel_err_array(a, n, MLTOOLS_BW_INIT_A);
            if (e > worst)
                worst = e;
        }
        return worst;
    case MLTOOLS_BW_TRIAD:
        worst = max_rel_err_array(a, n, want);
        if (b) {
            double e = max_rel_err_array(b, n, MLTOOLS_BW_INIT_B);
            if (e > worst)
                worst = e;
        }
        if (c) {
            double e = max_rel_err_array(c, n, MLTOOLS_BW_INIT_C);
            if (e > worst)
                worst = e;
        }
        return worst;
    }
    return INFINITY;
}

/* ------------------------------------------------------------ bandwidth run */

/* Threads wait at this gate until all were created (or one could not be). */
typedef struct {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int state;                 /* 0 wait, 1 go, -1 give up */
} start_gate;

static int gate_wait(start_gate *g)
{
    pthread_mutex_lock(&g->mutex);
    while (g->state == 0)
        pthread_cond_wait(&g->cond, &g->mutex);
    int state = g->state;
    pthread_mutex_unlock(&g->mutex);
    return state;
}

static void gate_open(start_gate *g, int state)
{
    pthread_mutex_lock(&g->mutex);
    g->state = state;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mutex);
}

typedef struct {
    mltools_bw_job *job;
    int index;
    start_gate *gate;
    pthread_barrier_t *barrier;
    double *starts, *ends;     /* per thread, per repetition */
    int error;
    double max_rel_error;
} bw_thread;

static void init_slice(double *x, size_t n, double v)
{
    if (x)
        for (size_t i = 0; i < n; i++)
            x[i] = v;
}

static void *bw_thread_main(void *arg)
{
    bw_thread *t = arg;
    mltools_bw_job *job = t->job;
    size_t n = job->n_per_thread, off = (size_t)t->index * n;
    double *a = job->a ? job->a + off : NULL;
    double *b = job->b ? job->b + off : NULL;
    double *c = job->c ? job->c + off : NULL;

    if (gate_wait(t->gate) < 0)
        return NULL;
    t->error = pin_self(job->cpus ? job->cpus[t->index] : -1);
    if (!t->error && job->init) {
        init_slice(a, n, MLTOOLS_BW_INIT_A);
        init_slice(b, n, MLTOOLS_BW_INIT_B);
        init_slice(c, n, MLTOOLS_BW_INIT_C);
    }
    pthread_barrier_wait(t->barrier);
    /* Every thread runs the same number of barriers even when one failed, so
     * nobody waits forever; the failure is reported after the join. */
    double sum = 0;
    for (int r = 0; r < job->reps; r++) {
        pthread_barrier_wait(t->barrier);
        double t0 = now_s();
        double scalar = job->kernel == MLTOOLS_BW_WRITE ? write_value(r) : triad_scalar(r);
        if (!t->error)
            sum = mltools_bw_kernel_apply(job->kernel, job->nontemporal, job->isa, a, b, c, n, scalar);
        double t1 = now_s();
        t->starts[(size_t)r * (size_t)job->nthreads + (size_t)t->index] = t0;
        t->ends[(size_t)r * (size_t)job->nthreads + (size_t)t->index] = t1;
    }
    if (!t->error)
        t->max_rel_error = mltools_bw_validate(job->kernel, a, b, c, n, job->reps, sum);
    return NULL;
}

int mltools_bw_run(mltools_bw_job *job)
{
    job->failed_cpu = -1;
    job->max_rel_error = INFINITY;
    if (job->nthreads < 1 || job->reps < 0 || !job->a)
        return EINVAL;
    if ((job->kernel == MLTOOLS_BW_COPY || job->kernel == MLTOOLS_BW_WRITE || job->kernel == MLTOOLS_BW_TRIAD) && !job->c)
        return EINVAL;
    if (job->kernel == MLTOOLS_BW_TRIAD && !job->b)
        return EINVAL;

    size_t nt = (size_t)job->nthreads, slots = nt * (size_t)(job->reps > 0 ? job->reps : 1);
    pthread_t *tids = calloc(nt, sizeof *tids);
    bw_thread *th = calloc(nt, sizeof *th);
    double *starts = calloc(slots, sizeof *starts);
    double *ends = calloc(slots, sizeof *ends);
    pthread_barrier_t barrier;
    int rc = 0;
    if (!tids || !th || !starts || !ends) {
        rc = ENOMEM;
        goto out;
    }
    if ((rc = pthread_barrier_init(&barrier, NULL, (unsigned)nt)) != 0)
        goto out;
    start_gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    size_t started = 0;
    for (size_t i = 0; i < nt; i++) {
        th[i] = (bw_thread){job, (int)i, &gate, &barrier, starts, ends, 0, 0.0};
        if ((rc = pthread_create(&tids[i], NULL, bw_thread_main, &th[i])) != 0)
            break;
        started++;
    }
    /* The barrier counts every thread: a partial team must not reach it. */
    gate_open(&gate, started == nt ? 1 : -1);
    for (size_t i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    pthread_barrier_destroy(&barrier);
    if (started < nt)
        goto out;

    for (size_t i = 0; i < nt; i++) {
        if (th[i].error) {
            rc = th[i].error;
            job->failed_cpu = job->cpus ? job->cpus[i] : -1;
            goto out;
        }
    }
    double worst = 0;
    for (size_t i = 0; i < nt; i++)
        if (th[i].max_rel_error > worst || isnan(th[i].max_rel_error))
            worst = th[i].max_rel_error;
    job->max_rel_error = worst;
    for (int r = 0; r < job->reps; r++) {
        double first = starts[(size_t)r * nt], last = ends[(size_t)r * nt];
        for (size_t i = 1; i < nt; i++) {
            if (starts[(size_t)r * nt + i] < first) first = starts[(size_t)r * nt + i];
            if (ends[(size_t)r * nt + i] > last) last = ends[(size_t)r * nt + i];
        }
        job->seconds[r] = last - first;
    }
out:
    free(tids);
    free(th);
    free(starts);
    free(ends);
    return rc;
}

/* ---------------------------------------------------------- pointer chase */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, bound) without modulo bias (Lemire's method). */
static size_t below(uint64_t *state, size_t bound)
{
    __extension__ typedef unsigned __int128 u128;   /* a GCC extension: -Wpedantic knows */
    u128 m = (u128)splitmix64(state) * bound;
    uint64_t lo = (uint64_t)m;
    if (lo < bound) {
        uint64_t threshold = (uint64_t)(-(uint64_t)bound) % bound;
        while (lo < threshold) {
            m = (u128)splitmix64(state) * bound;
            lo = (uint64_t)m;
        }
    }
    return (size_t)(m >> 64);
}

void mltools_chase_build(void *buf, size_t n_lines, size_t line_bytes, uint64_t seed)
{
    char *base = buf;
    if (n_lines == 0)
        return;
    /* next[i] starts as the identity, stored in each line; Sattolo's shuffle
     * (j < i strictly) turns it into one cycle through every line. */
    for (size_t i = 0; i < n_lines; i++)
        *(size_t *)(base + i * line_bytes) = i;
    uint64_t state = seed;
    for (size_t i = n_lines - 1; i > 0; i--) {
        size_t j = below(&state, i);
        size_t *pi = (size_t *)(base + i * line_bytes), *pj = (size_t *)(base + j * line_bytes);
        size_t tmp = *pi;
        *pi = *pj;
        *pj = tmp;
    }
    for (size_t i = 0; i < n_lines; i++) {
        size_t *p = (size_t *)(base + i * line_bytes);
        *(void **)p = base + *p * line_bytes;
    }
}

void *mltools_chase_walk(void *start, size_t steps)
{
    void **p = start;
    size_t i = 0;
    for (; i + 8 <= steps; i += 8) {
        p = *p; p = *p; p = *p; p = *p;
        p = *p; p = *p; p = *p; p = *p;
    }
    for (; i < steps; i++)
        p = *p;
    return p;
}

typedef struct {
    mltools_chase_job *job;
    int error;
} chase_thread;

static void *chase_thread_main(void *arg)
{
    chase_thread *t = arg;
    mltools_chase_job *job = t->job;
    if ((t->error = pin_self(job->cpu)) != 0)
        return NULL;
    if (job->build)
        mltools_chase_build(job->buf, job->n_lines, job->line_bytes, job->seed);
    void *p = job->buf;
    /* One pass over the ring warms caches and TLBs the way a steady state would. */
    p = mltools_chase_walk(p, job->n_lines < job->steps_per_sample ? job->n_lines : job->steps_per_sample);
    for (int s = 0; s < job->samples; s++) {
        double t0 = now_s();
        p = mltools_chase_walk(p, job->steps_per_sample);
        double t1 = now_s();
        job->ns_per_load[s] = (t1 - t0) * 1e9 / (double)job->steps_per_sample;
    }
    job->end = p;
    return NULL;
}

int mltools_chase_run(mltools_chase_job *job)
{
    if (!job->buf || job->n_lines == 0 || job->line_bytes < sizeof(void *) || job->steps_per_sample == 0)
        return EINVAL;
    pthread_t tid;
    chase_thread t = {job, 0};
    int rc = pthread_create(&tid, NULL, chase_thread_main, &t);
    if (rc)
        return rc;
    pthread_join(tid, NULL);
    return t.error;
}
