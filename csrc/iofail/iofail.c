/* mltools io-fail: an LD_PRELOAD shim that makes chosen file-system calls fail,
 * as a full disk (ENOSPC), a failing device (EIO), a quota (EDQUOT) or a
 * signal (EINTR) would, or makes a write short.
 *
 * Interposed, by family (the names --only takes):
 *   write, pwrite (+pwrite64), writev, pwritev (+pwritev64, pwritev2, pwritev64v2),
 *   sendfile (+sendfile64), copy_file_range, fsync, fdatasync, close,
 *   rename (+renameat, renameat2), open (open, open64, openat, openat64, creat,
 *   creat64, the _FORTIFY_SOURCE __open*_2 entry points, fopen/fopen64/freopen/
 *   freopen64: only opens for writing), ftruncate (+ftruncate64, truncate,
 *   truncate64), fallocate (+fallocate64, posix_fallocate, posix_fallocate64),
 *   mkdir (+mkdirat), and glibc's stdio: fwrite (+fputs, fputc, putc), fflush,
 *   fclose. glibc's FILE reaches the kernel through its internal __write, not
 *   through the interposable write, so stdio is failed at its own API (a failed
 *   fflush or fclose loses what was buffered, as ENOSPC at a flush does).
 *   close, fclose and fflush count only for descriptors open for writing.
 *
 * Which calls count ("eligible", numbered 1, 2, ...): those of a chosen family
 * (MLTOOLS_IOF_FUNCS) on a file whose absolute path matches MLTOOLS_IOF_PATH
 * (fnmatch rules without FNM_PATHNAME: '*' also matches '/'; P matches when P or
 * P + "/" does, so "/ckpt/ *" also covers the folder /ckpt itself). Paths are
 * resolved lexically (symlinks are not followed); a descriptor's path comes
 * from /proc/self/fd once and is cached until an interposed call closes,
 * duplicates or creates that number.
 *
 * Records (csrc/preload/): H hello, F a failure (with the C stack; a CPython
 * target also gets its Python stack, from CPython's own async-signal-safe
 * traceback dumper), T every eligible call (sweep baselines), Z/C the sweep's
 * fork points, K where a process died, E exec, X counts at exit.
 *
 * Fork mode (a sweep): the process stops at its first eligible call, where
 * every point starts out the same, and forks one child per point on request,
 * one at a time; mltools puts the state folder back between children. Forking
 * at the failing call itself would be unsound for I/O: a child shares the
 * parent's files and open file descriptions, so what it writes changes what
 * the parent does next.
 *
 * The shim's own file work uses raw system calls. Nothing here allocates,
 * except dlsym for CPython's dumper (only for a CPython target).
 */
#define _GNU_SOURCE
#include "preload.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define IO_EXPORT PL_EXPORT
#define IO_LIKELY(x) PL_LIKELY(x)
#define IO_UNLIKELY(x) PL_UNLIKELY(x)
#define CALLER ((uintptr_t)__builtin_return_address(0))

enum io_fn { F_WRITE, F_PWRITE, F_WRITEV, F_PWRITEV, F_SENDFILE, F_COPY_FILE_RANGE, F_FSYNC, F_FDATASYNC,
             F_CLOSE, F_RENAME, F_OPEN, F_FTRUNCATE, F_FALLOCATE, F_MKDIR, F_FWRITE, F_FFLUSH, F_FCLOSE,
             F_COUNT };
/* the order of mltools/iofail/config.py FAMILIES */
static const char *const fn_names[F_COUNT] = {
    "write", "pwrite", "writev", "pwritev", "sendfile", "copy_file_range", "fsync", "fdatasync",
    "close", "rename", "open", "ftruncate", "fallocate", "mkdir", "fwrite", "fflush", "fclose"};

/* ---- the real functions (RTLD_NEXT, at init) ------------------------------------------------ */
static struct {
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*pwrite)(int, const void *, size_t, off_t);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*pwritev)(int, const struct iovec *, int, off_t);
    ssize_t (*pwritev2)(int, const struct iovec *, int, off_t, int);
    ssize_t (*sendfile)(int, int, off_t *, size_t);
    ssize_t (*copy_file_range)(int, off_t *, int, off_t *, size_t, unsigned);
    int (*fsync)(int);
    int (*fdatasync)(int);
    int (*close)(int);
    int (*close_range)(unsigned, unsigned, int);
    void (*closefrom)(int);
    int (*rename)(const char *, const char *);
    int (*renameat)(int, const char *, int, const char *);
    int (*renameat2)(int, const char *, int, const char *, unsigned);
    int (*openat)(int, const char *, int, ...);
    int (*ftruncate)(int, off_t);
    int (*truncate)(const char *, off_t);
    int (*fallocate)(int, int, off_t, off_t);
    int (*posix_fallocate)(int, off_t, off_t);
    int (*mkdir)(const char *, mode_t);
    int (*mkdirat)(int, const char *, mode_t);
    FILE *(*fopen)(const char *, const char *);
    FILE *(*freopen)(const char *, const char *, FILE *);
    size_t (*fwrite)(const void *, size_t, size_t, FILE *);
    int (*fputs)(const char *, FILE *);
    int (*fputc)(int, FILE *);
    int (*putc)(int, FILE *);
    int (*fflush)(FILE *);
    int (*fclose)(FILE *);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*pipe)(int[2]);
    int (*pipe2)(int[2], int);
    int (*socket)(int, int, int);
    int (*accept)(int, __SOCKADDR_ARG, socklen_t *__restrict);
    int (*accept4)(int, __SOCKADDR_ARG, socklen_t *__restrict, int);
    int (*mkstemp)(char *);
    int (*mkostemp)(char *, int);
    int (*mkstemps)(char *, int);
    int (*mkostemps)(char *, int, int);
} real;

/* ---- configuration ---------------------------------------------------------------------------- */
static struct {
    uint64_t first;        /* first failing index; UINT64_MAX: never */
    uint64_t count;        /* failures from first; 0: unlimited */
    uint64_t max_records;  /* F records written in detail */
    unsigned funcs;        /* bit per enum io_fn */
    int err;
    int short_write;
    int trace;
    int has_glob;
    int nocache;           /* readlink on every descriptor call (only to measure what the cache saves) */
    int scope;
    char glob[1024];
    char pystack_dir[512]; /* a CPython target: its Python stack at each failure goes here */
    char zygote_dir[512];  /* fork mode: ctl and ack FIFOs */
    char state_dir[1024];  /* fork mode: the folder mltools restores between children */
    uint64_t fork_timeout_ms;
    int persistent;
} cfg = {.first = UINT64_MAX, .funcs = (1u << F_COUNT) - 1, .err = ENOSPC, .max_records = 64};

static _Atomic int init_state;            /* 0 none, 1 running, 2 done */
static _Atomic uint64_t local_index;
static _Atomic uint64_t *index_ctr = &local_index;
static _Atomic uint64_t calls[F_COUNT], eligible[F_COUNT], failed[F_COUNT];
static _Atomic uint64_t f_records;
static int injects;
static const char *role = "passive";
static int zygote_pending;                /* fork mode, not yet at the first eligible call */
static int zygote_child;                  /* a child forked at the first eligible call */

/* Per-descriptor cache of the path filter: 0 unknown (readlink on first use), 1 match, 2 no match. */
#define FD_CACHE 65536
static _Atomic unsigned char fd_state[FD_CACHE];

static inline void fd_forget(int fd) {
    if (fd >= 0 && fd < FD_CACHE) atomic_store_explicit(&fd_state[fd], 0, memory_order_relaxed);
}

/* ---- paths -------------------------------------------------------------------------------------- */

/* '*' matches any run of characters, '/' included; '?' one; [a-z] / [!a-z] classes; '\' escapes. */
static int glob_match(const char *p, const char *s) {
    const char *star_p = NULL, *star_s = NULL;
    for (;;) {
        if (*p == '*') {
            while (*p == '*') p++;
            star_p = p;
            star_s = s;
            continue;
        }
        if (!*s) return !*p;
        int ok = 0;
        const char *next = p + 1;
        if (*p == '?') {
            ok = 1;
        } else if (*p == '[') {
            const char *q = p + 1;
            int neg = 0, hit = 0, first = 1;
            if (*q == '!' || *q == '^') { neg = 1; q++; }
            while (*q && (first || *q != ']')) {
                first = 0;
                if (q[1] == '-' && q[2] && q[2] != ']') {
                    if ((unsigned char)*s >= (unsigned char)q[0] && (unsigned char)*s <= (unsigned char)q[2]) hit = 1;
                    q += 3;
                } else {
                    if (*q == *s) hit = 1;
                    q++;
                }
            }
            if (*q == ']') { ok = hit != neg; next = q + 1; }
            else ok = *s == '[';                 /* no closing bracket: a literal '[' */
        } else if (*p == '\\' && p[1]) {
            ok = p[1] == *s;
            next = p + 2;
        } else {
            ok = *p && *p == *s;
        }
        if (ok) { p = next; s++; continue; }
        if (!star_p || !*star_s) return 0;
        p = star_p;
        s = ++star_s;
    }
}

/* `abs` has room for one more character (callers keep a spare byte). */
static int path_matches(char *abs) {
    if (glob_match(cfg.glob, abs)) return 1;
    size_t n = strlen(abs);
    abs[n] = '/';
    abs[n + 1] = '\0';
    int m = glob_match(cfg.glob, abs);
    abs[n] = '\0';
    return m;
}

/* Lexical normalisation of an absolute path in place: //, /./ and /../ (symlinks not followed). */
static void normalize(char *p) {
    char *out = p, *in = p;
    while (*in) {
        while (*in == '/') in++;
        if (!*in) break;
        char *seg = in;
        while (*in && *in != '/') in++;
        size_t len = (size_t)(in - seg);
        if (len == 1 && seg[0] == '.') continue;
        if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            while (out > p && *--out != '/') {}
            continue;
        }
        *out++ = '/';
        memmove(out, seg, len);
        out += len;
    }
    if (out == p) *out++ = '/';
    *out = '\0';
}

static ssize_t fd_path(int fd, char *out, size_t cap) {
    char link[40];
    struct pl_buf b = {link, 0, sizeof link};
    pl_put_str(&b, "/proc/self/fd/");
    pl_put_u64(&b, (uint64_t)fd);
    link[b.len] = '\0';
    ssize_t n = readlink(link, out, cap - 2);
    if (n < 0) return -1;
    out[n] = '\0';
    return n;
}

/* Absolute path of (dirfd, path) without touching the file (it may not exist yet). */
static int resolve_at(int dirfd, const char *path, char *out, size_t cap) {
    if (!path) return -1;
    size_t n;
    if (path[0] == '/') {
        n = 0;
    } else if (dirfd == AT_FDCWD) {
        if (!getcwd(out, cap)) return -1;    /* with a buffer, glibc's getcwd does not allocate */
        n = strlen(out);
    } else {
        ssize_t r = fd_path(dirfd, out, cap);
        if (r < 0) return -1;
        n = (size_t)r;
    }
    size_t m = strlen(path);
    if (n + m + 3 > cap) return -1;
    if (n) out[n++] = '/';
    memcpy(out + n, path, m + 1);
    normalize(out);
    return 0;
}

/* On a small alternate signal stack (faulthandler's), skip the path buffers. */
static int on_alt_stack(void) {
    stack_t ss;
    return sigaltstack(NULL, &ss) == 0 && (ss.ss_flags & SS_ONSTACK);
}

static int fd_matches(int fd) {
    if (fd < 0) return 0;
    if (fd < FD_CACHE && !cfg.nocache) {
        unsigned char s = atomic_load_explicit(&fd_state[fd], memory_order_relaxed);
        if (IO_LIKELY(s)) return s == 1;
    }
    if (on_alt_stack()) return 0;
    char p[PATH_MAX + 2];
    int m = fd_path(fd, p, sizeof p) >= 0 && path_matches(p);
    if (fd < FD_CACHE) atomic_store_explicit(&fd_state[fd], m ? 1 : 2, memory_order_relaxed);
    return m;
}

/* ---- init ----------------------------------------------------------------------------------------- */

#define RESOLVE(name) (*(void **)&real.name = dlsym(RTLD_NEXT, #name))

static void copy_env(char *dst, size_t cap, const char *suffix) {
    const char *e = pl_getenv(suffix);
    if (e && *e && pl_str_len(e) < cap) memcpy(dst, e, pl_str_len(e) + 1);
}

static void write_hello(void) {
    char line[1400];
    struct pl_buf b = {line, 0, sizeof line};
    pl_hello_begin(&b, role);
    pl_hello_end(&b);
}

static void after_fork_in_child(void);

static void do_init(void) {
    RESOLVE(write); RESOLVE(pwrite); RESOLVE(writev); RESOLVE(pwritev); RESOLVE(pwritev2);
    RESOLVE(sendfile); RESOLVE(copy_file_range);
    RESOLVE(fsync); RESOLVE(fdatasync); RESOLVE(close); RESOLVE(close_range); RESOLVE(closefrom);
    RESOLVE(rename); RESOLVE(renameat); RESOLVE(renameat2); RESOLVE(openat);
    RESOLVE(ftruncate); RESOLVE(truncate); RESOLVE(fallocate); RESOLVE(posix_fallocate);
    RESOLVE(mkdir); RESOLVE(mkdirat); RESOLVE(fopen); RESOLVE(freopen); RESOLVE(fwrite);
    RESOLVE(fputs); RESOLVE(fputc); RESOLVE(putc); RESOLVE(fflush); RESOLVE(fclose);
    RESOLVE(dup); RESOLVE(dup2); RESOLVE(dup3); RESOLVE(pipe); RESOLVE(pipe2); RESOLVE(socket);
    RESOLVE(accept); RESOLVE(accept4); RESOLVE(mkstemp); RESOLVE(mkostemp); RESOLVE(mkstemps);
    RESOLVE(mkostemps);
    pl_setup("MLTOOLS_IOF_", "io-fail");
    const char *e;
    cfg.first = pl_parse_u64(pl_getenv("FIRST"), 0);
    if (cfg.first == 0) cfg.first = UINT64_MAX;
    cfg.count = pl_parse_u64(pl_getenv("COUNT"), 0);
    cfg.max_records = pl_parse_u64(pl_getenv("MAX_RECORDS"), 64);
    cfg.funcs = (unsigned)pl_parse_u64(pl_getenv("FUNCS"), (1u << F_COUNT) - 1);
    if ((e = pl_getenv("PATH")) && *e && pl_str_len(e) < sizeof cfg.glob) {
        memcpy(cfg.glob, e, pl_str_len(e) + 1);
        cfg.has_glob = 1;
    }
    cfg.err = (int)pl_parse_u64(pl_getenv("ERRNO"), ENOSPC);
    if (cfg.err <= 0) cfg.err = ENOSPC;
    cfg.short_write = pl_parse_u64(pl_getenv("SHORT"), 0) != 0;
    cfg.trace = pl_parse_u64(pl_getenv("TRACE"), 0) != 0;
    cfg.nocache = pl_parse_u64(pl_getenv("NOCACHE"), 0) != 0;
    cfg.scope = pl_scope_from_env();
    copy_env(cfg.pystack_dir, sizeof cfg.pystack_dir, "PYSTACK");
    copy_env(cfg.zygote_dir, sizeof cfg.zygote_dir, "ZYGOTE");
    copy_env(cfg.state_dir, sizeof cfg.state_dir, "STATE_DIR");
    cfg.fork_timeout_ms = pl_parse_u64(pl_getenv("FORK_TIMEOUT_MS"), 20000);
    cfg.persistent = pl_parse_u64(pl_getenv("PERSISTENT"), 0) != 0;

    pl_process_init((uintptr_t)&do_init);
    pl_records_open(pl_getenv("RECORDS"));
    pl_state_open(pl_getenv("STATE"));
    pl_exec_init();
    injects = pl_claim_role(cfg.scope, &role);
    if (cfg.scope == PL_SCOPE_TREE && injects) index_ctr = &pl_shared->index;
    zygote_pending = injects && cfg.zygote_dir[0] && cfg.scope == PL_SCOPE_ROOT;
    pthread_atfork(NULL, NULL, after_fork_in_child);
    write_hello();
}

static void ensure_init(void) {
    if (IO_LIKELY(atomic_load_explicit(&init_state, memory_order_acquire) == 2)) return;
    int expected = 0;
    if (atomic_compare_exchange_strong(&init_state, &expected, 1)) {
        do_init();
        atomic_store_explicit(&init_state, 2, memory_order_release);
        return;
    }
    while (atomic_load_explicit(&init_state, memory_order_acquire) != 2) {}
}

__attribute__((constructor)) static void io_constructor(void) { ensure_init(); }

static int in_zygote_fork;

/* A process the target forked: its own counts and hello; under scope root it is not the root. */
static void after_fork_in_child(void) {
    if (in_zygote_fork) return;
    pl_process_forked();
    for (int f = 0; f < F_COUNT; f++) {
        atomic_store(&calls[f], 0);
        atomic_store(&eligible[f], 0);
        atomic_store(&failed[f], 0);
    }
    atomic_store(&f_records, 0);
    zygote_pending = 0;
    injects = pl_role_forked(cfg.scope, injects, &role);
    write_hello();
}

/* ---- the decision ---------------------------------------------------------------------------------- */

struct call { int fn; int fd; int dirfd; const char *path; int dirfd2; const char *path2; uintptr_t caller; };

static void record(char kind, const struct call *c, uint64_t idx, int is_short) {
    if (!pl_records_ready()) return;
    char line[2 * PATH_MAX + 2048];
    struct pl_buf b = {line, 0, sizeof line};
    char p[PATH_MAX + 2];
    line[0] = kind;
    b.len = 1;
    pl_put_kv(&b, "pid", (uint64_t)getpid());
    pl_put_kv(&b, "tid", (uint64_t)gettid());
    pl_put_ks(&b, "fn", fn_names[c->fn]);
    pl_put_kv(&b, "index", idx);
    if (c->fd >= 0) {
        pl_put_kv(&b, "fd", (uint64_t)c->fd);
        if (fd_path(c->fd, p, sizeof p) >= 0) pl_put_ks(&b, "path", p);
    } else if (c->path && resolve_at(c->dirfd, c->path, p, sizeof p) == 0) {
        pl_put_ks(&b, "path", p);
    }
    if (c->path2 && resolve_at(c->dirfd2, c->path2, p, sizeof p) == 0) pl_put_ks(&b, "path2", p);
    pl_put_str(&b, "\tcaller=");
    pl_put_frame(&b, c->caller);
    if (kind == 'F') {
        pl_put_kv(&b, "errno", (uint64_t)cfg.err);
        pl_put_kv(&b, "short", (uint64_t)is_short);
        uintptr_t ips[16];
        int n = pl_capture(c->caller, ips, 16);
        pl_put_frames(&b, ips, n);
    }
    pl_emit(&b);
}

/* A CPython target: CPython's faulthandler dumper (async-signal-safe, needs no GIL,
 * no allocation) writes the Python stack of this thread to PYSTACK/<pid>.<index>. */
static void python_stack(uint64_t idx) {
    static void (*dump)(int, void *);
    static void *(*this_ts)(void);
    static int looked;
    if (!looked) {            /* dlsym: only for a CPython target, where both symbols exist */
        looked = 1;
        *(void **)&dump = dlsym(RTLD_DEFAULT, "_Py_DumpTraceback");
        *(void **)&this_ts = dlsym(RTLD_DEFAULT, "PyGILState_GetThisThreadState");
    }
    if (!dump || !this_ts) return;
    void *ts = this_ts();
    if (!ts) return;
    char p[700];
    struct pl_buf b = {p, 0, sizeof p};
    pl_put_str(&b, cfg.pystack_dir);
    pl_put_str(&b, "/");
    pl_put_u64(&b, (uint64_t)getpid());
    pl_put_str(&b, ".");
    pl_put_u64(&b, idx);
    p[b.len] = '\0';
    int fd = pl_sys_open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return;
    dump(fd, ts);
    pl_sys_close(fd);
}

static int call_matches(const struct call *c) {
    if (c->fd >= 0) return fd_matches(c->fd);
    if (on_alt_stack()) return 0;
    char p[PATH_MAX + 2];
    if (c->path && resolve_at(c->dirfd, c->path, p, sizeof p) == 0 && path_matches(p)) return 1;
    if (c->path2 && resolve_at(c->dirfd2, c->path2, p, sizeof p) == 0 && path_matches(p)) return 1;
    return 0;
}

/* ---- fork mode: the process waits at its first eligible call and forks a child per point ---- */

struct saved_fd { int fd; off_t off; };
#define MAX_SAVED_FDS 256
static struct saved_fd saved_fds[MAX_SAVED_FDS];
static int n_saved_fds;

static void ack(int fd, const char *text) {
    size_t n = pl_str_len(text);
    while (n) {
        ssize_t w = pl_sys_write(fd, text, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        text += w;
        n -= (size_t)w;
    }
}

/* Why this process cannot serve as the fork point, or NULL. Records the offsets
 * of its regular files (each child starts from them: file descriptions are shared). */
static const char *zygote_refusal(void) {
    if (pl_count_threads() != 1) return "threads";
    int dfd = pl_sys_open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (dfd < 0) return "no-proc";
    char ents[4096];
    size_t state_len = pl_str_len(cfg.state_dir);
    const char *why = NULL;
    n_saved_fds = 0;
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, ents, sizeof ents);
        if (n <= 0) break;
        for (long off = 0; off < n;) {
            struct dirent64 *d = (struct dirent64 *)(ents + off);
            off += d->d_reclen;
            if (d->d_name[0] < '0' || d->d_name[0] > '9') continue;
            int fd = (int)pl_parse_u64(d->d_name, 0);
            if (fd == dfd) continue;
            char p[PATH_MAX + 2];
            if (fd_path(fd, p, sizeof p) < 0) continue;
            /* a file under the state folder: restoring the folder between children
             * would leave this process holding the old file */
            if (state_len && fd > 2 && strncmp(p, cfg.state_dir, state_len) == 0
                    && (p[state_len] == '/' || p[state_len] == '\0')) {
                why = "open-file-in-state";
                break;
            }
            struct stat st;
            if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && n_saved_fds < MAX_SAVED_FDS) {
                off_t pos = pl_sys_lseek(fd, 0, SEEK_CUR);
                if (pos >= 0) saved_fds[n_saved_fds++] = (struct saved_fd){fd, pos};
            }
        }
        if (why) break;
    }
    pl_sys_close(dfd);
    return why;
}

/* Returns in a child (with the point's failure configured), or never. When the
 * process cannot be the fork point it says why and returns in the process itself,
 * which then runs on with nothing failing (mltools re-runs every point). */
static void zygote_serve(void) {
    char path[600];
    struct pl_buf b = {path, 0, sizeof path};
    pl_put_str(&b, cfg.zygote_dir);
    size_t stem = b.len;
    pl_put_str(&b, "/ack");
    path[b.len] = '\0';
    int ack_fd = pl_sys_open(path, O_WRONLY | O_CLOEXEC, 0);
    b.len = stem;
    pl_put_str(&b, "/ctl");
    path[b.len] = '\0';
    int ctl_fd = pl_sys_open(path, O_RDONLY | O_CLOEXEC, 0);
    if (ack_fd < 0 || ctl_fd < 0) {
        if (ack_fd >= 0) pl_sys_close(ack_fd);
        if (ctl_fd >= 0) pl_sys_close(ctl_fd);
        return;
    }
    const char *why = zygote_refusal();
    char line[256];
    struct pl_buf l = {line, 0, sizeof line};
    if (why) {
        pl_put_str(&l, "refused ");
        pl_put_str(&l, why);
        pl_put_str(&l, "\n");
        line[l.len] = '\0';
        ack(ack_fd, line);
        pl_sys_close(ack_fd);
        pl_sys_close(ctl_fd);
        return;
    }
    pl_put_str(&l, "ready ");
    pl_put_u64(&l, (uint64_t)getpid());
    pl_put_str(&l, "\n");
    line[l.len] = '\0';
    ack(ack_fd, line);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &old);     /* the target's SIGCHLD handler stays out of our wait */
    char cmd[64];
    size_t have = 0;
    for (;;) {
        ssize_t r = pl_sys_read(ctl_fd, cmd + have, sizeof cmd - 1 - have);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) _exit(0);                 /* mltools is gone */
        have += (size_t)r;
        char *nl;
        cmd[have] = '\0';
        while ((nl = memchr(cmd, '\n', have)) != NULL) {
            *nl = '\0';
            if (cmd[0] != 'P') _exit(0);      /* "Q": the sweep is over */
            uint64_t k = pl_parse_u64(cmd + 2, 0);
            off_t stdin_offset = pl_stdin_offset();
            in_zygote_fork = 1;
            pid_t pid = fork();
            in_zygote_fork = 0;
            if (pid == 0) {
                sigprocmask(SIG_SETMASK, &old, NULL);
                pl_sys_close(ack_fd);
                pl_sys_close(ctl_fd);
                pl_process_forked();
                role = "sweep-child";
                zygote_child = 1;
                for (int i = 0; i < n_saved_fds; i++) pl_sys_lseek(saved_fds[i].fd, saved_fds[i].off, SEEK_SET);
                pl_child_stdio(cfg.zygote_dir, k, stdin_offset);
                cfg.first = k;
                cfg.count = cfg.persistent ? 0 : 1;
                return;
            }
            int status = 0, timed_out = 0;
            if (pid < 0) status = -1;
            else pl_wait_child(pid, cfg.fork_timeout_ms, &status, &timed_out);
            pl_fork_record("C", k, NULL, pid, status, timed_out);
            l.len = 0;
            pl_put_str(&l, "C ");
            pl_put_u64(&l, k);
            pl_put_str(&l, " ");
            pl_put_u64(&l, (uint64_t)(unsigned)status);
            pl_put_str(&l, " ");
            pl_put_u64(&l, (uint64_t)timed_out);
            pl_put_str(&l, " ");
            pl_put_u64(&l, (uint64_t)(pid > 0 ? pid : 0));
            pl_put_str(&l, "\n");
            line[l.len] = '\0';
            ack(ack_fd, line);
            size_t used = (size_t)(nl - cmd) + 1;
            memmove(cmd, nl + 1, have - used);
            have -= used;
            cmd[have] = '\0';
        }
    }
}

/* 0: go on normally; 1: fail this call. */
static __attribute__((noinline)) int decide_slow(const struct call *c, uint64_t idx, int can_short, int *is_short) {
    int save = errno;
    if (cfg.trace) record('T', c, idx, 0);
    int fail = injects && idx >= cfg.first && (cfg.count == 0 || idx - cfg.first < cfg.count);
    if (fail) {
        atomic_fetch_add_explicit(&failed[c->fn], 1, memory_order_relaxed);
        *is_short = cfg.short_write && can_short;
        uint64_t budget = zygote_child ? 1 : cfg.max_records;
        if (atomic_fetch_add_explicit(&f_records, 1, memory_order_relaxed) < budget) {
            record('F', c, idx, *is_short);
            if (cfg.pystack_dir[0]) python_stack(idx);
        }
        pl_install_crash_handlers();
    }
    errno = save;
    return fail;
}

static inline int decide(const struct call *c, int can_short, int *is_short) {
    ensure_init();
    atomic_fetch_add_explicit(&calls[c->fn], 1, memory_order_relaxed);
    if (!((cfg.funcs >> c->fn) & 1u)) return 0;
    if (cfg.has_glob) {
        int save = errno;
        int m = call_matches(c);
        errno = save;
        if (!m) return 0;
    }
    if (IO_UNLIKELY(zygote_pending)) {
        int save = errno;
        zygote_pending = 0;
        zygote_serve();
        errno = save;
    }
    atomic_fetch_add_explicit(&eligible[c->fn], 1, memory_order_relaxed);
    uint64_t idx = atomic_fetch_add_explicit(index_ctr, 1, memory_order_relaxed) + 1;
    if (IO_LIKELY(idx < cfg.first && !cfg.trace)) return 0;
    return decide_slow(c, idx, can_short, is_short);
}

#define FD_CALL(f, d) struct call c_ = {(f), (d), AT_FDCWD, NULL, AT_FDCWD, NULL, CALLER}
#define PATH_CALL(f, dfd, p, dfd2, p2) struct call c_ = {(f), -1, (dfd), (p), (dfd2), (p2), CALLER}

static inline size_t half(size_t n) { return n / 2; }

/* ---- write family ---------------------------------------------------------------------------------- */
IO_EXPORT ssize_t write(int fd, const void *buf, size_t n) {
    FD_CALL(F_WRITE, fd);
    int sh = 0;
    if (IO_UNLIKELY(decide(&c_, n > 1, &sh))) {
        if (sh) return real.write(fd, buf, half(n));
        errno = cfg.err;
        return -1;
    }
    return real.write(fd, buf, n);
}

static ssize_t pwrite_common(int fd, const void *buf, size_t n, off_t off, uintptr_t caller) {
    struct call c = {F_PWRITE, fd, AT_FDCWD, NULL, AT_FDCWD, NULL, caller};
    int sh = 0;
    if (IO_UNLIKELY(decide(&c, n > 1, &sh))) {
        if (sh) return real.pwrite(fd, buf, half(n), off);
        errno = cfg.err;
        return -1;
    }
    return real.pwrite(fd, buf, n, off);
}
IO_EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) { return pwrite_common(fd, buf, n, off, CALLER); }
IO_EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) { return pwrite_common(fd, buf, n, off, CALLER); }

/* A copy of iov cut to half of its bytes (at most 64 entries; more: the errno instead). */
static int half_iov(const struct iovec *iov, int cnt, struct iovec *out) {
    size_t total = 0;
    for (int i = 0; i < cnt; i++) total += iov[i].iov_len;
    size_t want = half(total);
    int k = 0;
    for (int i = 0; i < cnt && want && k < 64; i++) {
        out[k] = iov[i];
        if (out[k].iov_len > want) out[k].iov_len = want;
        want -= out[k].iov_len;
        k++;
    }
    return k;
}

static size_t iov_total(const struct iovec *iov, int cnt) {
    size_t t = 0;
    for (int i = 0; i < cnt && iov; i++) t += iov[i].iov_len;
    return t;
}

IO_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    FD_CALL(F_WRITEV, fd);
    int sh = 0;
    if (IO_UNLIKELY(decide(&c_, cnt > 0 && cnt <= 64 && iov_total(iov, cnt) > 1, &sh))) {
        if (sh) { struct iovec h[64]; int k = half_iov(iov, cnt, h); return real.writev(fd, h, k); }
        errno = cfg.err;
        return -1;
    }
    return real.writev(fd, iov, cnt);
}

static ssize_t pwritev_common(int fd, const struct iovec *iov, int cnt, off_t off, int flags, int v2, uintptr_t caller) {
    struct call c = {F_PWRITEV, fd, AT_FDCWD, NULL, AT_FDCWD, NULL, caller};
    int sh = 0;
    if (IO_UNLIKELY(decide(&c, cnt > 0 && cnt <= 64 && iov_total(iov, cnt) > 1, &sh))) {
        if (sh) {
            struct iovec h[64];
            int k = half_iov(iov, cnt, h);
            return v2 ? real.pwritev2(fd, h, k, off, flags) : real.pwritev(fd, h, k, off);
        }
        errno = cfg.err;
        return -1;
    }
    return v2 ? real.pwritev2(fd, iov, cnt, off, flags) : real.pwritev(fd, iov, cnt, off);
}
IO_EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off) { return pwritev_common(fd, iov, cnt, off, 0, 0, CALLER); }
IO_EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off) { return pwritev_common(fd, iov, cnt, off, 0, 0, CALLER); }
IO_EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int cnt, off_t off, int fl) { return pwritev_common(fd, iov, cnt, off, fl, 1, CALLER); }
IO_EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt, off_t off, int fl) { return pwritev_common(fd, iov, cnt, off, fl, 1, CALLER); }

/* shutil.copyfile and cp copy with these: the destination is the file written */
static ssize_t sendfile_common(int out, int in, off_t *off, size_t n, uintptr_t caller) {
    struct call c = {F_SENDFILE, out, AT_FDCWD, NULL, AT_FDCWD, NULL, caller};
    int sh = 0;
    if (IO_UNLIKELY(decide(&c, n > 1, &sh))) {
        if (sh) return real.sendfile(out, in, off, half(n));
        errno = cfg.err;
        return -1;
    }
    return real.sendfile(out, in, off, n);
}
IO_EXPORT ssize_t sendfile(int out, int in, off_t *off, size_t n) { return sendfile_common(out, in, off, n, CALLER); }
IO_EXPORT ssize_t sendfile64(int out, int in, off_t *off, size_t n) { return sendfile_common(out, in, off, n, CALLER); }

IO_EXPORT ssize_t copy_file_range(int in, off_t *in_off, int out, off_t *out_off, size_t n, unsigned flags) {
    FD_CALL(F_COPY_FILE_RANGE, out);
    int sh = 0;
    if (IO_UNLIKELY(decide(&c_, n > 1, &sh))) {
        if (sh) return real.copy_file_range(in, in_off, out, out_off, half(n), flags);
        errno = cfg.err;
        return -1;
    }
    return real.copy_file_range(in, in_off, out, out_off, n, flags);
}

/* ---- sync, close ---------------------------------------------------------------------------------- */
IO_EXPORT int fsync(int fd) {
    FD_CALL(F_FSYNC, fd);
    int sh = 0;
    if (IO_UNLIKELY(decide(&c_, 0, &sh))) { errno = cfg.err; return -1; }
    return real.fsync(fd);
}

IO_EXPORT int fdatasync(int fd) {
    FD_CALL(F_FDATASYNC, fd);
    int sh = 0;
    if (IO_UNLIKELY(decide(&c_, 0, &sh))) { errno = cfg.err; return -1; }
    return real.fdatasync(fd);
}

/* close, fclose and fflush count only for descriptors open for writing (a
 * read-only stream cannot hit ENOSPC: the sqlite3 shell fopen(db, "rb")s its
 * database to sniff it). fsync counts on any descriptor: a folder is fsync'ed
 * through a read-only one. */
static int fd_writable(int fd) {
    int fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
    return fl >= 0 && (fl & O_ACCMODE) != O_RDONLY;
}

IO_EXPORT int close(int fd) {
    FD_CALL(F_CLOSE, fd);
    int sh = 0;
    int fail = fd_writable(fd) && decide(&c_, 0, &sh);
    fd_forget(fd);
    int r = real.close(fd);                  /* Linux: the descriptor is gone even when close fails */
    if (IO_UNLIKELY(fail) && r == 0) { errno = cfg.err; return -1; }
    return r;
}

IO_EXPORT int close_range(unsigned lo, unsigned hi, int flags) {
    ensure_init();
    if (!(flags & CLOSE_RANGE_CLOEXEC))
        for (unsigned f = lo; f <= hi && f < FD_CACHE; f++) fd_forget((int)f);
    return real.close_range ? real.close_range(lo, hi, flags) : (int)syscall(SYS_close_range, lo, hi, flags);
}

IO_EXPORT void closefrom(int lo) {
    ensure_init();
    for (int f = lo < 0 ? 0 : lo; f < FD_CACHE; f++) fd_forget(f);
    real.closefrom(lo);
}

/* ---- descriptors created elsewhere: forget what the number meant ---------------------------------- */
IO_EXPORT int dup(int fd) { ensure_init(); int r = real.dup(fd); fd_forget(r); return r; }
IO_EXPORT int dup2(int a, int b) { ensure_init(); int r = real.dup2(a, b); fd_forget(b); return r; }
IO_EXPORT int dup3(int a, int b, int fl) { ensure_init(); int r = real.dup3(a, b, fl); fd_forget(b); return r; }
IO_EXPORT int pipe(int p[2]) { ensure_init(); int r = real.pipe(p); if (r == 0) { fd_forget(p[0]); fd_forget(p[1]); } return r; }
IO_EXPORT int pipe2(int p[2], int fl) { ensure_init(); int r = real.pipe2(p, fl); if (r == 0) { fd_forget(p[0]); fd_forget(p[1]); } return r; }
IO_EXPORT int socket(int d, int t, int pr) { ensure_init(); int r = real.socket(d, t, pr); fd_forget(r); return r; }
IO_EXPORT int accept(int s, __SOCKADDR_ARG a, socklen_t *__restrict l) { ensure_init(); int r = real.accept(s, a, l); fd_forget(r); return r; }
IO_EXPORT int accept4(int s, __SOCKADDR_ARG a, socklen_t *__restrict l, int fl) { ensure_init(); int r = real.accept4(s, a, l, fl); fd_forget(r); return r; }
IO_EXPORT int mkstemp(char *t) { ensure_init(); int r = real.mkstemp(t); fd_forget(r); return r; }
IO_EXPORT int mkostemp(char *t, int fl) { ensure_init(); int r = real.mkostemp(t, fl); fd_forget(r); return r; }
IO_EXPORT int mkstemps(char *t, int s) { ensure_init(); int r = real.mkstemps(t, s); fd_forget(r); return r; }
IO_EXPORT int mkostemps(char *t, int s, int fl) { ensure_init(); int r = real.mkostemps(t, s, fl); fd_forget(r); return r; }

/* ---- rename -------------------------------------------------------------------------------------- */
IO_EXPORT int rename(const char *a, const char *b) {
    PATH_CALL(F_RENAME, AT_FDCWD, a, AT_FDCWD, b);
    int sh = 0;
    if (IO_UNLIKELY(decide(&c_, 0, &sh))) { errno = cfg.err; return -1; }
    return real.rename(a, b);
}
IO_EXPORT int renameat(int da, const char *a, int db, const char *b) {
    PATH_CALL(F_RENAME, da, a, db, b);
    int sh = 0;
    if (IO_UNLIKELY(decide(&c_, 0, &sh))) { errno = cfg.err; return -1; }
    return real.renameat(da, a, db, b);
}
IO_EXPORT int renameat2(int da, const char *a, int db, const char *b, unsigned fl) {
    PATH_CALL(F_RENAME, da, a, db, b);
    int sh = 0;
    if (IO_UNLIKELY(decide(&c_, 0, &sh))) { errno = cfg.err; return -1; }
    return real.renameat2(da, a, db, b, fl);
}

/* ---- open ---------------------------------------------------------------------------------------- */
static int for_writing(int flags) {
    return (flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC | O_APPEND))
           || (flags & __O_TMPFILE) == __O_TMPFILE;
}

static int open_common(int dirfd, const char *path, int flags, mode_t mode, uintptr_t caller) {
    ensure_init();
    struct call c = {F_OPEN, -1, dirfd, path, AT_FDCWD, NULL, caller};
    int sh = 0;
    if (for_writing(flags) && IO_UNLIKELY(decide(&c, 0, &sh))) { errno = cfg.err; return -1; }
    int fd = real.openat(dirfd, path, flags, mode);
    fd_forget(fd);                           /* resolved by readlink on first use */
    return fd;
}

static int needs_mode(int flags) { return (flags & O_CREAT) || (flags & __O_TMPFILE) == __O_TMPFILE; }

#define MODE_ARG(flags) \
    mode_t m = 0; \
    if (needs_mode(flags)) { va_list ap; va_start(ap, flags); m = (mode_t)va_arg(ap, int); va_end(ap); }

IO_EXPORT int open(const char *p, int flags, ...) { MODE_ARG(flags) return open_common(AT_FDCWD, p, flags, m, CALLER); }
IO_EXPORT int open64(const char *p, int flags, ...) { MODE_ARG(flags) return open_common(AT_FDCWD, p, flags, m, CALLER); }
IO_EXPORT int openat(int d, const char *p, int flags, ...) { MODE_ARG(flags) return open_common(d, p, flags, m, CALLER); }
IO_EXPORT int openat64(int d, const char *p, int flags, ...) { MODE_ARG(flags) return open_common(d, p, flags, m, CALLER); }
IO_EXPORT int creat(const char *p, mode_t m) { return open_common(AT_FDCWD, p, O_CREAT | O_WRONLY | O_TRUNC, m, CALLER); }
IO_EXPORT int creat64(const char *p, mode_t m) { return open_common(AT_FDCWD, p, O_CREAT | O_WRONLY | O_TRUNC, m, CALLER); }
/* _FORTIFY_SOURCE entry points (no mode: O_CREAT is refused at compile time there) */
IO_EXPORT int __open_2(const char *p, int flags) { return open_common(AT_FDCWD, p, flags, 0, CALLER); }
IO_EXPORT int __open64_2(const char *p, int flags) { return open_common(AT_FDCWD, p, flags, 0, CALLER); }
IO_EXPORT int __openat_2(int d, const char *p, int flags) { return open_common(d, p, flags, 0, CALLER); }
IO_EXPORT int __openat64_2(int d, const char *p, int flags) { return open_common(d, p, flags, 0, CALLER); }

/* ---- truncate, allocate, mkdir ------------------------------------------------------------------- */
static int ftruncate_common(int fd, off_t len, uintptr_t caller) {
    struct call c = {F_FTRUNCATE, fd, AT_FDCWD, NULL, AT_FDCWD, NULL, caller};
    int sh = 0;
    if (IO_UNLIKELY(decide(&c, 0, &sh))) { errno = cfg.err; return -1; }
    return real.ftruncate(fd, len);
}
IO_EXPORT int ftruncate(int fd, off_t len) { return ftruncate_common(fd, len, CALLER); }
IO_EXPORT int ftruncate64(int fd, off_t len) { return ftruncate_common(fd, len, CALLER); }

static int truncate_common(const char *p, off_t len, uintptr_t caller) {
    struct call c = {F_FTRUNCATE, -1, AT_FDCWD, p, AT_FDCWD, NULL, caller};
    int sh = 0;
    if (IO_UNLIKELY(decide(&c, 0, &sh))) { errno = cfg.err; return -1; }
    return real.truncate(p, len);
}
IO_EXPORT int truncate(const char *p, off_t len) { return truncate_common(p, len, CALLER); }
IO_EXPORT int truncate64(const char *p, off_t len) { return truncate_common(p, len, CALLER); }

static int fallocate_common(int fd, int mode, off_t off, off_t len, uintptr_t caller) {
    struct call c = {F_FALLOCATE, fd, AT_FDCWD, NULL, AT_FDCWD, NULL, caller};
    int sh = 0;
    if (IO_UNLIKELY(decide(&c, 0, &sh))) { errno = cfg.err; return -1; }
    return real.fallocate(fd, mode, off, len);
}
IO_EXPORT int fallocate(int fd, int mode, off_t off, off_t len) { return fallocate_common(fd, mode, off, len, CALLER); }
IO_EXPORT int fallocate64(int fd, int mode, off_t off, off_t len) { return fallocate_common(fd, mode, off, len, CALLER); }

/* posix_fallocate returns the error number and leaves errno alone */
static int posix_fallocate_common(int fd, off_t off, off_t len, uintptr_t caller) {
    struct call c = {F_FALLOCATE, fd, AT_FDCWD, NULL, AT_FDCWD, NULL, caller};
    int sh = 0;
    if (IO_UNLIKELY(decide(&c, 0, &sh))) return cfg.err;
    return real.posix_fallocate(fd, off, len);
}
IO_EXPORT int posix_fallocate(int fd, off_t off, off_t len) { return posix_fallocate_common(fd, off, len, CALLER); }
IO_EXPORT int posix_fallocate64(int fd, off_t off, off_t len) { return posix_fallocate_common(fd, off, len, CALLER); }

IO_EXPORT int mkdir(const char *p, mode_t m) {
    PATH_CALL(F_MKDIR, AT_FDCWD, p, AT_FDCWD, NULL);
    int sh = 0;
    if (IO_UNLIKELY(decide(&c_, 0, &sh))) { errno = cfg.err; return -1; }
    return real.mkdir(p, m);
}
IO_EXPORT int mkdirat(int d, const char *p, mode_t m) {
    PATH_CALL(F_MKDIR, d, p, AT_FDCWD, NULL);
    int sh = 0;
    if (IO_UNLIKELY(decide(&c_, 0, &sh))) { errno = cfg.err; return -1; }
    return real.mkdirat(d, p, m);
}

/* ---- stdio ------------------------------------------------------------------------------------------ */
static int mode_writes(const char *m) { return m && (m[0] == 'w' || m[0] == 'a' || strchr(m, '+')); }

static void stream_error(FILE *f) {      /* ferror(f) becomes true, as after a failed write */
    flockfile(f);
    f->_flags |= _IO_ERR_SEEN;
    funlockfile(f);
}

static FILE *fopen_common(const char *p, const char *m, FILE *reopen, uintptr_t caller) {
    ensure_init();
    struct call c = {F_OPEN, -1, AT_FDCWD, p, AT_FDCWD, NULL, caller};
    int sh = 0;
    if (reopen) fd_forget(fileno(reopen));
    if (p && mode_writes(m) && IO_UNLIKELY(decide(&c, 0, &sh))) {
        if (reopen) real.fclose(reopen);   /* freopen closes the old stream whatever happens */
        errno = cfg.err;
        return NULL;
    }
    FILE *f = reopen ? real.freopen(p, m, reopen) : real.fopen(p, m);
    if (f) fd_forget(fileno(f));
    return f;
}
IO_EXPORT FILE *fopen(const char *p, const char *m) { return fopen_common(p, m, NULL, CALLER); }
IO_EXPORT FILE *fopen64(const char *p, const char *m) { return fopen_common(p, m, NULL, CALLER); }
IO_EXPORT FILE *freopen(const char *p, const char *m, FILE *f) { return fopen_common(p, m, f, CALLER); }
IO_EXPORT FILE *freopen64(const char *p, const char *m, FILE *f) { return fopen_common(p, m, f, CALLER); }

IO_EXPORT size_t fwrite(const void *ptr, size_t size, size_t n, FILE *f) {
    FD_CALL(F_FWRITE, fileno(f));            /* f is nonnull in glibc's prototype */
    int sh = 0;
    if (IO_UNLIKELY(decide(&c_, n > 1, &sh))) {
        size_t done = sh ? real.fwrite(ptr, size, half(n), f) : 0;
        stream_error(f);
        errno = cfg.err;
        return done;
    }
    return real.fwrite(ptr, size, n, f);
}
IO_EXPORT int fputs(const char *s, FILE *f) {
    FD_CALL(F_FWRITE, fileno(f));
    int sh = 0;
    size_t len = strlen(s);
    if (IO_UNLIKELY(decide(&c_, len > 1, &sh))) {
        if (sh) real.fwrite(s, 1, half(len), f);
        stream_error(f);
        errno = cfg.err;
        return EOF;
    }
    return real.fputs(s, f);
}
IO_EXPORT int fputc(int ch, FILE *f) {
    FD_CALL(F_FWRITE, fileno(f));
    int sh = 0;
    if (IO_UNLIKELY(decide(&c_, 0, &sh))) { stream_error(f); errno = cfg.err; return EOF; }
    return real.fputc(ch, f);
}
IO_EXPORT int putc(int ch, FILE *f) {
    FD_CALL(F_FWRITE, fileno(f));
    int sh = 0;
    if (IO_UNLIKELY(decide(&c_, 0, &sh))) { stream_error(f); errno = cfg.err; return EOF; }
    return real.putc(ch, f);
}
/* A failed flush loses what was buffered (as ENOSPC does to glibc's buffer). */
IO_EXPORT int fflush(FILE *f) {
    FD_CALL(F_FFLUSH, f ? fileno(f) : -1);
    int sh = 0;
    if (f && fd_writable(fileno(f)) && IO_UNLIKELY(decide(&c_, 0, &sh))) {
        __fpurge(f);
        stream_error(f);
        errno = cfg.err;
        return EOF;
    }
    return real.fflush(f);
}
IO_EXPORT int fclose(FILE *f) {
    FD_CALL(F_FCLOSE, f ? fileno(f) : -1);
    int sh = 0;
    int fail = f && fd_writable(fileno(f)) && decide(&c_, 0, &sh);
    if (f) fd_forget(fileno(f));
    if (IO_UNLIKELY(fail)) { __fpurge(f); real.fclose(f); errno = cfg.err; return EOF; }
    return real.fclose(f);
}

/* ---- exit counts ------------------------------------------------------------------------------------ */
__attribute__((destructor)) static void io_destructor(void) {
    if (atomic_load(&init_state) != 2 || !pl_records_ready()) return;
    char line[2048];
    struct pl_buf b = {line, 0, sizeof line};
    pl_exit_begin(&b, role);
    for (int f = 0; f < F_COUNT; f++) {
        uint64_t a = atomic_load(&calls[f]), e = atomic_load(&eligible[f]), x = atomic_load(&failed[f]);
        if (a) pl_put_fn_counts(&b, fn_names[f], a, e, x);      /* functions never called: left out */
    }
    pl_put_kv(&b, "index", atomic_load(index_ctr));
    pl_emit(&b);
}
