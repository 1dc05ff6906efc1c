/* What mltools' LD_PRELOAD shims share: see preload.h. */
#define _GNU_SOURCE
#include "preload.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <poll.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <unwind.h>

/* ---- formatting ------------------------------------------------------------------------ */

void pl_put_str(struct pl_buf *b, const char *s) {
    while (*s && b->len + 1 < b->cap) b->p[b->len++] = *s++;
}

void pl_put_val(struct pl_buf *b, const char *s) {
    while (*s && b->len + 1 < b->cap) {
        char c = *s++;
        b->p[b->len++] = (c == '\t' || c == '\n' || c == '|') ? ' ' : c;
    }
}

void pl_put_u64(struct pl_buf *b, uint64_t v) {
    char tmp[24];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (n && b->len + 1 < b->cap) b->p[b->len++] = tmp[--n];
}

void pl_put_hex(struct pl_buf *b, uint64_t v) {
    char tmp[20];
    int n = 0;
    do { tmp[n++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
    pl_put_str(b, "0x");
    while (n && b->len + 1 < b->cap) b->p[b->len++] = tmp[--n];
}

void pl_put_kv(struct pl_buf *b, const char *key, uint64_t v) {
    pl_put_str(b, "\t");
    pl_put_str(b, key);
    pl_put_str(b, "=");
    pl_put_u64(b, v);
}

void pl_put_ks(struct pl_buf *b, const char *key, const char *v) {
    pl_put_str(b, "\t");
    pl_put_str(b, key);
    pl_put_str(b, "=");
    pl_put_val(b, v ? v : "");
}

/* Own string helpers: an ASan runtime intercepts strcmp and friends and may
 * not be ready when the first allocation arrives. */
int pl_str_eq(const char *a, const char *b) {
    while (*a && *a == *b) { a++; b++; }
    return *a == *b;
}

size_t pl_str_len(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

int pl_starts_with(const char *s, const char *prefix) {
    while (*prefix && *s == *prefix) { s++; prefix++; }
    return *prefix == '\0';
}

uint64_t pl_parse_u64(const char *s, uint64_t dflt) {
    if (!s || !*s) return dflt;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) v = v * 10 + (uint64_t)(*s - '0');
    return v;
}

/* ---- raw system calls -------------------------------------------------------------------- */

int pl_sys_open(const char *path, int flags, unsigned mode) {
    return (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);
}
int pl_sys_close(int fd) { return (int)syscall(SYS_close, fd); }
int pl_sys_dup2(int from, int to) {
    if (from == to) return to;
    return (int)syscall(SYS_dup3, from, to, 0);
}
ssize_t pl_sys_write(int fd, const void *p, size_t n) { return (ssize_t)syscall(SYS_write, fd, p, n); }
ssize_t pl_sys_read(int fd, void *p, size_t n) { return (ssize_t)syscall(SYS_read, fd, p, n); }
off_t pl_sys_lseek(int fd, off_t off, int whence) { return (off_t)syscall(SYS_lseek, fd, off, whence); }

/* ---- set-up -------------------------------------------------------------------------------- */

static const char *env_prefix = "MLTOOLS_";
static const char *shim_name = "?";
static char self_path[1024];            /* this shim's file (dladdr), for the E records */

static void noop(void) {}
void (*pl_enter)(void) = noop;
void (*pl_leave)(void) = noop;

void pl_setup(const char *prefix, const char *name) {
    env_prefix = prefix;
    shim_name = name;
}

const char *pl_getenv(const char *suffix) {
    char key[96];
    struct pl_buf b = {key, 0, sizeof key};
    pl_put_str(&b, env_prefix);
    pl_put_str(&b, suffix);
    key[b.len] = '\0';
    return getenv(key);
}

/* ---- the record channel -------------------------------------------------------------------- */

/* The file's header (64 bytes), then the records. mltools/preload/records.py
 * writes and reads the same layout. */
struct pl_rec_hdr {
    char magic[8];                  /* "MLTREC02" */
    _Atomic uint64_t used;          /* bytes reserved (may pass cap: those records were dropped) */
    uint64_t cap;                   /* bytes available after the header */
    _Atomic uint64_t dropped;       /* records that did not fit */
};
#define PL_REC_DATA 64
static struct pl_rec_hdr *rec;

void pl_records_open(const char *path) {
    if (!path || !*path || rec) return;
    int fd = pl_sys_open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0);
    if (fd < 0) return;
    struct stat st;
    /* ours: a regular file of the caller's uid, with the magic mltools wrote */
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() && st.st_size > PL_REC_DATA) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) {
            struct pl_rec_hdr *h = p;
            if (memcmp(h->magic, "MLTREC02", 8) == 0 && h->cap > 0
                    && h->cap <= (uint64_t)st.st_size - PL_REC_DATA)
                rec = h;
            else
                munmap(p, (size_t)st.st_size);
        }
    }
    pl_sys_close(fd);                    /* the mapping outlives the descriptor */
}

int pl_records_ready(void) { return rec != NULL; }

void pl_emit(struct pl_buf *b) {
    if (!rec || b->len == 0) return;
    if (b->len + 1 > b->cap) b->len = b->cap - 1;
    b->p[b->len++] = '\n';
    uint64_t off = atomic_fetch_add_explicit(&rec->used, b->len, memory_order_relaxed);
    if (off + b->len > rec->cap) {
        atomic_fetch_add_explicit(&rec->dropped, 1, memory_order_relaxed);
        return;
    }
    volatile char *dst = (volatile char *)rec + PL_REC_DATA + off;
    for (size_t i = 1; i < b->len; i++) dst[i] = b->p[i];
    /* the kind letter last: a reader never takes a half-written record for a whole one */
    __atomic_store_n((char *)dst, b->p[0], __ATOMIC_RELEASE);
}

/* ---- the shared state page ------------------------------------------------------------------ */

static struct pl_state private_state;
struct pl_state *pl_shared = &private_state;

void pl_state_open(const char *path) {
    if (!path || !*path) return;
    int fd = pl_sys_open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0);
    if (fd < 0) return;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid()
            && (size_t)st.st_size >= sizeof(struct pl_state)) {
        void *p = mmap(NULL, sizeof(struct pl_state), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p != MAP_FAILED) pl_shared = p;
    }
    pl_sys_close(fd);
}

/* ---- this process ---------------------------------------------------------------------------- */

pid_t pl_pid;
char pl_exe[1024];

struct pl_range { uintptr_t lo, hi; };
#define PL_MAX_MAIN_RANGES 8
#define PL_MAX_SYS_RANGES 16
static uintptr_t main_base;             /* load bias of the executable; 0 when not PIE */
static struct pl_range main_ranges[PL_MAX_MAIN_RANGES];
static struct pl_range sys_ranges[PL_MAX_SYS_RANGES];   /* libc, ld.so, this shim: "not user code" */
static int n_main_ranges, n_sys_ranges, phdr_seen;

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
        if (is_main && n_main_ranges < PL_MAX_MAIN_RANGES) main_ranges[n_main_ranges++] = (struct pl_range){lo, hi};
        if ((is_sys || (self >= lo && self < hi)) && n_sys_ranges < PL_MAX_SYS_RANGES)
            sys_ranges[n_sys_ranges++] = (struct pl_range){lo, hi};
    }
    return 0;
}

void pl_process_init(uintptr_t self) {
    pl_pid = getpid();
    ssize_t n = readlink("/proc/self/exe", pl_exe, sizeof pl_exe - 1);
    pl_exe[n > 0 ? n : 0] = '\0';
    dl_iterate_phdr(phdr_cb, (void *)self);
    Dl_info info;
    if (dladdr((void *)self, &info) && info.dli_fname) {
        size_t k = 0;
        for (; info.dli_fname[k] && k + 1 < sizeof self_path; k++) self_path[k] = info.dli_fname[k];
        self_path[k] = '\0';
    }
}

void pl_process_forked(void) { pl_pid = getpid(); }

int pl_scope_from_env(void) {
    const char *e = pl_getenv("SCOPE");
    if (!e) return PL_SCOPE_ROOT;
    return pl_str_eq(e, "tree") ? PL_SCOPE_TREE : pl_str_eq(e, "each") ? PL_SCOPE_EACH : PL_SCOPE_ROOT;
}

static int exe_matches(const char *spec, dev_t dev, ino_t ino) {
    /* spec: "dev:ino[,dev:ino...]" */
    while (spec && *spec) {
        uint64_t d = pl_parse_u64(spec, 0);
        const char *colon = strchr(spec, ':');
        if (!colon) return 0;
        uint64_t i = pl_parse_u64(colon + 1, 0);
        if (d == (uint64_t)dev && i == (uint64_t)ino) return 1;
        spec = strchr(colon, ',');
        if (spec) spec++;
    }
    return 0;
}

/* Which processes inject: see "Scope" in docs/malloc-fail.md. */
static int claim_role(int scope, const char **role) {
    struct stat st;
    int exe_ok = stat("/proc/self/exe", &st) == 0;
    const char *target = pl_getenv("TARGET");
    const char *exclude = pl_getenv("EXCLUDE");
    int eligible;
    if (target && *target) eligible = exe_ok && exe_matches(target, st.st_dev, st.st_ino);
    else eligible = !(exe_ok && exclude && exe_matches(exclude, st.st_dev, st.st_ino));
    int root_before = atomic_load(&pl_shared->root_pid);
    if (scope == PL_SCOPE_EACH) {
        *role = eligible ? "each" : "not-target";
        return eligible;
    }
    if (root_before == 0 || root_before == pl_pid) {
        int expected = 0;
        if (eligible && (root_before == pl_pid
                         || atomic_compare_exchange_strong(&pl_shared->root_pid, &expected, pl_pid))) {
            *role = "root";
            return 1;
        }
        *role = eligible ? "root-taken" : "not-target";
        return 0;
    }
    if (scope == PL_SCOPE_TREE) {
        *role = "tree";        /* started after the root: in its tree */
        return 1;
    }
    *role = eligible ? "not-root" : "not-target";
    return 0;
}

int pl_claim_role(int scope, const char **role) {
    int injects = claim_role(scope, role);
    /* sweeps: hundreds of aborting runs must not each write a core file */
    if (injects && pl_parse_u64(pl_getenv("NO_CORE"), 0)) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
    }
    return injects;
}

int pl_role_forked(int scope, int injects, const char **role) {
    if (!injects) return 0;
    if (scope == PL_SCOPE_ROOT) { *role = "not-root"; return 0; }
    if (scope == PL_SCOPE_TREE) *role = "tree";
    return 1;
}

void pl_hello_begin(struct pl_buf *b, const char *role) {
    pl_put_str(b, "H");
    pl_put_kv(b, "version", PL_PROTOCOL_VERSION);
    pl_put_kv(b, "pid", (uint64_t)getpid());
    pl_put_kv(b, "ppid", (uint64_t)getppid());
    pl_put_ks(b, "role", role);
    pl_put_ks(b, "shim", shim_name);
}

void pl_hello_end(struct pl_buf *b) {
    pl_put_ks(b, "exe", pl_exe);
    pl_emit(b);
}

void pl_exit_begin(struct pl_buf *b, const char *role) {
    pl_put_str(b, "X");
    pl_put_kv(b, "pid", (uint64_t)getpid());
    pl_put_ks(b, "role", getpid() == pl_pid ? role : "forked");
}

void pl_put_fn_counts(struct pl_buf *b, const char *name, uint64_t calls, uint64_t counted, uint64_t failed) {
    pl_put_str(b, "\tfn=");
    pl_put_str(b, name);
    pl_put_str(b, ":");
    pl_put_u64(b, calls);
    pl_put_str(b, ":");
    pl_put_u64(b, counted);
    pl_put_str(b, ":");
    pl_put_u64(b, failed);
}

/* ---- call sites ---------------------------------------------------------------------------- */

int pl_is_sys_addr(uintptr_t a) {
    for (int i = 0; i < n_sys_ranges; i++)
        if (a >= sys_ranges[i].lo && a < sys_ranges[i].hi) return 1;
    return 0;
}

void pl_put_frame(struct pl_buf *b, uintptr_t ip) {
    for (int i = 0; i < n_main_ranges; i++) {
        if (ip >= main_ranges[i].lo && ip < main_ranges[i].hi) {
            /* the executable: offsets are link-time addresses (absolute when not PIE) */
            pl_put_val(b, pl_exe);
            pl_put_str(b, "+");
            pl_put_hex(b, ip - main_base);
            return;
        }
    }
    Dl_info info;
    if (dladdr((void *)ip, &info) && info.dli_fbase) {
        pl_put_val(b, info.dli_fname && *info.dli_fname ? info.dli_fname : "?");
        pl_put_str(b, "+");
        pl_put_hex(b, ip - (uintptr_t)info.dli_fbase);
    } else {
        pl_put_str(b, "?+");
        pl_put_hex(b, ip);
    }
}

struct unwind_ctx { uintptr_t *ips; int n, max; };

static _Unwind_Reason_Code unwind_cb(struct _Unwind_Context *uc, void *arg) {
    struct unwind_ctx *c = arg;
    uintptr_t ip = (uintptr_t)_Unwind_GetIP(uc);
    if (ip == 0 || c->n >= c->max) return _URC_END_OF_STACK;
    c->ips[c->n++] = ip;
    return _URC_NO_REASON;
}

int pl_capture(uintptr_t caller, uintptr_t *ips, int max) {
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

void pl_put_frames(struct pl_buf *b, const uintptr_t *ips, int n) {
    pl_put_str(b, "\tframes=");
    for (int i = 0; i < n; i++) {
        if (i) pl_put_str(b, "|");
        pl_put_frame(b, ips[i]);
    }
}

/* ---- crash records ------------------------------------------------------------------------- */

static void on_fatal_signal(int sig, siginfo_t *info, void *uctx) {
    uintptr_t pc = 0;
#if defined(__x86_64__)
    pc = (uintptr_t)((ucontext_t *)uctx)->uc_mcontext.gregs[REG_RIP];
#else
    (void)uctx;
#endif
    pl_enter();
    char line[4096];
    struct pl_buf b = {line, 0, sizeof line};
    pl_put_str(&b, "K");
    pl_put_kv(&b, "pid", (uint64_t)getpid());
    pl_put_kv(&b, "signal", (uint64_t)sig);
    pl_put_str(&b, "\taddr=");
    pl_put_hex(&b, (uint64_t)(uintptr_t)info->si_addr);
    uintptr_t ips[16];
    int n = pc ? pl_capture(pc, ips, 16) : 0;
    pl_put_frames(&b, ips, n);
    pl_emit(&b);
    pl_leave();
    /* SA_RESETHAND restored the default: returning re-executes the faulting
     * instruction (SIGSEGV/SIGBUS/SIGFPE/SIGILL); abort() raises again itself */
}

static _Atomic int crash_handlers_installed;

void pl_install_crash_handlers(void) {
    if (!rec || atomic_exchange(&crash_handlers_installed, 1)) return;
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction old, sa;
        if (sigaction(sigs[i], NULL, &old) != 0) continue;
        /* only where the target left the default disposition */
        if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler != SIG_DFL) continue;
        if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction != NULL) continue;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_fatal_signal;
        sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        sigaction(sigs[i], &sa, NULL);
    }
}

/* ---- exec ------------------------------------------------------------------------------------ */

extern char **environ;

static struct {
    int (*execve)(const char *, char *const[], char *const[]);
    int (*execv)(const char *, char *const[]);
    int (*execvp)(const char *, char *const[]);
    int (*execvpe)(const char *, char *const[], char *const[]);
    int (*fexecve)(int, char *const[], char *const[]);
    int (*posix_spawn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                       const posix_spawnattr_t *, char *const[], char *const[]);
    int (*posix_spawnp)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                        const posix_spawnattr_t *, char *const[], char *const[]);
} real_exec;

void pl_exec_init(void) {
#define PL_RESOLVE(name) (*(void **)&real_exec.name = dlsym(RTLD_NEXT, #name))
    PL_RESOLVE(execve);
    PL_RESOLVE(execv);
    PL_RESOLVE(execvp);
    PL_RESOLVE(execvpe);
    PL_RESOLVE(fexecve);
    PL_RESOLVE(posix_spawn);
    PL_RESOLVE(posix_spawnp);
#undef PL_RESOLVE
}

/* Does the environment handed to the new image keep this shim (its LD_PRELOAD
 * entry and the record channel)? */
static int keeps_shim(char *const envp[]) {
    int preload = 0, records = 0;
    char key[96];
    struct pl_buf k = {key, 0, sizeof key};
    pl_put_str(&k, env_prefix);
    pl_put_str(&k, "RECORDS=");
    key[k.len] = '\0';
    for (size_t i = 0; envp && envp[i]; i++) {
        if (pl_starts_with(envp[i], "LD_PRELOAD=") && self_path[0] && strstr(envp[i], self_path)) preload = 1;
        if (pl_starts_with(envp[i], key)) records = 1;
    }
    return preload && records;
}

static void exec_record(const char *how, const char *path, char *const envp[]) {
    if (!rec) return;
    int saved = errno;
    char line[1400];
    struct pl_buf b = {line, 0, sizeof line};
    pl_put_str(&b, "E");
    pl_put_kv(&b, "pid", (uint64_t)getpid());
    pl_put_ks(&b, "how", how);
    pl_put_ks(&b, "path", path ? path : "?");
    pl_put_kv(&b, "keeps", (uint64_t)keeps_shim(envp));
    pl_put_ks(&b, "exe", pl_exe);
    pl_emit(&b);
    errno = saved;
}

static int no_real(void) { errno = ENOSYS; return -1; }

PL_EXPORT int execve(const char *path, char *const argv[], char *const envp[]) {
    exec_record("execve", path, envp);
    return real_exec.execve ? real_exec.execve(path, argv, envp) : (int)syscall(SYS_execve, path, argv, envp);
}

PL_EXPORT int execv(const char *path, char *const argv[]) {
    exec_record("execv", path, environ);
    return real_exec.execv ? real_exec.execv(path, argv) : no_real();
}

PL_EXPORT int execvp(const char *file, char *const argv[]) {
    exec_record("execvp", file, environ);
    return real_exec.execvp ? real_exec.execvp(file, argv) : no_real();
}

PL_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[]) {
    exec_record("execvpe", file, envp);
    return real_exec.execvpe ? real_exec.execvpe(file, argv, envp) : no_real();
}

PL_EXPORT int fexecve(int fd, char *const argv[], char *const envp[]) {
    exec_record("fexecve", "fd", envp);
    return real_exec.fexecve ? real_exec.fexecve(fd, argv, envp) : no_real();
}

/* execl, execlp, execle: the arguments into an array on the stack, then the v form */
/* glibc declares `arg` nonnull, but execl(path, NULL) runs a program with an empty
 * argv: a volatile copy keeps the test from being optimised away. */
static size_t count_args(const char *arg, va_list ap) {
    size_t n = 1;
    va_list cp;
    va_copy(cp, ap);
    while (va_arg(cp, const char *) != NULL) n++;
    va_end(cp);
    (void)arg;
    return n;
}

enum { EXEC_L, EXEC_LP, EXEC_LE };

/* The array lives in this frame, which makes the exec call itself. */
static int exec_list(int how, const char *path, const char *arg, va_list ap) {
    const char *volatile first = arg;
    size_t n = first ? count_args(arg, ap) : 0;
    char *argv[n + 1];
    if (n) argv[0] = (char *)arg;
    for (size_t i = 1; i < n; i++) argv[i] = va_arg(ap, char *);
    argv[n] = NULL;
    if (how == EXEC_LP) return execvp(path, argv);
    if (how == EXEC_L) return execv(path, argv);
    if (first) (void)va_arg(ap, char *);            /* the NULL that ends the list */
    char *const *envp = va_arg(ap, char *const *);
    return execve(path, argv, envp);
}

PL_EXPORT int execl(const char *path, const char *arg, ...) {
    va_list ap;
    va_start(ap, arg);
    int r = exec_list(EXEC_L, path, arg, ap);
    va_end(ap);
    return r;
}

PL_EXPORT int execlp(const char *file, const char *arg, ...) {
    va_list ap;
    va_start(ap, arg);
    int r = exec_list(EXEC_LP, file, arg, ap);
    va_end(ap);
    return r;
}

PL_EXPORT int execle(const char *path, const char *arg, ...) {
    va_list ap;
    va_start(ap, arg);
    int r = exec_list(EXEC_LE, path, arg, ap);
    va_end(ap);
    return r;
}

PL_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                          const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
    exec_record("posix_spawn", path, envp);
    return real_exec.posix_spawn ? real_exec.posix_spawn(pid, path, fa, attr, argv, envp) : ENOSYS;
}

PL_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[]) {
    exec_record("posix_spawnp", file, envp);
    return real_exec.posix_spawnp ? real_exec.posix_spawnp(pid, file, fa, attr, argv, envp) : ENOSYS;
}

/* ---- fork helpers -------------------------------------------------------------------------- */

int pl_count_threads(void) {
    int fd = pl_sys_open("/proc/self/stat", O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) return -1;
    char s[1024];
    ssize_t n = pl_sys_read(fd, s, sizeof s - 1);
    pl_sys_close(fd);
    if (n <= 0) return -1;
    s[n] = '\0';
    char *p = strrchr(s, ')');   /* comm may contain spaces */
    if (!p) return -1;
    /* fields after ')': state(3) ... num_threads is field 20 */
    int field = 2;
    for (; *p && field < 20; p++)
        if (*p == ' ') field++;
    return (int)pl_parse_u64(p, 0);
}

off_t pl_stdin_offset(void) { return pl_sys_lseek(0, 0, SEEK_CUR); }

void pl_child_stdio(const char *dir, uint64_t idx, off_t off) {
    char path[700];
    struct pl_buf b = {path, 0, sizeof path};
    pl_put_str(&b, dir);
    pl_put_str(&b, "/");
    pl_put_u64(&b, idx);
    pl_put_str(&b, ".err");
    path[b.len] = '\0';
    /* stdout is not compared: /dev/null; stderr is kept for the outcome */
    int out = pl_sys_open("/dev/null", O_WRONLY | O_CLOEXEC, 0);
    if (out >= 0) { pl_sys_dup2(out, 1); pl_sys_close(out); }
    int err = pl_sys_open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (err >= 0) { pl_sys_dup2(err, 2); pl_sys_close(err); }
    /* stdin: a description of our own at the parent's offset, so the child reads
     * what the parent would read next and the parent's offset does not move */
    int in = off >= 0 ? pl_sys_open("/proc/self/fd/0", O_RDONLY | O_CLOEXEC, 0) : -1;
    if (in >= 0 && pl_sys_lseek(in, off, SEEK_SET) != off) { pl_sys_close(in); in = -1; }
    if (in < 0) in = pl_sys_open("/dev/null", O_RDONLY | O_CLOEXEC, 0);   /* a pipe cannot be shared */
    if (in >= 0) { pl_sys_dup2(in, 0); pl_sys_close(in); }
}

uint64_t pl_ms_since(const void *start) {
    const struct timespec *t0 = start;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)(now.tv_sec - t0->tv_sec) * 1000 + (uint64_t)((now.tv_nsec - t0->tv_nsec) / 1000000);
}

void pl_wait_child(pid_t pid, uint64_t timeout_ms, int *status, int *timed_out) {
#ifdef SYS_pidfd_open
    /* wait with a timeout: poll a pidfd (Linux >= 5.3), else poll waitpid */
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd >= 0) {
        struct pollfd pfd = {pidfd, POLLIN, 0};
        int r;
        do r = poll(&pfd, 1, (int)timeout_ms); while (r < 0 && errno == EINTR);
        pl_sys_close(pidfd);
        if (r == 0) { kill(pid, SIGKILL); *timed_out = 1; }
        while (waitpid(pid, status, 0) < 0) {
            if (errno != EINTR) { *status = -1; break; }   /* the target reaped it */
        }
        return;
    }
#endif
    struct timespec t0, nap = {0, 20000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno != EINTR) { *status = -1; break; }
        if (pl_ms_since(&t0) >= timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, status, 0);
            *timed_out = 1;
            break;
        }
        nanosleep(&nap, NULL);
        if (nap.tv_nsec < 2000000) nap.tv_nsec *= 2;
    }
}

void pl_fork_record(const char *kind, uint64_t idx, const char *reason, pid_t child, int status, int timed_out) {
    char line[256];
    struct pl_buf b = {line, 0, sizeof line};
    pl_put_str(&b, kind);
    pl_put_kv(&b, "pid", (uint64_t)pl_pid);
    pl_put_kv(&b, "index", idx);
    if (reason) pl_put_ks(&b, "reason", reason);
    if (child > 0) {
        pl_put_kv(&b, "child", (uint64_t)child);
        pl_put_kv(&b, "status", (uint64_t)(unsigned)status);
        pl_put_kv(&b, "timed_out", (uint64_t)timed_out);
    }
    pl_emit(&b);
}
