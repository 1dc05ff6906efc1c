/* mltools malloc-fail: an LD_PRELOAD shim that makes chosen allocations fail.
 *
 * Interposes malloc, calloc, realloc, reallocarray, posix_memalign,
 * aligned_alloc, memalign, valloc and pvalloc (and free, which is never
 * failed and preserves errno). Configuration comes from MLTOOLS_MF_*
 * environment variables, read lazily on the first call or in the
 * constructor, whichever comes first (libstdc++ allocates before any
 * constructor of ours runs). Records go to the mapped record file named by
 * MLTOOLS_MF_RECORDS (csrc/preload/: no descriptor is kept): H (hello: the
 * handshake), F (an injected failure), T (trace of a counted call), S/C
 * (fork-mode points), K (where a process died), E (exec), X (exit counts).
 * The format is parsed by mltools/mallocfail/report.py.
 *
 * Rules this file keeps (see docs/malloc-fail.md):
 *  - no dlsym recursion: forward to glibc's __libc_* entry points, or
 *    (MLTOOLS_MF_FORWARD=next) resolve RTLD_NEXT eagerly at init and serve
 *    allocations made during the resolution from a static bump buffer;
 *  - nothing here allocates: formatting is by hand into stack buffers;
 *  - a failure sets errno = ENOMEM; posix_memalign returns ENOMEM and leaves
 *    errno alone; a failed realloc leaves the old block valid;
 *  - the call index is one relaxed atomic (exact under threads), or a
 *    thread-local counter with MLTOOLS_MF_PER_THREAD=1;
 *  - reallocarray is implemented here on top of the real realloc, so it is
 *    counted once;
 *  - a process the target forks reports its own counts (an atfork handler
 *    starts them afresh and writes its hello).
 */
#define _GNU_SOURCE
#include "preload.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MF_EXPORT PL_EXPORT
#define MF_LIKELY(x) PL_LIKELY(x)
#define MF_UNLIKELY(x) PL_UNLIKELY(x)

enum mf_fn { FN_MALLOC, FN_CALLOC, FN_REALLOC, FN_REALLOCARRAY, FN_POSIX_MEMALIGN,
             FN_ALIGNED_ALLOC, FN_MEMALIGN, FN_VALLOC, FN_PVALLOC, FN_COUNT };
static const char *const fn_names[FN_COUNT] = {
    "malloc", "calloc", "realloc", "reallocarray", "posix_memalign",
    "aligned_alloc", "memalign", "valloc", "pvalloc"};

/* glibc's own entry points: calling them never goes through dlsym. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);

struct real_fns {
    void *(*malloc)(size_t);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    void (*free)(void *);
    void *(*memalign)(size_t, size_t);
    int (*posix_memalign)(void **, size_t, size_t);
    void *(*aligned_alloc)(size_t, size_t);
    void *(*valloc)(size_t);
    void *(*pvalloc)(size_t);
};
static struct real_fns real = {__libc_malloc, __libc_calloc, __libc_realloc, __libc_free,
                               __libc_memalign, NULL, NULL, __libc_valloc, __libc_pvalloc};

struct config {
    uint64_t first;              /* first index that may fail; UINT64_MAX: never */
    uint64_t count;              /* failures from `first`; 0: unlimited */
    uint64_t last;               /* fork mode: last index to try; 0: no limit */
    uint64_t prob_threshold;     /* fail when mix(seed, index) < threshold */
    int use_prob;
    uint64_t seed;
    uint64_t min_size, max_size;
    unsigned funcs;              /* bit per enum mf_fn */
    int per_thread;
    int forward_next;
    int scope;
    int trace;
    int fork_mode;
    uint64_t fork_timeout_ms;
    uint64_t fork_jobs;
    char fork_dir[512];
    uint64_t max_records;
    int frames;
    int ready;                   /* counting is on (init finished) */
    int simple;                  /* no filters, no trace: the fast path (1 global counter, 2 per thread) */
};
static struct config cfg = {.first = UINT64_MAX, .max_size = UINT64_MAX,
                            .funcs = (1u << FN_COUNT) - 1, .max_records = 64, .frames = 16};

/* Fork mode may be limited to chosen indices (--unique-stacks): a bitmap
 * file named by MLTOOLS_MF_FORK_SET, bit i-1 for index i. */
static const unsigned char *fork_set;
static uint64_t fork_set_bits;

/* Per-process facts, set at init (and again in a child the target forks). */
static int injects;              /* this process may fail calls */
static _Atomic uint64_t local_index, local_failures;
static _Atomic uint64_t *index_ctr = &local_index, *failures_ctr = &local_failures;
static const char *role = "passive";
static _Atomic uint64_t f_records;   /* F records this process wrote */
static int fork_point_child;         /* a sweep child made by fork_point */
static int in_fork_point;            /* fork_point's own fork: the atfork handler leaves it alone */

/* Per-thread counts (initial-exec TLS: no __tls_get_addr, no allocation). */
struct tstats {
    uint64_t calls[FN_COUNT], counted[FN_COUNT], failed[FN_COUNT];
    int64_t adjust;               /* realloc bookkeeping for live blocks */
    uint64_t frees, index;
    int registered;
    int busy;                     /* inside the shim: nested calls pass straight through */
    int gate;                     /* 1 exactly when registered and not busy: the fast-path test */
};
static __thread struct tstats tls_stats __attribute__((tls_model("initial-exec")));
#define tls_busy (tls_stats.busy)
static inline void busy_on(void) { tls_stats.busy = 1; tls_stats.gate = 0; }
static inline void busy_off(void) { tls_stats.busy = 0; tls_stats.gate = tls_stats.registered; }
#define MAX_SLOTS 512
static struct tstats *_Atomic slots[MAX_SLOTS];
static _Atomic uint64_t folded_calls[FN_COUNT], folded_counted[FN_COUNT], folded_failed[FN_COUNT];
static _Atomic int64_t folded_adjust;
static _Atomic uint64_t folded_frees;
static pthread_key_t stats_key;
static int stats_key_ok;

/* 0 uninitialised, 1 initialising, 2 ready. */
static _Atomic int init_state;

/* RTLD_NEXT mode: allocations made while dlsym runs come from here. */
static _Alignas(64) unsigned char bump_buf[64 * 1024];
static _Atomic size_t bump_used;

static int in_bump(const void *p) {
    return (const unsigned char *)p >= bump_buf && (const unsigned char *)p < bump_buf + sizeof bump_buf;
}

static void *bump_alloc(size_t size, size_t align) {
    if (align < 16) align = 16;
    size_t old = atomic_load(&bump_used), start, end;
    do {
        start = (old + align - 1) & ~(align - 1);
        end = start + size;
        if (end > sizeof bump_buf || end < start) return NULL;
    } while (!atomic_compare_exchange_weak(&bump_used, &old, end));
    return bump_buf + start;  /* static storage is zeroed: fine for calloc too */
}

static uint64_t mix64(uint64_t x) {   /* splitmix64 finaliser */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* ---- init ----------------------------------------------------------------- */

static void write_hello(void) {
    char line[1600];
    struct pl_buf b = {line, 0, sizeof line};
    pl_hello_begin(&b, role);
    pl_put_str(&b, cfg.forward_next ? "\tforward=next" : "\tforward=libc");
    pl_hello_end(&b);
}

static void resolve_next(void) {
#define RESOLVE(field, name) do { void *p = dlsym(RTLD_NEXT, name); if (p) *(void **)&real.field = p; } while (0)
    RESOLVE(malloc, "malloc");
    RESOLVE(calloc, "calloc");
    RESOLVE(realloc, "realloc");
    RESOLVE(free, "free");
    RESOLVE(memalign, "memalign");
    RESOLVE(posix_memalign, "posix_memalign");
    RESOLVE(aligned_alloc, "aligned_alloc");
    RESOLVE(valloc, "valloc");
    RESOLVE(pvalloc, "pvalloc");
#undef RESOLVE
}

static void fold_stats(void *arg) {
    struct tstats *ts = arg;
    for (int i = 0; i < MAX_SLOTS; i++) {
        struct tstats *expected = ts;
        if (atomic_compare_exchange_strong(&slots[i], &expected, NULL)) break;
    }
    for (int f = 0; f < FN_COUNT; f++) {
        atomic_fetch_add_explicit(&folded_calls[f], ts->calls[f], memory_order_relaxed);
        atomic_fetch_add_explicit(&folded_counted[f], ts->counted[f], memory_order_relaxed);
        atomic_fetch_add_explicit(&folded_failed[f], ts->failed[f], memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&folded_adjust, ts->adjust, memory_order_relaxed);
    atomic_fetch_add_explicit(&folded_frees, ts->frees, memory_order_relaxed);
    memset(ts->calls, 0, sizeof ts->calls);
    memset(ts->counted, 0, sizeof ts->counted);
    memset(ts->failed, 0, sizeof ts->failed);
    ts->adjust = 0;
    ts->frees = 0;
    ts->registered = 0;
    ts->gate = 0;
}

static void do_init(void) {
    const char *e;
    pl_setup("MLTOOLS_MF_", "malloc-fail");
    cfg.first = pl_parse_u64(getenv("MLTOOLS_MF_FIRST"), 0);
    if (cfg.first == 0) cfg.first = UINT64_MAX;
    cfg.count = pl_parse_u64(getenv("MLTOOLS_MF_COUNT"), 0);
    cfg.last = pl_parse_u64(getenv("MLTOOLS_MF_LAST"), 0);
    if ((e = getenv("MLTOOLS_MF_PROB_THRESHOLD")) && *e) {
        cfg.use_prob = 1;
        cfg.prob_threshold = pl_parse_u64(e, 0);
        if (cfg.first == UINT64_MAX) cfg.first = 1;
    }
    cfg.seed = pl_parse_u64(getenv("MLTOOLS_MF_SEED"), 0);
    cfg.min_size = pl_parse_u64(getenv("MLTOOLS_MF_MIN_SIZE"), 0);
    cfg.max_size = pl_parse_u64(getenv("MLTOOLS_MF_MAX_SIZE"), UINT64_MAX);
    cfg.funcs = (unsigned)pl_parse_u64(getenv("MLTOOLS_MF_FUNCS"), (1u << FN_COUNT) - 1);
    cfg.per_thread = pl_parse_u64(getenv("MLTOOLS_MF_PER_THREAD"), 0) != 0;
    cfg.trace = pl_parse_u64(getenv("MLTOOLS_MF_TRACE"), 0) != 0;
    cfg.max_records = pl_parse_u64(getenv("MLTOOLS_MF_MAX_RECORDS"), 64);
    cfg.frames = (int)pl_parse_u64(getenv("MLTOOLS_MF_FRAMES"), 16);
    if (cfg.frames > 32) cfg.frames = 32;
    e = getenv("MLTOOLS_MF_FORWARD");
    cfg.forward_next = e && pl_str_eq(e, "next");
    cfg.scope = pl_scope_from_env();
    if ((e = getenv("MLTOOLS_MF_FORK_DIR")) && *e && pl_str_len(e) < sizeof cfg.fork_dir - 64) {
        cfg.fork_mode = 1;
        for (size_t k = 0; e[k]; k++) cfg.fork_dir[k] = e[k];
        cfg.fork_timeout_ms = pl_parse_u64(getenv("MLTOOLS_MF_FORK_TIMEOUT_MS"), 10000);
        cfg.fork_jobs = pl_parse_u64(getenv("MLTOOLS_MF_FORK_JOBS"), 1);
    }

    if (cfg.forward_next) resolve_next();
}

static void after_fork_in_child(void);

/* The part of init that calls into libc beyond getenv: in RTLD_NEXT mode an
 * ASan runtime may still be initialising (its interceptors are not set up
 * yet), so there it waits for our constructor, which runs after ASan's. */
static void do_init_rest(void) {
    pl_process_init((uintptr_t)&do_init);
    pl_records_open(getenv("MLTOOLS_MF_RECORDS"));
    pl_state_open(getenv("MLTOOLS_MF_STATE"));
    pl_exec_init();

    const char *set_path = getenv("MLTOOLS_MF_FORK_SET");
    if (cfg.fork_mode && set_path && *set_path) {
        int set_fd = pl_sys_open(set_path, O_RDONLY | O_CLOEXEC, 0);
        struct stat sst;
        if (set_fd >= 0 && fstat(set_fd, &sst) == 0 && sst.st_size > 0) {
            void *p = mmap(NULL, (size_t)sst.st_size, PROT_READ, MAP_PRIVATE, set_fd, 0);
            if (p != MAP_FAILED) {
                fork_set = p;
                fork_set_bits = (uint64_t)sst.st_size * 8;
            }
        }
        if (set_fd >= 0) pl_sys_close(set_fd);
    }

    injects = pl_claim_role(cfg.scope, &role);
    if (cfg.scope == PL_SCOPE_TREE && injects) {
        index_ctr = &pl_shared->index;
        failures_ctr = &pl_shared->failures;
    }
    if (pthread_key_create(&stats_key, fold_stats) == 0) stats_key_ok = 1;
    pthread_atfork(NULL, NULL, after_fork_in_child);
    write_hello();
    cfg.simple = (!cfg.trace && cfg.min_size == 0 && cfg.max_size == UINT64_MAX
                  && cfg.funcs == (1u << FN_COUNT) - 1) ? (cfg.per_thread ? 2 : 1) : 0;
    cfg.ready = 1;
}

static int constructed;

/* Returns 1 when the configuration is ready for this thread to use. */
static __attribute__((noinline, cold)) int ensure_init(void) {
    int s = atomic_load_explicit(&init_state, memory_order_acquire);
    if (MF_LIKELY(s == 2)) return 1;
    if (tls_busy) return 0;                 /* reentered from our own init */
    int expected = 0;
    if (atomic_compare_exchange_strong(&init_state, &expected, 1)) {
        busy_on();
        do_init();
        if (!cfg.forward_next || constructed) do_init_rest();
        busy_off();
        atomic_store_explicit(&init_state, 2, memory_order_release);
        return 1;
    }
    while (atomic_load_explicit(&init_state, memory_order_acquire) != 2) sched_yield();
    return 1;
}

__attribute__((constructor)) static void mf_constructor(void) {
    pl_enter = busy_on;
    pl_leave = busy_off;
    constructed = 1;
    ensure_init();
    if (!cfg.ready) {   /* RTLD_NEXT mode, first called before this constructor */
        busy_on();
        do_init_rest();
        busy_off();
    }
}

static void register_thread(struct tstats *ts) {
    ts->registered = 1;
    busy_on();                           /* pthread_setspecific may allocate */
    if (stats_key_ok) pthread_setspecific(stats_key, ts);
    busy_off();
    for (int i = 0; i < MAX_SLOTS; i++) {
        struct tstats *expected = NULL;
        if (atomic_load_explicit(&slots[i], memory_order_relaxed) == NULL
            && atomic_compare_exchange_strong(&slots[i], &expected, ts)) break;
    }
}

/* A process the target forked: its counts start afresh (the copied ones are
 * the parent's), it says hello, and under scope root it is not the root. The
 * sweep's own fork-mode children keep everything (their leak check needs the
 * totals since the start). */
static void after_fork_in_child(void) {
    if (in_fork_point) return;
    pl_process_forked();
    struct tstats *own = &tls_stats;
    for (int i = 0; i < MAX_SLOTS; i++) atomic_store(&slots[i], NULL);
    for (int f = 0; f < FN_COUNT; f++) {
        atomic_store(&folded_calls[f], 0);
        atomic_store(&folded_counted[f], 0);
        atomic_store(&folded_failed[f], 0);
        own->calls[f] = own->counted[f] = own->failed[f] = 0;
    }
    atomic_store(&folded_adjust, 0);
    atomic_store(&folded_frees, 0);
    own->adjust = 0;
    own->frees = 0;
    if (own->registered) {
        own->registered = 0;
        register_thread(own);
    }
    atomic_store(&f_records, 0);
    injects = pl_role_forked(cfg.scope, injects, &role);
    busy_on();
    write_hello();
    busy_off();
}

/* ---- records --------------------------------------------------------------- */

static void record_failure(int fn, size_t size, uint64_t idx, uintptr_t caller) {
    /* a sweep child records its first failure (persistent ones fail many) */
    uint64_t budget = fork_point_child ? 1 : cfg.max_records;
    if (atomic_fetch_add_explicit(&f_records, 1, memory_order_relaxed) >= budget || !pl_records_ready()) return;
    char line[4096];   /* small: this runs on the target's thread stack */
    struct pl_buf b = {line, 0, sizeof line};
    pl_put_str(&b, "F");
    pl_put_kv(&b, "pid", (uint64_t)getpid());
    pl_put_kv(&b, "tid", (uint64_t)gettid());
    pl_put_ks(&b, "fn", fn_names[fn]);
    pl_put_kv(&b, "size", size);
    pl_put_kv(&b, "index", idx);
    pl_put_str(&b, "\tcaller=");
    pl_put_frame(&b, caller);
    uintptr_t ips[32];
    int n = pl_capture(caller, ips, cfg.frames);
    pl_put_frames(&b, ips, n);
    pl_put_ks(&b, "exe", pl_exe);
    pl_emit(&b);
}

static void record_trace(int fn, size_t size, uint64_t idx, uintptr_t caller) {
    uintptr_t ips[8];
    int n = pl_capture(caller, ips, 8);
    char line[4096];
    struct pl_buf b = {line, 0, sizeof line};
    pl_put_str(&b, "T");
    pl_put_kv(&b, "pid", (uint64_t)getpid());
    pl_put_ks(&b, "fn", fn_names[fn]);
    pl_put_kv(&b, "size", size);
    pl_put_kv(&b, "index", idx);
    pl_put_frames(&b, ips, n);
    pl_emit(&b);
}

/* ---- fork mode --------------------------------------------------------------- */

/* Children in flight (MLTOOLS_MF_FORK_JOBS > 1, with pidfds): the parent
 * goes on while up to that many children run, and collects them as they end. */
#define MAX_FLIGHTS 32
struct flight { pid_t pid; int pidfd; uint64_t idx; struct timespec start; };
static struct flight flights[MAX_FLIGHTS];
static int n_flights;

/* Wait until at most `keep` children are in flight. */
static void reap_flights(int keep) {
    while (n_flights > keep) {
        struct pollfd pfd[MAX_FLIGHTS];
        uint64_t wait_ms = cfg.fork_timeout_ms;
        for (int i = 0; i < n_flights; i++) {
            pfd[i] = (struct pollfd){flights[i].pidfd, POLLIN, 0};
            uint64_t used = pl_ms_since(&flights[i].start);
            uint64_t left = used >= cfg.fork_timeout_ms ? 0 : cfg.fork_timeout_ms - used;
            if (left < wait_ms) wait_ms = left;
        }
        int r = poll(pfd, (nfds_t)n_flights, (int)wait_ms);
        if (r < 0 && errno == EINTR) continue;
        for (int i = n_flights - 1; i >= 0; i--) {
            int done = r > 0 && pfd[i].revents != 0;
            if (!done && pl_ms_since(&flights[i].start) < cfg.fork_timeout_ms) continue;
            int status = 0, timed_out = 0;
            if (!done) { kill(flights[i].pid, SIGKILL); timed_out = 1; }
            while (waitpid(flights[i].pid, &status, 0) < 0) {
                if (errno != EINTR) { status = -1; break; }   /* the target reaped it: re-run */
            }
            pl_sys_close(flights[i].pidfd);
            pl_fork_record("C", flights[i].idx, NULL, flights[i].pid, status, timed_out);
            flights[i] = flights[--n_flights];
        }
    }
}

/* Fork mode: the child gets the failure; the parent goes on with the call
 * succeeding, after waiting for the child (or while up to FORK_JOBS run).
 * Returns 1 in the child (fail this call), 0 in the parent. */
static int fork_point(uint64_t idx, uintptr_t caller) {
    if (cfg.last && idx > cfg.last) return 0;
    if (fork_set && (idx - 1 >= fork_set_bits || !((fork_set[(idx - 1) >> 3] >> ((idx - 1) & 7)) & 1)))
        return 0;
    if (pl_is_sys_addr(caller)) { pl_fork_record("S", idx, "libc-caller", 0, 0, 0); return 0; }
    if (pl_count_threads() != 1) { pl_fork_record("S", idx, "threads", 0, 0, 0); return 0; }
    int parallel = cfg.fork_jobs > 1;
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    /* one child at a time: keep the target's SIGCHLD handler out of our wait */
    if (!parallel) sigprocmask(SIG_BLOCK, &block, &old);
    off_t stdin_offset = pl_stdin_offset();   /* before fork: the parent reads on while children run */
    in_fork_point = 1;
    pid_t pid = fork();
    in_fork_point = 0;
    if (pid == 0) {
        if (!parallel) sigprocmask(SIG_SETMASK, &old, NULL);
        for (int i = 0; i < n_flights; i++) pl_sys_close(flights[i].pidfd);
        n_flights = 0;
        cfg.fork_mode = 0;
        fork_point_child = 1;
        role = "sweep-child";
        pl_process_forked();
        atomic_store(&f_records, 0);
        pl_child_stdio(cfg.fork_dir, idx, stdin_offset);
        /* persistent: every later counted call fails too; else only this one */
        cfg.count = pl_parse_u64(getenv("MLTOOLS_MF_PERSISTENT"), 0) ? 0 : 1;
        cfg.first = idx;
        return 1;
    }
    if (pid < 0) {
        if (!parallel) sigprocmask(SIG_SETMASK, &old, NULL);
        pl_fork_record("S", idx, "fork-failed", 0, 0, 0);
        return 0;
    }
    if (parallel) {
        int pidfd = -1;
#ifdef SYS_pidfd_open
        pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
        if (pidfd >= 0) {
            flights[n_flights].pid = pid;
            flights[n_flights].pidfd = pidfd;
            flights[n_flights].idx = idx;
            clock_gettime(CLOCK_MONOTONIC, &flights[n_flights].start);
            n_flights++;
            int keep = cfg.fork_jobs > MAX_FLIGHTS ? MAX_FLIGHTS : (int)cfg.fork_jobs;
            reap_flights(keep - 1);
            return 0;
        }
    }
    int status = 0, timed_out = 0;
    pl_wait_child(pid, cfg.fork_timeout_ms, &status, &timed_out);
    if (!parallel) sigprocmask(SIG_SETMASK, &old, NULL);
    pl_fork_record("C", idx, NULL, pid, status, timed_out);
    return 0;
}

/* ---- the decision ---------------------------------------------------------- */

static __attribute__((noinline)) int slow_decide(int fn, size_t size, uint64_t idx, uintptr_t caller) {
    if (!injects) return 0;
    /* past the window of a --fail-at/--count run: the common case after a failure */
    if (!cfg.fork_mode && !cfg.use_prob && cfg.count && idx - cfg.first >= cfg.count) return 0;
    if (cfg.use_prob && !cfg.fork_mode && mix64(cfg.seed ^ mix64(idx)) >= cfg.prob_threshold) return 0;
    /* root scope: a forked child of the root is not the root (getpid only here, off the fast path) */
    if (cfg.scope == PL_SCOPE_ROOT && getpid() != pl_pid) return 0;
    int fail = 1;
    busy_on();
    if (cfg.fork_mode)
        fail = fork_point(idx, caller);
    else if (cfg.use_prob && cfg.count)
        fail = atomic_fetch_add_explicit(failures_ctr, 1, memory_order_relaxed) < cfg.count;
    if (fail) {
        tls_stats.failed[fn]++;
        record_failure(fn, size, idx, caller);
        pl_install_crash_handlers();
    }
    busy_off();
    return fail;
}

static __attribute__((noinline)) int should_fail_slow(int fn, size_t size, uintptr_t caller) {
    if (MF_UNLIKELY(atomic_load_explicit(&init_state, memory_order_acquire) != 2) && !ensure_init()) return 0;
    if (tls_busy || !cfg.ready) return 0;
    struct tstats *ts = &tls_stats;
    if (!ts->registered) register_thread(ts);
    ts->calls[fn]++;
    if (!((cfg.funcs >> fn) & 1u) || size < cfg.min_size || size > cfg.max_size) return 0;
    if (!cfg.simple) ts->counted[fn]++;   /* simple: counted == calls */
    uint64_t idx = cfg.per_thread ? ++ts->index
                                  : atomic_fetch_add_explicit(index_ctr, 1, memory_order_relaxed) + 1;
    if (cfg.trace) {
        busy_on();
        record_trace(fn, size, idx, caller);
        busy_off();
    }
    if (idx < cfg.first) return 0;
    return slow_decide(fn, size, idx, caller);
}

/* The fast path: one thread-local test, one counter, one compare. */
static inline int should_fail(int fn, size_t size, uintptr_t caller) {
    struct tstats *ts = &tls_stats;
    int simple = cfg.simple;
    if (MF_LIKELY(ts->gate == 1 && simple)) {
        ts->calls[fn]++;
        uint64_t idx = MF_LIKELY(simple == 1) ? atomic_fetch_add_explicit(index_ctr, 1, memory_order_relaxed) + 1
                                              : ++ts->index;
        if (MF_LIKELY(idx < cfg.first)) return 0;
        return slow_decide(fn, size, idx, caller);
    }
    return should_fail_slow(fn, size, caller);
}

#define CALLER ((uintptr_t)__builtin_return_address(0))

/* In RTLD_NEXT mode, while our own init runs dlsym, the real functions are
 * not known yet: those allocations come from the bump buffer. */
extern char **environ;
static inline int early(void) {
    /* also before libc has set up environ (an ASan runtime's preinit hook
     * allocates that early): the configuration cannot be read yet */
    return MF_UNLIKELY(atomic_load_explicit(&init_state, memory_order_relaxed) != 2)
           && ((cfg.forward_next && tls_busy) || environ == NULL);
}

/* Live blocks at exit are derived from the counts (successful calls minus
 * frees), so the fast paths end in a tail call to the real allocator. */
#define FORWARD(libc_call, next_call) (MF_LIKELY(!cfg.forward_next) ? (libc_call) : (next_call))

MF_EXPORT void *malloc(size_t size) {
    if (early()) return bump_alloc(size, 16);
    if (MF_UNLIKELY(should_fail(FN_MALLOC, size, CALLER))) { errno = ENOMEM; return NULL; }
    return FORWARD(__libc_malloc(size), real.malloc(size));
}

MF_EXPORT void *calloc(size_t nmemb, size_t size) {
    size_t total;
    int overflow = __builtin_mul_overflow(nmemb, size, &total);
    if (early()) return overflow ? NULL : bump_alloc(total, 16);
    if (MF_UNLIKELY(should_fail(FN_CALLOC, overflow ? SIZE_MAX : total, CALLER))) { errno = ENOMEM; return NULL; }
    return FORWARD(__libc_calloc(nmemb, size), real.calloc(nmemb, size));
}

static void *realloc_common(int fn, void *old, size_t size, uintptr_t caller) {
    if (MF_UNLIKELY(early() || in_bump(old))) {
        void *p = in_bump(old) && !early() ? real.malloc(size) : bump_alloc(size, 16);
        if (p && old) {
            size_t avail = (size_t)(bump_buf + sizeof bump_buf - (unsigned char *)old);
            memcpy(p, old, size < avail ? size : avail);
        }
        return p;
    }
    if (should_fail(fn, size, caller)) { errno = ENOMEM; return NULL; }   /* old block untouched */
    void *p = FORWARD(__libc_realloc(old, size), real.realloc(old, size));
    if (MF_LIKELY(!tls_busy)) {
        /* a realloc of a block is neither a new block nor a free */
        if (old && p) tls_stats.adjust--;
        else if (old && size == 0 && !p) { tls_stats.adjust--; tls_stats.frees++; }
    }
    return p;
}

MF_EXPORT void *realloc(void *old, size_t size) {
    return realloc_common(FN_REALLOC, old, size, CALLER);
}

MF_EXPORT void *reallocarray(void *old, size_t nmemb, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(nmemb, size, &total)) { errno = ENOMEM; return NULL; }
    return realloc_common(FN_REALLOCARRAY, old, total, CALLER);
}

MF_EXPORT void free(void *p) {
    if (!p || MF_UNLIKELY(in_bump(p))) return;
    struct tstats *ts = &tls_stats;
    if (MF_LIKELY(ts->gate == 1)) {
        ts->frees++;
    } else if (!ts->busy && cfg.ready) {
        register_thread(ts);
        ts->frees++;
    }
    if (MF_LIKELY(!cfg.forward_next)) {
        __libc_free(p);                     /* glibc >= 2.33 preserves errno itself */
        return;
    }
    int saved = errno;
    real.free(p);
    errno = saved;
}

static int valid_posix_alignment(size_t a) {
    return a != 0 && a % sizeof(void *) == 0 && (a & (a - 1)) == 0;
}

MF_EXPORT int posix_memalign(void **out, size_t alignment, size_t size) {
    if (early()) {
        void *p = bump_alloc(size, alignment);
        if (!p) return ENOMEM;
        *out = p;
        return 0;
    }
    if (!valid_posix_alignment(alignment)) return EINVAL;
    if (should_fail(FN_POSIX_MEMALIGN, size, CALLER)) return ENOMEM;   /* errno untouched */
    int saved = errno;
    int rc;
    if (real.posix_memalign) {
        rc = real.posix_memalign(out, alignment, size);
    } else {
        void *p = __libc_memalign(alignment, size);
        rc = p ? 0 : ENOMEM;
        if (p) *out = p;
    }
    errno = saved;
    return rc;
}

MF_EXPORT void *aligned_alloc(size_t alignment, size_t size) {
    if (early()) return bump_alloc(size, alignment);
    if (should_fail(FN_ALIGNED_ALLOC, size, CALLER)) { errno = ENOMEM; return NULL; }
    /* glibc 2.36: aligned_alloc is memalign */
    return real.aligned_alloc ? real.aligned_alloc(alignment, size) : __libc_memalign(alignment, size);
}

MF_EXPORT void *memalign(size_t alignment, size_t size) {
    if (early()) return bump_alloc(size, alignment);
    if (should_fail(FN_MEMALIGN, size, CALLER)) { errno = ENOMEM; return NULL; }
    return FORWARD(__libc_memalign(alignment, size), real.memalign(alignment, size));
}

MF_EXPORT void *valloc(size_t size) {
    if (early()) return bump_alloc(size, 4096);
    if (should_fail(FN_VALLOC, size, CALLER)) { errno = ENOMEM; return NULL; }
    return FORWARD(__libc_valloc(size), real.valloc(size));
}

MF_EXPORT void *pvalloc(size_t size) {
    if (early()) return bump_alloc(size, 4096);
    if (should_fail(FN_PVALLOC, size, CALLER)) { errno = ENOMEM; return NULL; }
    return FORWARD(__libc_pvalloc(size), real.pvalloc(size));
}

/* ---- exit report ----------------------------------------------------------- */

__attribute__((destructor)) static void mf_destructor(void) {
    if (atomic_load(&init_state) != 2 || !pl_records_ready()) return;
    if (n_flights && getpid() == pl_pid) {
        busy_on();
        reap_flights(0);
        busy_off();
    }
    uint64_t calls[FN_COUNT], counted[FN_COUNT], failed[FN_COUNT], frees;
    int64_t adjust;
    for (int f = 0; f < FN_COUNT; f++) {
        calls[f] = atomic_load(&folded_calls[f]);
        counted[f] = atomic_load(&folded_counted[f]);
        failed[f] = atomic_load(&folded_failed[f]);
    }
    adjust = atomic_load(&folded_adjust);
    frees = atomic_load(&folded_frees);
    for (int i = 0; i < MAX_SLOTS; i++) {
        struct tstats *ts = atomic_load(&slots[i]);
        if (!ts) continue;
        for (int f = 0; f < FN_COUNT; f++) {
            calls[f] += __atomic_load_n(&ts->calls[f], __ATOMIC_RELAXED);
            counted[f] += __atomic_load_n(&ts->counted[f], __ATOMIC_RELAXED);
            failed[f] += __atomic_load_n(&ts->failed[f], __ATOMIC_RELAXED);
        }
        adjust += __atomic_load_n(&ts->adjust, __ATOMIC_RELAXED);
        frees += __atomic_load_n(&ts->frees, __ATOMIC_RELAXED);
    }
    if (cfg.simple)
        for (int f = 0; f < FN_COUNT; f++) counted[f] = calls[f];
    char line[2048];
    struct pl_buf b = {line, 0, sizeof line};
    pl_exit_begin(&b, role);
    for (int f = 0; f < FN_COUNT; f++) pl_put_fn_counts(&b, fn_names[f], calls[f], counted[f], failed[f]);
    pl_put_kv(&b, "index", atomic_load(index_ctr));
    /* blocks handed out: successful calls, less reallocs of an existing block */
    uint64_t allocs = 0;
    for (int f = 0; f < FN_COUNT; f++) allocs += calls[f] - failed[f];
    allocs = (uint64_t)((int64_t)allocs + adjust);
    pl_put_kv(&b, "allocs", allocs);
    pl_put_kv(&b, "frees", frees);
    pl_emit(&b);
}
