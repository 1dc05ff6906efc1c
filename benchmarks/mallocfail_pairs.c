/* malloc(32) + a write + free, in THREADS threads at once; prints the mean
 * of each thread's own CPU time per pair, in ns (thread CPU time, so that
 * time spent descheduled on a shared machine does not count; stalls on a
 * contended cache line do). Built by mallocfail_bench.py. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long iters;
static double ns_per_pair[64];

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void *body(void *arg) {
    long id = (long)arg;
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        void *p = malloc(32);
        if (!p) abort();
        *(volatile char *)p = (char)i;
        free(p);
    }
    ns_per_pair[id] = (now_ns() - t0) / (double)iters;
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    iters = argc > 2 ? atol(argv[2]) : 1000000;
    if (threads < 1 || threads > 64) return 2;
    pthread_t t[64];
    for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, body, (void *)i);
    double sum = 0;
    for (int i = 0; i < threads; i++) { pthread_join(t[i], NULL); sum += ns_per_pair[i]; }
    printf("%.3f\n", sum / threads);
    return 0;
}
