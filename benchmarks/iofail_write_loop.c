/* A tight write loop for mltools io-fail's cost: N write() calls of SIZE bytes to PATH.
 * Prints wall and CPU (CLOCK_PROCESS_CPUTIME_ID) nanoseconds per call. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double ns(const struct timespec *a, const struct timespec *b) {
    return (double)(b->tv_sec - a->tv_sec) * 1e9 + (double)(b->tv_nsec - a->tv_nsec);
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/dev/null";
    long n = argc > 2 ? atol(argv[2]) : 1000000;
    size_t size = argc > 3 ? (size_t)atol(argv[3]) : 64;
    static char buf[4096];
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 1; }
    int is_file = strcmp(path, "/dev/null") != 0;
    struct timespec w0, w1, c0, c1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    for (long i = 0; i < n; i++) {
        if (write(fd, buf, size) != (ssize_t)size) { perror("write"); return 2; }
        if (is_file && (i & 4095) == 4095) lseek(fd, 0, SEEK_SET);   /* keep a tmpfs file small */
    }
    clock_gettime(CLOCK_MONOTONIC, &w1);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    close(fd);
    printf("%.2f %.2f\n", ns(&w0, &w1) / (double)n, ns(&c0, &c1) / (double)n);
    return 0;
}
