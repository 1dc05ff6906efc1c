/* mltools malloc-fail: an LD_PRELOAD shim that makes chosen allocations fail.
 *
 * Interposes malloc, calloc, realloc, reallocarray, posix_memalign,
 * aligned_alloc, memalign, valloc and pvalloc (and free, which is never
 * failed and preserves errno). Configuration comes from MLTOOLS_MF_*
 * environment variables, read lazily on the first call or in the
 * constructor, whichever comes first (libstdc++ allocates before any
 * constructor of ours runs). Records go to the file descriptor named by
 * MLTOOLS_MF_FD, one line per write(): H (hello: the handshake), F (an
 * injected failure), T (trace of a counted call), S/C (fork-mode points),
 * X (exit counts). The format is parsed by mltools/mallocfail/report.py.
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
 *    counted once.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <ucontext.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <unwind.h>

#define MF_EXPORT __attribute__((visibility("default")))
#define MF_LIKELY(x) __builtin_expect(!!(x), 1)
#define MF_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define MF_PROTOCOL_VERSION 1
#ifndef MF_CHECK_RECORD_FD
#define MF_CHECK_RECORD_FD 1   /* 0 only to prove the test that needs it */
#endif

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

/* State shared across the process tree through a MAP_SHARED page the parent
 * passes (MLTOOLS_MF_STATE_FD); a private copy when there is none. */
struct shared_state {
    _Atomic int root_pid;        /* the process that claimed "root" */
    _Atomic uint64_t index;      /* tree scope: the one call counter */
    _Atomic uint64_t failures;   /* tree scope: failures injected */
    _Atomic uint64_t records;    /* F records written (all processes) */
};
static struct shared_state private_state;
static struct shared_state *shared = &private_state;

enum scope { SCOPE_ROOT, SCOPE_TREE, SCOPE_EACH };

struct config {
    int fd;                      /* report fd, -1 for none */
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
static struct config cfg = {.fd = -1, .first = UINT64_MAX, .max_size = UINT64_MAX,
                            .funcs = (1u << FN_COUNT) - 1, .max_records = 64, .frames = 16};

/* Fork mode may be limited to chosen indices (--unique-stacks): a bitmap
 * file the parent passes, bit i-1 for index i. */
static const unsigned char *fork_set;
static uint64_t fork_set_bits;

/* Per-process facts, set at init. */
static int injects;              /* this process may fail calls */
static pid_t my_pid;
static _Atomic uint64_t local_index, local_failures;
static _Atomic uint64_t *index_ctr = &local_index, *failures_ctr = &local_failures;
static char exe_path[1024];
static const char *role = "passive";
static uintptr_t main_base;     /* load bias of the executable; 0 when not PIE */
static int n_main_ranges, phdr_seen;
struct range { uintptr_t lo, hi; };
#define MAX_MAIN_RANGES 8
#define MAX_SYS_RANGES 16
static struct range main_ranges[MAX_MAIN_RANGES];
static struct range sys_ranges[MAX_SYS_RANGES];   /* libc, ld.so, this shim: "not user code" */
static int n_sys_ranges;

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

/* ---- small allocation-free formatting ------------------------------------ */

struct buf { char *p; size_t len, cap; };

static void put_str(struct buf *b, const char *s) {
    while (*s && b->len + 1 < b->cap) b->p[b->len++] = *s++;
}

/* A value from outside (a path): tabs and newlines would break the record. */
static void put_val(struct buf *b, const char *s) {
    while (*s && b->len + 1 < b->cap) {
        char c = *s++;
        b->p[b->len++] = (c == '\t' || c == '\n' || c == '|') ? ' ' : c;
    }
}

static void put_u64(struct buf *b, uint64_t v) {
    char tmp[24];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n && b->len + 1 < b->cap) b->p[b->len++] = tmp[--n];
}

static void put_hex(struct buf *b, uint64_t v) {
    char tmp[20];
    int n = 0;
    do { tmp[n++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    put_str(b, "0x");
    while (n && b->len + 1 < b->cap) b->p[b->len++] = tmp[--n];
}

static void put_kv(struct buf *b, const char *key, uint64_t v) {
    put_str(b, "\t");
    put_str(b, key);
    put_str(b, "=");
    put_u64(b, v);
}

/* The record file's identity: a target that closes our descriptor and opens
 * a file of its own under the same number must never get our records. */
static dev_t record_dev;
static ino_t record_ino;

static void emit_line(struct buf *b) {
    if (cfg.fd < 0) return;
    struct stat st;
    if (MF_CHECK_RECORD_FD && (fstat(cfg.fd, &st) != 0 || st.st_dev != record_dev || st.st_ino != record_ino)) {
        cfg.fd = -1;
        return;
    }
    if (b->len + 1 >= b->cap) b->len = b->cap - 2;
    b->p[b->len++] = '\n';
    int saved = errno;
    size_t off = 0;
    while (off < b->len) {
        ssize_t n = write(cfg.fd, b->p + off, b->len - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        off += (size_t)n;
    }
    errno = saved;
}

/* Own string helpers for init: an ASan runtime intercepts strcmp and friends
 * and may not be ready when the first allocation arrives. */
static int str_eq(const char *a, const char *b) {
    while (*a && *a == *b) { a++; b++; }
    return *a == *b;
}

static size_t str_len(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

static uint64_t parse_u64(const char *s, uint64_t dflt) {
    if (!s || !*s) return dflt;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) v = v * 10 + (uint64_t)(*s - '0');
    return v;
}

static uint64_t mix64(uint64_t x) {   /* splitmix64 finaliser */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* ---- init ----------------------------------------------------------------- */

static int phdr_cb(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    uintptr_t self = (uintptr_t)data;
    int is_main = phdr_seen++ == 0;      /* the executable always comes first */
    if (is_main) main_base = info->dlpi_addr;
    int is_sys = strstr(name, "/libc.so") != NULL || strstr(name, "/ld-linux") != NULL
                 || strstr(name, "/ld64.so") != NULL;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (is_main && n_main_ranges < MAX_MAIN_RANGES) main_ranges[n_main_ranges++] = (struct range){lo, hi};
        if ((is_sys || (self >= lo && self < hi)) && n_sys_ranges < MAX_SYS_RANGES)
            sys_ranges[n_sys_ranges++] = (struct range){lo, hi};
    }
    return 0;
}

static int is_sys_addr(uintptr_t a) {
    for (int i = 0; i < n_sys_ranges; i++)
        if (a >= sys_ranges[i].lo && a < sys_ranges[i].hi) return 1;
    return 0;
}

static int exe_matches(const char *spec, dev_t dev, ino_t ino) {
    /* spec: "dev:ino[,dev:ino...]" */
    while (spec && *spec) {
        uint64_t d = parse_u64(spec, 0);
        const char *colon = strchr(spec, ':');
        if (!colon) return 0;
        uint64_t i = parse_u64(colon + 1, 0);
        if (d == (uint64_t)dev && i == (uint64_t)ino) return 1;
        spec = strchr(colon, ',');
        if (spec) spec++;
    }
    return 0;
}

static void write_hello(void) {
    char line[1600];
    struct buf b = {line, 0, sizeof line};
    put_str(&b, "H");
    put_kv(&b, "version", MF_PROTOCOL_VERSION);
    put_kv(&b, "pid", (uint64_t)my_pid);
    put_kv(&b, "ppid", (uint64_t)getppid());
    put_str(&b, "\trole=");
    put_str(&b, role);
    put_str(&b, cfg.forward_next ? "\tforward=next" : "\tforward=libc");
    put_str(&b, "\texe=");
    put_val(&b, exe_path);
    emit_line(&b);
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
    cfg.fd = (int)parse_u64(getenv("MLTOOLS_MF_FD"), (uint64_t)-1);
    if (getenv("MLTOOLS_MF_FD") == NULL) cfg.fd = -1;
    struct stat rst;
    if (cfg.fd >= 0 && fstat(cfg.fd, &rst) == 0) {
        record_dev = rst.st_dev;
        record_ino = rst.st_ino;
    } else {
        cfg.fd = -1;
    }
    cfg.first = parse_u64(getenv("MLTOOLS_MF_FIRST"), 0);
    if (cfg.first == 0) cfg.first = UINT64_MAX;
    cfg.count = parse_u64(getenv("MLTOOLS_MF_COUNT"), 0);
    cfg.last = parse_u64(getenv("MLTOOLS_MF_LAST"), 0);
    if ((e = getenv("MLTOOLS_MF_PROB_THRESHOLD")) && *e) {
        cfg.use_prob = 1;
        cfg.prob_threshold = parse_u64(e, 0);
        if (cfg.first == UINT64_MAX) cfg.first = 1;
    }
    cfg.seed = parse_u64(getenv("MLTOOLS_MF_SEED"), 0);
    cfg.min_size = parse_u64(getenv("MLTOOLS_MF_MIN_SIZE"), 0);
    cfg.max_size = parse_u64(getenv("MLTOOLS_MF_MAX_SIZE"), UINT64_MAX);
    cfg.funcs = (unsigned)parse_u64(getenv("MLTOOLS_MF_FUNCS"), (1u << FN_COUNT) - 1);
    cfg.per_thread = parse_u64(getenv("MLTOOLS_MF_PER_THREAD"), 0) != 0;
    cfg.trace = parse_u64(getenv("MLTOOLS_MF_TRACE"), 0) != 0;
    cfg.max_records = parse_u64(getenv("MLTOOLS_MF_MAX_RECORDS"), 64);
    cfg.frames = (int)parse_u64(getenv("MLTOOLS_MF_FRAMES"), 16);
    if (cfg.frames > 32) cfg.frames = 32;
    e = getenv("MLTOOLS_MF_FORWARD");
    cfg.forward_next = e && str_eq(e, "next");
    e = getenv("MLTOOLS_MF_SCOPE");
    cfg.scope = !e ? SCOPE_ROOT : str_eq(e, "tree") ? SCOPE_TREE : str_eq(e, "each") ? SCOPE_EACH : SCOPE_ROOT;
    if ((e = getenv("MLTOOLS_MF_FORK_DIR")) && *e && str_len(e) < sizeof cfg.fork_dir - 64) {
        cfg.fork_mode = 1;
        for (size_t k = 0; e[k]; k++) cfg.fork_dir[k] = e[k];
        cfg.fork_timeout_ms = parse_u64(getenv("MLTOOLS_MF_FORK_TIMEOUT_MS"), 10000);
        cfg.fork_jobs = parse_u64(getenv("MLTOOLS_MF_FORK_JOBS"), 1);
    }

    if (cfg.forward_next) resolve_next();
}

/* The part of init that calls into libc beyond getenv: in RTLD_NEXT mode an
 * ASan runtime may still be initialising (its interceptors are not set up
 * yet), so there it waits for our constructor, which runs after ASan's. */
static void do_init_rest(void) {
    my_pid = getpid();
    ssize_t n = readlink("/proc/self/exe", exe_path, sizeof exe_path - 1);
    exe_path[n > 0 ? n : 0] = '\0';
    dl_iterate_phdr(phdr_cb, (void *)(uintptr_t)&do_init);

    if (cfg.fork_mode && getenv("MLTOOLS_MF_FORK_SET_FD")) {
        int set_fd = (int)parse_u64(getenv("MLTOOLS_MF_FORK_SET_FD"), 0);
        struct stat sst;
        if (fstat(set_fd, &sst) == 0 && sst.st_size > 0) {
            void *p = mmap(NULL, (size_t)sst.st_size, PROT_READ, MAP_PRIVATE, set_fd, 0);
            if (p != MAP_FAILED) {
                fork_set = p;
                fork_set_bits = (uint64_t)sst.st_size * 8;
            }
        }
    }
    uint64_t state_fd = parse_u64(getenv("MLTOOLS_MF_STATE_FD"), (uint64_t)-1);
    if (getenv("MLTOOLS_MF_STATE_FD")) {
        void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, (int)state_fd, 0);
        if (p != MAP_FAILED) shared = p;
    }

    /* Which processes inject: see "Scope" in docs/malloc-fail.md. */
    struct stat st;
    int exe_ok = stat("/proc/self/exe", &st) == 0;
    const char *target = getenv("MLTOOLS_MF_TARGET");
    const char *exclude = getenv("MLTOOLS_MF_EXCLUDE");
    int eligible;
    if (target && *target) eligible = exe_ok && exe_matches(target, st.st_dev, st.st_ino);
    else eligible = !(exe_ok && exclude && exe_matches(exclude, st.st_dev, st.st_ino));
    int root_before = atomic_load(&shared->root_pid);
    if (cfg.scope == SCOPE_EACH) {
        injects = eligible;
        role = eligible ? "each" : "not-target";
    } else if (root_before == 0 || root_before == my_pid) {
        int expected = 0;
        if (eligible && (root_before == my_pid || atomic_compare_exchange_strong(&shared->root_pid, &expected, my_pid))) {
            injects = 1;
            role = "root";
        } else {
            role = eligible ? "root-taken" : "not-target";
        }
    } else if (cfg.scope == SCOPE_TREE) {
        injects = 1;       /* started after the root: in its tree */
        role = "tree";
    } else {
        role = eligible ? "not-root" : "not-target";
    }
    /* sweeps: hundreds of aborting runs must not each write a core file */
    if (injects && parse_u64(getenv("MLTOOLS_MF_NO_CORE"), 0)) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
    }
    if (cfg.scope == SCOPE_TREE && injects) {
        index_ctr = &shared->index;
        failures_ctr = &shared->failures;
    }
    if (pthread_key_create(&stats_key, fold_stats) == 0) stats_key_ok = 1;
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

/* ---- stacks and records ---------------------------------------------------- */

struct unwind_ctx { uintptr_t *ips; int n, max; };

static _Unwind_Reason_Code unwind_cb(struct _Unwind_Context *uc, void *arg) {
    struct unwind_ctx *c = arg;
    uintptr_t ip = (uintptr_t)_Unwind_GetIP(uc);
    if (ip == 0) return _URC_END_OF_STACK;
    if (c->n >= c->max) return _URC_END_OF_STACK;
    c->ips[c->n++] = ip;
    return _URC_NO_REASON;
}

/* Frames of the current stack, starting at the caller of the interposed function. */
static int capture(uintptr_t caller, uintptr_t *ips, int max) {
    uintptr_t raw[48];
    struct unwind_ctx c = {raw, 0, 48};
    _Unwind_Backtrace(unwind_cb, &c);
    int start = -1;
    for (int i = 0; i < c.n; i++)
        if (raw[i] == caller) { start = i; break; }
    int n = 0;
    if (start < 0) { ips[n++] = caller; start = c.n; }
    for (int i = start; i < c.n && n < max; i++) ips[n++] = raw[i];
    return n;
}

static void put_frame(struct buf *b, uintptr_t ip) {
    for (int i = 0; i < n_main_ranges; i++) {
        if (ip >= main_ranges[i].lo && ip < main_ranges[i].hi) {
            /* the executable: offsets are link-time addresses (absolute when not PIE) */
            put_val(b, exe_path);
            put_str(b, "+");
            put_hex(b, ip - main_base);
            return;
        }
    }
    Dl_info info;
    if (dladdr((void *)ip, &info) && info.dli_fbase) {
        const char *name = info.dli_fname && *info.dli_fname ? info.dli_fname : "?";
        uintptr_t base = (uintptr_t)info.dli_fbase;
        put_val(b, name);
        put_str(b, "+");
        put_hex(b, ip - base);
    } else {
        put_str(b, "?+");
        put_hex(b, ip);
    }
}

static void record_failure(int fn, size_t size, uint64_t idx, uintptr_t caller) {
    uint64_t seq = atomic_fetch_add_explicit(&shared->records, 1, memory_order_relaxed);
    if (seq >= cfg.max_records || cfg.fd < 0) return;
    char line[4096];   /* small: this runs on the target's thread stack */
    struct buf b = {line, 0, sizeof line};
    put_str(&b, "F");
    put_kv(&b, "pid", (uint64_t)getpid());
    put_kv(&b, "tid", (uint64_t)gettid());
    put_str(&b, "\tfn=");
    put_str(&b, fn_names[fn]);
    put_kv(&b, "size", size);
    put_kv(&b, "index", idx);
    put_str(&b, "\tcaller=");
    put_frame(&b, caller);
    uintptr_t ips[32];
    int n = capture(caller, ips, cfg.frames);
    put_str(&b, "\tframes=");
    for (int i = 0; i < n; i++) {
        if (i) put_str(&b, "|");
        put_frame(&b, ips[i]);
    }
    put_str(&b, "\texe=");
    put_val(&b, exe_path);
    emit_line(&b);
}

static void record_trace(int fn, size_t size, uint64_t idx, uintptr_t caller) {
    uintptr_t ips[8];
    int n = capture(caller, ips, 8);
    char line[4096];
    struct buf b = {line, 0, sizeof line};
    put_str(&b, "T");
    put_kv(&b, "pid", (uint64_t)getpid());
    put_str(&b, "\tfn=");
    put_str(&b, fn_names[fn]);
    put_kv(&b, "size", size);
    put_kv(&b, "index", idx);
    put_str(&b, "\tframes=");
    for (int i = 0; i < n; i++) {
        if (i) put_str(&b, "|");
        put_frame(&b, ips[i]);
    }
    emit_line(&b);
}

/* Crash sites: once a failure has been injected, a fatal signal records
 * where the program died (a K record), then the default action runs. Only
 * installed where the target left the default disposition. */
static void on_fatal_signal(int sig, siginfo_t *info, void *uctx) {
    uintptr_t pc = 0;
#if defined(__x86_64__)
    pc = (uintptr_t)((ucontext_t *)uctx)->uc_mcontext.gregs[REG_RIP];
#else
    (void)uctx;
#endif
    busy_on();
    char line[4096];
    struct buf b = {line, 0, sizeof line};
    put_str(&b, "K");
    put_kv(&b, "pid", (uint64_t)getpid());
    put_kv(&b, "signal", (uint64_t)sig);
    put_str(&b, "\taddr=");
    put_hex(&b, (uint64_t)(uintptr_t)info->si_addr);
    uintptr_t ips[16];
    int n = pc ? capture(pc, ips, 16) : 0;
    put_str(&b, "\tframes=");
    for (int i = 0; i < n; i++) {
        if (i) put_str(&b, "|");
        put_frame(&b, ips[i]);
    }
    emit_line(&b);
    /* SA_RESETHAND restored the default: returning re-executes the faulting
     * instruction (SIGSEGV/SIGBUS/SIGFPE/SIGILL); abort() raises again itself */
}

static _Atomic int crash_handlers_installed;

static void install_crash_handlers(void) {
    if (atomic_exchange(&crash_handlers_installed, 1)) return;
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction old, sa;
        if (sigaction(sigs[i], NULL, &old) != 0) continue;
        if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler != SIG_DFL) continue;
        if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction != NULL) continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fatal_signal;
        sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

static int count_threads(void) {
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char s[1024];
    ssize_t n = read(fd, s, sizeof s - 1);
    close(fd);
    if (n <= 0) return -1;
    s[n] = '\0';
    char *p = strrchr(s, ')');   /* comm may contain spaces */
    if (!p) return -1;
    /* fields after ')': state(3) ... num_threads is field 20 */
    int field = 2;
    for (; *p && field < 20; p++)
        if (*p == ' ') field++;
    return (int)parse_u64(p, 0);
}

static void fork_record(const char *kind, uint64_t idx, const char *reason, pid_t child,
                        int status, int timed_out) {
    char line[256];
    struct buf b = {line, 0, sizeof line};
    put_str(&b, kind);
    put_kv(&b, "pid", (uint64_t)my_pid);
    put_kv(&b, "index", idx);
    if (reason) { put_str(&b, "\treason="); put_str(&b, reason); }
    if (child > 0) {
        put_kv(&b, "child", (uint64_t)child);
        put_kv(&b, "status", (uint64_t)(unsigned)status);
        put_kv(&b, "timed_out", (uint64_t)timed_out);
    }
    emit_line(&b);
}

static void child_redirect(uint64_t idx) {
    char path[600];
    struct buf b = {path, 0, sizeof path};
    put_str(&b, cfg.fork_dir);
    put_str(&b, "/");
    put_u64(&b, idx);
    size_t stem = b.len;
    /* stdout is not compared in fork mode: /dev/null; stderr is kept for the outcome */
    int out = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (out >= 0) { dup2(out, 1); close(out); }
    put_str(&b, ".err");
    path[b.len] = '\0';
    int err = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (err >= 0) { dup2(err, 2); close(err); }
    b.len = stem;
    put_str(&b, ".d");
    path[b.len] = '\0';
    if (mkdir(path, 0700) == 0 && chdir(path) != 0) { /* keep the parent's cwd */ }
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull >= 0) { dup2(devnull, 0); close(devnull); }
}

/* Fork mode: the child gets the failure, the parent waits for it and goes on.
 * Returns 1 in the child (fail this call), 0 in the parent. */
/* Children in flight (MLTOOLS_MF_FORK_JOBS > 1, with pidfds): the parent
 * goes on while up to that many children run, and collects them as they end. */
#define MAX_FLIGHTS 32
struct flight { pid_t pid; int pidfd; uint64_t idx; struct timespec start; };
static struct flight flights[MAX_FLIGHTS];
static int n_flights;

static uint64_t ms_since(const struct timespec *t0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)(now.tv_sec - t0->tv_sec) * 1000 + (uint64_t)((now.tv_nsec - t0->tv_nsec) / 1000000);
}

/* Wait until at most `keep` children are in flight. */
static void reap_flights(int keep) {
    while (n_flights > keep) {
        struct pollfd pfd[MAX_FLIGHTS];
        uint64_t wait_ms = cfg.fork_timeout_ms;
        for (int i = 0; i < n_flights; i++) {
            pfd[i] = (struct pollfd){flights[i].pidfd, POLLIN, 0};
            uint64_t used = ms_since(&flights[i].start);
            uint64_t left = used >= cfg.fork_timeout_ms ? 0 : cfg.fork_timeout_ms - used;
            if (left < wait_ms) wait_ms = left;
        }
        int r = poll(pfd, (nfds_t)n_flights, (int)wait_ms);
        if (r < 0 && errno == EINTR) continue;
        for (int i = n_flights - 1; i >= 0; i--) {
            int done = r > 0 && pfd[i].revents != 0;
            if (!done && ms_since(&flights[i].start) < cfg.fork_timeout_ms) continue;
            int status = 0, timed_out = 0;
            if (!done) { kill(flights[i].pid, SIGKILL); timed_out = 1; }
            while (waitpid(flights[i].pid, &status, 0) < 0) {
                if (errno != EINTR) { status = -1; break; }   /* the target reaped it: re-run */
            }
            close(flights[i].pidfd);
            fork_record("C", flights[i].idx, NULL, flights[i].pid, status, timed_out);
            flights[i] = flights[--n_flights];
        }
    }
}

static void wait_synchronously(pid_t pid, int *status, int *timed_out) {
#ifdef SYS_pidfd_open
    /* wait with a timeout: poll a pidfd (Linux >= 5.3), else poll waitpid */
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd >= 0) {
        struct pollfd pfd = {pidfd, POLLIN, 0};
        int r;
        do r = poll(&pfd, 1, (int)cfg.fork_timeout_ms); while (r < 0 && errno == EINTR);
        close(pidfd);
        if (r == 0) { kill(pid, SIGKILL); *timed_out = 1; }
        while (waitpid(pid, status, 0) < 0 && errno == EINTR) {}
        return;
    }
#endif
    struct timespec t0, nap = {0, 20000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno != EINTR) { *status = -1; break; }
        if (ms_since(&t0) >= cfg.fork_timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, status, 0);
            *timed_out = 1;
            break;
        }
        nanosleep(&nap, NULL);
        if (nap.tv_nsec < 2000000) nap.tv_nsec *= 2;
    }
}

/* Fork mode: the child gets the failure; the parent goes on with the call
 * succeeding, after waiting for the child (or while up to FORK_JOBS run).
 * Returns 1 in the child (fail this call), 0 in the parent. */
static int fork_point(uint64_t idx, uintptr_t caller) {
    if (cfg.last && idx > cfg.last) return 0;
    if (fork_set && (idx - 1 >= fork_set_bits || !((fork_set[(idx - 1) >> 3] >> ((idx - 1) & 7)) & 1)))
        return 0;
    if (is_sys_addr(caller)) { fork_record("S", idx, "libc-caller", 0, 0, 0); return 0; }
    if (count_threads() != 1) { fork_record("S", idx, "threads", 0, 0, 0); return 0; }
    int parallel = cfg.fork_jobs > 1;
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    /* one child at a time: keep the target's SIGCHLD handler out of our wait */
    if (!parallel) sigprocmask(SIG_BLOCK, &block, &old);
    pid_t pid = fork();
    if (pid == 0) {
        if (!parallel) sigprocmask(SIG_SETMASK, &old, NULL);
        for (int i = 0; i < n_flights; i++) close(flights[i].pidfd);
        n_flights = 0;
        cfg.fork_mode = 0;
        my_pid = getpid();
        child_redirect(idx);
        /* persistent: every later counted call fails too; else only this one */
        cfg.count = parse_u64(getenv("MLTOOLS_MF_PERSISTENT"), 0) ? 0 : 1;
        cfg.first = idx;
        return 1;
    }
    if (pid < 0) {
        if (!parallel) sigprocmask(SIG_SETMASK, &old, NULL);
        fork_record("S", idx, "fork-failed", 0, 0, 0);
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
    wait_synchronously(pid, &status, &timed_out);
    if (!parallel) sigprocmask(SIG_SETMASK, &old, NULL);
    fork_record("C", idx, NULL, pid, status, timed_out);
    return 0;
}

/* ---- the decision ---------------------------------------------------------- */

static __attribute__((noinline)) int slow_decide(int fn, size_t size, uint64_t idx, uintptr_t caller) {
    if (!injects) return 0;
    /* past the window of a --fail-at/--count run: the common case after a failure */
    if (!cfg.fork_mode && !cfg.use_prob && cfg.count && idx - cfg.first >= cfg.count) return 0;
    if (cfg.use_prob && !cfg.fork_mode && mix64(cfg.seed ^ mix64(idx)) >= cfg.prob_threshold) return 0;
    /* root scope: a forked child of the root is not the root (getpid only here, off the fast path) */
    if (cfg.scope == SCOPE_ROOT && getpid() != my_pid) return 0;
    int fail = 1;
    busy_on();
    if (cfg.fork_mode)
        fail = fork_point(idx, caller);
    else if (cfg.use_prob && cfg.count)
        fail = atomic_fetch_add_explicit(failures_ctr, 1, memory_order_relaxed) < cfg.count;
    if (fail) {
        tls_stats.failed[fn]++;
        record_failure(fn, size, idx, caller);
        if (cfg.fd >= 0) install_crash_handlers();
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
    if (atomic_load(&init_state) != 2 || cfg.fd < 0) return;
    if (n_flights && getpid() == my_pid) {
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
    struct buf b = {line, 0, sizeof line};
    put_str(&b, "X");
    put_kv(&b, "pid", (uint64_t)getpid());
    put_str(&b, "\trole=");
    put_str(&b, getpid() == my_pid ? role : "forked");
    for (int f = 0; f < FN_COUNT; f++) {
        put_str(&b, "\tfn=");
        put_str(&b, fn_names[f]);
        put_str(&b, ":");
        put_u64(&b, calls[f]);
        put_str(&b, ":");
        put_u64(&b, counted[f]);
        put_str(&b, ":");
        put_u64(&b, failed[f]);
    }
    put_kv(&b, "index", atomic_load(index_ctr));
    /* blocks handed out: successful calls, less reallocs of an existing block */
    uint64_t allocs = 0;
    for (int f = 0; f < FN_COUNT; f++) allocs += calls[f] - failed[f];
    allocs = (uint64_t)((int64_t)allocs + adjust);
    put_kv(&b, "allocs", allocs);
    put_kv(&b, "frees", frees);
    emit_line(&b);
}
