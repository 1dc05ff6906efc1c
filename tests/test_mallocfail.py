"""malloc-fail: single runs against small C, C++ and Python targets built at test time.

The oracles are the targets themselves: each checks the allocation result,
errno and its data and exits with a code that only the expected behaviour
produces; call sites are checked against the source line numbers written
here; static/setuid refusal against what the loader would do (no PT_INTERP).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc LD_PRELOAD shim")

FLAGS = ["-g", "-O0"]

# Each allocation function once; a failure makes the program exit with the
# function's own code after checking errno/return conventions.
FAMILY_SRC = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
    void *p;
    errno = 0;
    p = malloc(100);                      if (!p) return errno == ENOMEM ? 28 : 99; free(p);
    p = calloc(10, 10);                   if (!p) return errno == ENOMEM ? 29 : 99; free(p);
    p = malloc(10);
    void *q = realloc(p, 200);            if (!q) { free(p); return errno == ENOMEM ? 27 : 99; }
    void *r = reallocarray(q, 10, 30);    if (!r) { free(q); return errno == ENOMEM ? 26 : 99; } free(r);
    errno = EDOM;                          /* posix_memalign must return ENOMEM and leave errno alone */
    int rc = posix_memalign(&p, 64, 100); if (rc) return rc == ENOMEM && errno == EDOM ? 21 : 98; free(p);
    p = aligned_alloc(64, 128);           if (!p) return errno == ENOMEM ? 22 : 99; free(p);
    p = memalign(64, 100);                if (!p) return errno == ENOMEM ? 23 : 99; free(p);
    p = valloc(100);                      if (!p) return errno == ENOMEM ? 24 : 99; free(p);
    p = pvalloc(100);                     if (!p) return errno == ENOMEM ? 25 : 99; free(p);
    return 0;
}
"""
FAMILY_CODES = {"malloc": 28, "calloc": 29, "realloc": 27, "reallocarray": 26, "posix_memalign": 21,
                "aligned_alloc": 22, "memalign": 23, "valloc": 24, "pvalloc": 25}

CHECKED_CALLOC_SRC = r"""#include <errno.h>
#include <stdlib.h>
int main(void) {
    long *v = calloc(1000, sizeof *v);
    if (v == NULL) return errno == ENOMEM ? 11 : 12;
    free(v);
    return 0;
}
"""
CHECKED_CALLOC_LINE = 4

REALLOC_SRC = r"""#include <errno.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
    unsigned char *p = malloc(100);
    if (!p) return 2;
    for (int i = 0; i < 100; i++) p[i] = (unsigned char)(i * 7);
    unsigned char *q = realloc(p, 1 << 20);
    if (q) { free(q); return 0; }
    if (errno != ENOMEM) return 3;
    for (int i = 0; i < 100; i++) if (p[i] != (unsigned char)(i * 7)) return 4;
    free(p);                              /* the old block is still ours */
    return 31;
}
"""

THREAD_SRC = r"""#include <errno.h>
#include <pthread.h>
static void *body(void *arg) { return arg; }
int main(void) {
    pthread_t t;
    int rc = pthread_create(&t, NULL, body, NULL);
    if (rc == EAGAIN) return 41;
    if (rc) return 42;
    pthread_join(t, NULL);
    return 0;
}
"""

MT_SRC = r"""#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
static atomic_int nulls;
static void *body(void *arg) {
    for (int i = 0; i < 200000; i++) {
        void *p = malloc(32);
        if (!p) { atomic_fetch_add(&nulls, 1); continue; }
        *(volatile char *)p = 1;
        free(p);
    }
    return arg;
}
int main(void) {
    pthread_t t[8];
    for (int i = 0; i < 8; i++) if (pthread_create(&t[i], NULL, body, NULL)) return 3;
    for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
    printf("nulls=%d\n", atomic_load(&nulls));
    return 0;
}
"""

CPP_SRC = r"""#include <cstdio>
#include <cstring>
#include <new>
int main(int argc, char **argv) {
    bool catch_it = argc > 1 && std::strcmp(argv[1], "catch") == 0;
    if (catch_it) {
        try {
            char *p = new char[123456];
            p[0] = 1;
            delete[] p;
        } catch (const std::bad_alloc &) {
            return 51;
        }
        return 0;
    }
    char *p = new char[123456];
    p[0] = 1;
    delete[] p;
    return 0;
}
"""

TARGET_SRC = r"""#include <stdlib.h>
int main(void) {
    void *p = malloc(10);
    if (!p) return 61;
    free(p);
    return 0;
}
"""

FORK_SRC = r"""#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    pid_t pid = fork();
    if (pid == 0) {
        void *p = malloc(50);
        _exit(p ? 0 : 7);
    }
    int st;
    waitpid(pid, &st, 0);
    void *q = malloc(50);
    int child = WIFEXITED(st) ? WEXITSTATUS(st) : 100;
    return (q ? 0 : 1) + child * 2;
}
"""


@pytest.fixture(scope="module")
def shim_built():
    from mltools.mallocfail.run import shim_path
    path = shim_path()
    assert os.path.exists(path)
    return path


def run_json(cli, *args):
    res = cli("malloc-fail", "--json", *[str(a) for a in args])
    assert res.exit_code != 125, res.stderr
    return res, json.loads(res.stdout)


def counts(doc):
    return {c["function"]: c for c in doc["counts"]}


EXEC_FAMILY = {"execve", "execv", "execvp", "execvpe", "execl", "execlp", "execle", "fexecve", "posix_spawn",
               "posix_spawnp"}


def test_shim_exports_exactly_the_allocation_and_exec_functions(shim_built):
    # exec is interposed only to record whether the new image keeps the shim
    out = subprocess.run(["nm", "-D", "--defined-only", shim_built], capture_output=True, text=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if " T " in line}
    assert exported == set(FAMILY_CODES) | {"free"} | EXEC_FAMILY


def test_checked_calloc_fails_cleanly_with_site(cli, cbuild, shim_built):
    prog = cbuild.build("checked_calloc", CHECKED_CALLOC_SRC, flags=FLAGS)
    res, doc = run_json(cli, "--only", "calloc", "--fail-at", "1", prog)
    assert res.exit_code == 11 and doc["exit_status"] == 11
    assert doc["outcome"]["class_name"] == "clean-error"
    assert doc["failures_injected"] == 1
    (f,) = doc["failures"]
    assert (f["function"], f["size"], f["index"]) == ("calloc", 8000, 1)
    assert f["exe"] == str(prog)
    assert f["user_site"]["module"] == str(prog)
    assert f["user_site"]["location"].endswith(f"checked_calloc.c:{CHECKED_CALLOC_LINE}")
    assert f["user_site"]["function"] == "main"
    assert counts(doc)["calloc"] == {"function": "calloc", "calls": 1, "counted": 1, "failed": 1}


@pytest.mark.parametrize("fn", sorted(FAMILY_CODES))
def test_each_function_fails_with_its_conventions(cli, cbuild, shim_built, fn):
    prog = cbuild.build("family", FAMILY_SRC, flags=FLAGS)
    res, doc = run_json(cli, "--only", fn, "--fail-at", "1", prog)
    assert res.exit_code == FAMILY_CODES[fn], res.stderr
    assert [f["function"] for f in doc["failures"]] == [fn]


def test_counting_run_counts_each_call_once(cli, cbuild, shim_built):
    prog = cbuild.build("family", FAMILY_SRC, flags=FLAGS)
    res, doc = run_json(cli, prog)
    assert res.exit_code == 0
    c = counts(doc)
    # reallocarray is counted once, not also as the realloc glibc makes inside it
    for fn in ("calloc", "realloc", "reallocarray", "posix_memalign", "aligned_alloc", "memalign",
               "valloc", "pvalloc"):
        assert c[fn]["calls"] == 1, (fn, c[fn])
    assert c["malloc"]["calls"] == 2
    assert doc["failures_injected"] == 0 and doc["outcome"]["class_name"] == "not-reached"


def test_after_fails_every_later_call(cli, cbuild, shim_built):
    prog = cbuild.build("family", FAMILY_SRC, flags=FLAGS)
    res, doc = run_json(cli, "--after", "3", prog)   # malloc, calloc, malloc succeed; realloc fails
    assert res.exit_code == 27
    assert doc["failures"][0]["index"] == 4 and doc["failures"][0]["function"] == "realloc"


def test_realloc_failure_keeps_old_block(cli, cbuild, shim_built):
    prog = cbuild.build("realloc_keep", REALLOC_SRC, flags=FLAGS)
    res, doc = run_json(cli, "--only", "realloc", "--fail-at", "1", prog)
    assert res.exit_code == 31, res.stderr
    assert doc["failures"][0]["size"] == 1 << 20


def test_size_filter_chooses_what_is_counted(cli, cbuild, shim_built):
    prog = cbuild.build("realloc_keep", REALLOC_SRC, flags=FLAGS)
    res, doc = run_json(cli, "--min-size", "1MiB", "--fail-at", "1", prog)
    assert res.exit_code == 31
    assert doc["counted_total"] == 1
    res, doc = run_json(cli, "--max-size", "100", "--fail-at", "1", prog)
    assert res.exit_code == 2 and doc["failures"][0]["size"] == 100


def test_pthread_create_fails_with_eagain_not_abort(cli, cbuild, shim_built):
    prog = cbuild.build("thread1", THREAD_SRC, flags=FLAGS + ["-pthread"])
    res, doc = run_json(cli, "--only", "calloc", "--fail-at", "1", prog)
    assert res.exit_code == 41, res.stderr
    assert doc["outcome"]["class_name"] == "clean-error"


def test_threads_exactly_one_failure_twenty_of_twenty(cbuild, shim_built):
    from mltools.mallocfail.config import FailSpec, RunOptions
    from mltools.mallocfail.run import run_target
    prog = cbuild.build("mt8", MT_SRC, flags=["-O2", "-pthread"])
    exact = 0
    for i in range(20):
        report, raw = run_target([str(prog)], FailSpec(fail_at=400_000 + 37_123 * i), RunOptions(timeout_s=60))
        if (raw.returncode == 0 and raw.stdout == b"nulls=1\n" and report.failures_injected == 1
                and report.counts[0].calls >= 1_600_000):
            exact += 1
    assert exact == 20


def test_probability_is_reproducible(cbuild, shim_built):
    from mltools.mallocfail.config import FailSpec, RunOptions
    from mltools.mallocfail.run import run_target
    prog = cbuild.build("mt8", MT_SRC, flags=["-O2", "-pthread"])
    spec = FailSpec(probability=1e-5, seed=7, per_thread=False)
    a, _ = run_target([str(prog)], spec, RunOptions(max_records=1000))
    b, _ = run_target([str(prog)], spec, RunOptions(max_records=1000))
    assert 4 <= a.failures_injected <= 40      # 1.6 M calls at 1e-5: about 16
    # the same seed fails the same indices, whatever the thread interleaving
    assert sorted(f.index for f in a.failures) == sorted(f.index for f in b.failures)
    capped, _ = run_target([str(prog)], FailSpec(probability=1e-5, seed=7, count=2), RunOptions())
    assert capped.failures_injected == 2


@pytest.mark.parametrize("mode,status,klass,reason", [
    ("catch", 51, "clean-error", None),
    ("uncaught", 134, "abort", "bad_alloc"),
])
def test_cpp_bad_alloc(cli, cbuild, shim_built, mode, status, klass, reason):
    prog = cbuild.build("bad_alloc", CPP_SRC, flags=FLAGS, lang="c++")
    res, doc = run_json(cli, "--min-size", "123456", "--fail-at", "1", prog, mode)
    assert res.exit_code == status, res.stderr
    assert doc["outcome"]["class_name"] == klass and doc["outcome"]["reason"] == reason
    f = doc["failures"][0]
    assert f["size"] == 123456 and f["user_site"]["function"] == "main"
    if mode == "uncaught":
        assert doc["signal"] == "SIGABRT" and "bad_alloc" in res.stderr
        assert doc["crash_site"]["function"] == "main"     # the abort came from main's new[]


def test_numpy_empty_40mb_memoryerror(cli, shim_built):
    pytest.importorskip("numpy")
    code = "import numpy; numpy.empty(40_000_000, dtype=numpy.uint8)"
    res, doc = run_json(cli, "--min-size", "40000000", "--fail-at", "1", sys.executable, "-c", code)
    assert res.exit_code == 1, res.stderr
    assert "MemoryError" in res.stderr
    assert doc["outcome"] == {"class_name": "clean-error", "reason": "MemoryError",
                              "detail": doc["outcome"]["detail"]}
    assert doc["failures"][0]["size"] == 40_000_000


def test_python_malloc_sees_small_objects(cli, shim_built):
    _, plain = run_json(cli, sys.executable, "-c", "x = [str(i) for i in range(1000)]")
    _, raw = run_json(cli, "--python-malloc", sys.executable, "-c", "x = [str(i) for i in range(1000)]")
    assert raw["environment_set"]["PYTHONMALLOC"] == "malloc"
    assert raw["counted_total"] > plain["counted_total"] + 1000


@pytest.mark.parametrize("kind", ["-static", "-static-pie"])
def test_static_target_refused(cli, cbuild, shim_built, kind):
    try:
        prog = cbuild.build(f"static{kind}", TARGET_SRC, flags=[kind])
    except RuntimeError:
        pytest.skip(f"{kind} not supported by this toolchain")
    res = cli("malloc-fail", "--fail-at", "1", prog)
    assert res.exit_code == 125 and res.stdout == ""
    assert "LD_PRELOAD cannot inject" in res.stderr
    assert res.stderr.strip().count("\n") == 0


def test_setuid_target_refused(cli, cbuild, tmp_path, shim_built):
    prog = cbuild.build("target", TARGET_SRC, flags=FLAGS)
    copy = tmp_path / "suid"
    shutil.copy(prog, copy)
    os.chmod(copy, 0o755 | stat.S_ISUID)
    res = cli("malloc-fail", "--fail-at", "1", copy)
    assert res.exit_code == 125 and "setuid" in res.stderr


def test_capability_target_refused(cli, cbuild, tmp_path, shim_built):
    import struct
    prog = cbuild.build("target", TARGET_SRC, flags=FLAGS)
    copy = tmp_path / "capped"
    shutil.copy(prog, copy)
    try:   # VFS_CAP_REVISION_2, effective, CAP_NET_BIND_SERVICE permitted (what setcap writes)
        os.setxattr(copy, "security.capability", struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0))
    except OSError as exc:
        pytest.skip(f"cannot set file capabilities here: {exc}")
    res = cli("malloc-fail", "--fail-at", "1", copy)
    assert res.exit_code == 125 and "capabilities" in res.stderr


def test_no_handshake_is_an_error(cli, cbuild, tmp_path, shim_built):
    # a program that drops LD_PRELOAD and re-executes itself: the shim never sees the target
    src = r"""#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (getenv("LD_PRELOAD")) { unsetenv("LD_PRELOAD"); execv("/proc/self/exe", argv); return 9; }
    return 0;
}
"""
    prog = cbuild.build("dropper", src, flags=FLAGS)
    # the first image loads the shim, so a handshake arrives; the claim is the process that ran
    res, doc = run_json(cli, "--fail-at", "1", prog)
    assert doc["outcome"]["class_name"] == "not-reached"
    wrapper = tmp_path / "clear-env.sh"
    wrapper.write_text(f"#!/bin/sh\nexec env -u LD_PRELOAD {prog}\n")
    wrapper.chmod(0o755)
    res = cli("malloc-fail", "--fail-at", "1", wrapper)
    assert res.exit_code == 125
    assert "no process ran the target" in res.stderr or "did not load" in res.stderr


def test_missing_program_is_127(cli):
    res = cli("malloc-fail", "--fail-at", "1", "/no/such/program")
    assert res.exit_code == 127 and "No such file or directory" in res.stderr


def test_usage_errors_are_125(cli, cbuild):
    prog = cbuild.build("target", TARGET_SRC, flags=FLAGS)
    assert cli("malloc-fail", "--after", "1", "--fail-at", "2", prog).exit_code == 125
    assert cli("malloc-fail", "--only", "mmap", "--fail-at", "1", prog).exit_code == 125
    assert cli("malloc-fail", "--min-size", "lots", "--fail-at", "1", prog).exit_code == 125
    assert cli("malloc-fail", "--fail-at", "0", prog).exit_code == 125


def test_shell_wrapper_not_injected(cli, cbuild, tmp_path, shim_built):
    prog = cbuild.build("target", TARGET_SRC, flags=FLAGS)
    wrapper = tmp_path / "wrap.sh"
    wrapper.write_text(f'#!/bin/sh\nx=$(echo hello)\n"{prog}"\nst=$?\necho "wrapper saw $st $x"\nexit $st\n')
    wrapper.chmod(0o755)
    # every allocation fails from the first one on: a shell that got them would die
    res, doc = run_json(cli, "--after", "0", wrapper)
    assert res.exit_code == 61, res.stderr
    assert "wrapper saw 61 hello" in res.stderr          # --json: the target's stdout goes to stderr
    roles = {os.path.basename(p["exe"]): p["role"] for p in doc["processes"]}
    assert roles["target"] == "root"
    assert all(p["injects"] is False for p in doc["processes"] if p["exe"] != str(prog))
    assert {f["exe"] for f in doc["failures"]} == {str(prog)}


def test_pyenv_style_shim_targets_the_real_program(cli, cbuild, tmp_path, shim_built):
    prog = cbuild.build("target", TARGET_SRC, flags=FLAGS)
    root = tmp_path / ".pyenv"
    (root / "shims").mkdir(parents=True)
    (root / "bin").mkdir()
    manager = root / "bin" / "pyenv"
    manager.write_text(f'#!/bin/sh\n[ "$1" = which ] && echo "{prog}"\n')
    manager.chmod(0o755)
    shim = root / "shims" / "target"
    # like pyenv's shims: helper programs run before the real one
    shim.write_text(f'#!/bin/sh\nreadlink -f "$0" >/dev/null\nbasename "$0" >/dev/null\nexec "{prog}" "$@"\n')
    shim.chmod(0o755)
    res, doc = run_json(cli, "--after", "0", shim)
    assert res.exit_code == 61, res.stderr
    injecting = [p for p in doc["processes"] if p["injects"]]
    assert [p["exe"] for p in injecting] == [str(prog)]


@pytest.mark.parametrize("scope,count,expected", [
    ("root", None, 1),        # only the root's own malloc(50) fails; the forked child is not the root
    ("each", None, 1 + 7 * 2),  # the child continues the copied counter: both fail their call
    ("tree", "1", 0 + 7 * 2),   # one counter shared by the tree: the child's call (first) fails, not the parent's
])
def test_scope_and_fork(cli, cbuild, shim_built, scope, count, expected):
    prog = cbuild.build("forker", FORK_SRC, flags=FLAGS)
    args = ["--scope", scope, "--after", "0", "--min-size", "50", "--max-size", "50"]
    if count:
        args += ["--count", count]
    res, doc = run_json(cli, *args, prog)
    assert res.exit_code == expected, res.stderr
    assert doc["failures_injected"] == {"root": 1, "each": 2, "tree": 1}[scope]


def test_report_file_and_stdout_separation(cli, cbuild, tmp_path, shim_built):
    src = r"""#include <stdio.h>
#include <stdlib.h>
int main(void) { printf("target-output\n"); fflush(stdout); void *p = malloc(77); return p ? 0 : 5; }
"""
    prog = cbuild.build("printer", src, flags=FLAGS)
    out = tmp_path / "r.json"
    res = cli("malloc-fail", "--json", "--report", out, "--min-size", "77", "--max-size", "77",
              "--fail-at", "1", prog)
    assert res.exit_code == 5
    doc = json.loads(res.stdout)                     # stdout is only the document
    assert "target-output" in res.stderr
    assert json.loads(out.read_text()) == doc
    assert doc["schema"] == "mltools.malloc_fail" and doc["version"] == 2
    res = cli("malloc-fail", "--min-size", "77", "--max-size", "77", "--fail-at", "1", prog)
    assert res.stdout == "target-output\n" and "outcome clean-error" in res.stderr


def test_forward_next_mode(cli, cbuild, shim_built):
    prog = cbuild.build("family", FAMILY_SRC, flags=FLAGS)
    for fn in ("posix_memalign", "reallocarray", "valloc"):
        res, doc = run_json(cli, "--forward", "next", "--only", fn, "--fail-at", "1", prog)
        assert res.exit_code == FAMILY_CODES[fn]
        assert {p["hello"]["forward"] for p in doc["processes"]} == {"next"}
    res, doc = run_json(cli, "--forward", "next", prog)
    assert res.exit_code == 0 and counts(doc)["reallocarray"]["calls"] == 1


def test_asan_target_needs_forward_next(cli, cbuild, shim_built):
    src = r"""#include <stdio.h>
#include <stdlib.h>
int main(void) { char *p = malloc(100); if (!p) { puts("null"); return 5; } p[0] = 1; free(p); return 0; }
"""
    try:
        prog = cbuild.build("asan_target", src, flags=["-g", "-fsanitize=address"])
    except RuntimeError:
        pytest.skip("no ASan runtime")
    res = cli("malloc-fail", "--fail-at", "1", prog)
    assert res.exit_code == 125 and "--forward next" in res.stderr
    res, doc = run_json(cli, "--forward", "next", "--min-size", "100", "--max-size", "100", "--fail-at", "1", prog)
    assert res.exit_code == 5, res.stderr
    assert doc["environment_set"]["ASAN_OPTIONS"].endswith("verify_asan_link_order=0")
    assert doc["failures"][0]["user_site"]["function"] == "main"


def test_timeout_is_a_hang_with_status_124(cli, cbuild, shim_built):
    src = r"""#include <stdlib.h>
#include <unistd.h>
int main(void) { void *p = malloc(10); if (!p) for (;;) pause(); free(p); return 0; }
"""
    prog = cbuild.build("retry_forever", src, flags=FLAGS)
    res, doc = run_json(cli, "--timeout", "0.5", "--min-size", "10", "--max-size", "10", "--fail-at", "1", prog)
    assert res.exit_code == 124
    assert doc["outcome"]["class_name"] == "hang" and doc["timed_out"] is True


def test_records_never_go_into_a_file_of_the_target(cli, cbuild, tmp_path, monkeypatch, shim_built):
    # the target closes every descriptor above 2 and opens its own files: they
    # get the low numbers, and must get none of our records; the channel (a
    # mapping, no descriptor) still carries the failure and the exit counts
    src = r"""#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) {
    for (int fd = 3; fd < 64; fd++) close(fd);
    int mine[4];
    for (int i = 0; i < 4; i++) mine[i] = open("own.txt", O_WRONLY | O_CREAT | O_APPEND, 0644);
    void *p = malloc(123);
    if (!p) return 71;
    for (int i = 0; i < 4; i++) close(mine[i]);
    return 0;
}
"""
    prog = cbuild.build("closer", src, flags=FLAGS)
    monkeypatch.chdir(tmp_path)
    res = cli("malloc-fail", "--json", "--min-size", "123", "--max-size", "123", "--fail-at", "1", prog)
    assert res.exit_code == 71
    assert (tmp_path / "own.txt").read_bytes() == b""
    doc = res.json()
    assert doc["notes"] == [] and doc["failures_injected"] == 1 and doc["counted_total"] == 1
    assert doc["outcome"]["class_name"] == "clean-error"


def test_per_thread_counts_each_thread_on_its_own(cli, cbuild, shim_built):
    prog = cbuild.build("mt8", MT_SRC, flags=["-O2", "-pthread"])
    # every worker thread fails its own 1000th malloc(32) (the main thread makes fewer)
    res, doc = run_json(cli, "--per-thread", "--fail-at", "1000", "--min-size", "32", "--max-size", "32", prog)
    assert res.exit_code == 0
    assert "nulls=8" in res.stderr
    assert doc["failures_injected"] == 8
    assert {f["index"] for f in doc["failures"]} == {1000}
    assert len({f["tid"] for f in doc["failures"]}) == 8
