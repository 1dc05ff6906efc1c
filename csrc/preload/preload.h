/* What mltools' LD_PRELOAD shims (malloc-fail, io-fail) share.
 *
 * - The record channel: a file mltools creates in a private directory and
 *   names in an environment variable. The shim maps it (MAP_SHARED) and
 *   closes the descriptor at once, so a target that closes every descriptor
 *   (closefrom, daemons) cannot cut the channel, and no record is ever
 *   written into a descriptor number the target has reused. A record is
 *   reserved with one atomic add and copied in; its first byte (the record
 *   kind) is stored last, so a record cut short by a killed process is
 *   recognisable (mltools/preload/records.py reads them).
 * - The shared state page (root claim, the tree-wide counter), also a file.
 * - Which process is "the target" (scope root, tree, each), the hello record.
 * - Call sites as module+offset, stacks (libgcc's unwinder), crash records.
 * - exec interposition: an E record says whether the new image keeps the
 *   shim in its environment (env -i, clearenv).
 * - Fork helpers: the child's stdio, waiting with a timeout, thread count.
 *
 * Nothing here allocates, and the shim's own file work goes through raw
 * system calls, never through a function a shim interposes.
 */
#ifndef MLTOOLS_PRELOAD_H
#define MLTOOLS_PRELOAD_H

#define _GNU_SOURCE
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PL_EXPORT __attribute__((visibility("default")))
#define PL_LIKELY(x) __builtin_expect(!!(x), 1)
#define PL_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define PL_PROTOCOL_VERSION 2

/* ---- formatting into stack buffers ---- */
struct pl_buf { char *p; size_t len, cap; };
void pl_put_str(struct pl_buf *b, const char *s);
void pl_put_val(struct pl_buf *b, const char *s);      /* a value from outside: no tab, newline, '|' */
void pl_put_u64(struct pl_buf *b, uint64_t v);
void pl_put_hex(struct pl_buf *b, uint64_t v);
void pl_put_kv(struct pl_buf *b, const char *key, uint64_t v);      /* "\tkey=v" */
void pl_put_ks(struct pl_buf *b, const char *key, const char *v);   /* "\tkey=v" (v sanitised) */
uint64_t pl_parse_u64(const char *s, uint64_t dflt);
int pl_str_eq(const char *a, const char *b);
size_t pl_str_len(const char *s);
int pl_starts_with(const char *s, const char *prefix);

/* ---- raw system calls for the shim's own files ---- */
int pl_sys_open(const char *path, int flags, unsigned mode);
int pl_sys_close(int fd);
int pl_sys_dup2(int from, int to);
ssize_t pl_sys_write(int fd, const void *p, size_t n);
ssize_t pl_sys_read(int fd, void *p, size_t n);
off_t pl_sys_lseek(int fd, off_t off, int whence);

/* ---- set-up: the environment prefix (MLTOOLS_MF_, MLTOOLS_IOF_) and the shim's name ---- */
void pl_setup(const char *env_prefix, const char *shim_name);
const char *pl_getenv(const char *suffix);           /* getenv(prefix + suffix) */

/* ---- the record channel ---- */
void pl_records_open(const char *path);
int pl_records_ready(void);
void pl_emit(struct pl_buf *b);                       /* appends the newline */

/* ---- the shared state page ---- */
struct pl_state {
    _Atomic int root_pid;          /* the process that claimed "root" */
    _Atomic uint64_t index;        /* tree scope: the one call counter */
    _Atomic uint64_t failures;     /* tree scope: failures injected */
    _Atomic uint64_t spare[5];
};
extern struct pl_state *pl_shared;
void pl_state_open(const char *path);

/* ---- this process ---- */
extern pid_t pl_pid;
extern char pl_exe[1024];
/* pid, exe and the code ranges of the executable and of libc/ld.so/the shim
 * (`self` is an address inside the calling shim) */
void pl_process_init(uintptr_t self);
void pl_process_forked(void);                         /* in a forked child: new pid */

enum pl_scope { PL_SCOPE_ROOT, PL_SCOPE_TREE, PL_SCOPE_EACH };
int pl_scope_from_env(void);                          /* <prefix>SCOPE */
/* Does this process inject? Sets *role (root, tree, each, not-target,
 * not-root, root-taken) from <prefix>TARGET / <prefix>EXCLUDE (dev:ino lists).
 * One that injects writes no core file when <prefix>NO_CORE is set. */
int pl_claim_role(int scope, const char **role);
/* In a process the target forked: does it still inject? Under scope root it
 * no longer does (*role "not-root"); under scope tree *role becomes "tree". */
int pl_role_forked(int scope, int injects, const char **role);

/* hello: "H version pid ppid role shim" (the caller adds its own fields, then pl_hello_end) */
void pl_hello_begin(struct pl_buf *b, const char *role);
void pl_hello_end(struct pl_buf *b);                  /* exe=..., then emit */

/* exit: "X pid role" (role "forked" in a process that has not said hello since
 * a fork); the caller adds its own fields, then pl_emit */
void pl_exit_begin(struct pl_buf *b, const char *role);
void pl_put_fn_counts(struct pl_buf *b, const char *name,
                      uint64_t calls, uint64_t counted, uint64_t failed);   /* "\tfn=name:calls:counted:failed" */

/* ---- call sites ---- */
int pl_is_sys_addr(uintptr_t a);                      /* libc, ld.so or the shim */
void pl_put_frame(struct pl_buf *b, uintptr_t ip);    /* module+offset */
int pl_capture(uintptr_t caller, uintptr_t *ips, int max);   /* frames from the caller outwards */
void pl_put_frames(struct pl_buf *b, const uintptr_t *ips, int n);

/* Entered/left around shim work that may call back into the shim (malloc-fail
 * marks its thread busy so that allocations made meanwhile pass through). */
extern void (*pl_enter)(void);
extern void (*pl_leave)(void);

/* After the first injected failure: SIGSEGV/SIGBUS/SIGFPE/SIGILL/SIGABRT write a
 * K record (where the process died), then the default action runs. */
void pl_install_crash_handlers(void);

/* ---- exec: an E record, and the real functions (resolved at init) ---- */
void pl_exec_init(void);

/* ---- fork helpers ---- */
int pl_count_threads(void);
/* A sweep's child: stdout to /dev/null, stderr to DIR/IDX.err, stdin re-opened
 * privately at `stdin_offset`, the parent's offset taken before fork (a regular
 * file: the child's reads do not move the parent's, nor the parent's, running on,
 * the child's); -1: /dev/null. */
off_t pl_stdin_offset(void);
void pl_child_stdio(const char *dir, uint64_t idx, off_t stdin_offset);
/* Wait for `pid` at most timeout_ms (then SIGKILL it, *timed_out = 1). *status: waitpid's, -1 when lost. */
void pl_wait_child(pid_t pid, uint64_t timeout_ms, int *status, int *timed_out);
/* "S"/"C" records of a sweep point: skipped (with a reason) or run in child `child`. */
void pl_fork_record(const char *kind, uint64_t idx, const char *reason, pid_t child, int status, int timed_out);
uint64_t pl_ms_since(const void *timespec_start);

#endif
