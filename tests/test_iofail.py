"""io-fail single runs: every call family, its error conventions, what is left undone.

Oracles: the target checks each call's result itself (return value, errno,
ferror) and prints it; strace (the kernel's view, outside the preload) says
which system calls really happened; the files it leaves are compared with a
plain run. The program sets everything up with raw system calls, which the
shim does not see, so the k-th eligible call is always the k-th operation.
"""
from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc LD_PRELOAD shim")

FAMILIES_SRC = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
extern int __open_2(const char *, int);
static char d[2048];
static const char *at(const char *name) { static char b[4][4096]; static int i; i = (i + 1) & 3;
                                          snprintf(b[i], sizeof b[i], "%s/%s", d, name); return b[i]; }
/* set-up through raw system calls: the preload never sees them */
static int raw_open(const char *p, int fl) { return (int)syscall(SYS_openat, AT_FDCWD, p, fl, 0644); }
static void raw_close(int fd) { syscall(SYS_close, fd); }
static void raw_file(const char *p, const char *text) {
    int fd = raw_open(p, O_WRONLY | O_CREAT | O_TRUNC);
    syscall(SYS_write, fd, text, strlen(text));
    raw_close(fd);
}
static void rep(const char *name, long rc, int err) { printf("%s %ld %d\n", name, rc, err); }
#define OP(name, expr) do { errno = 0; long r_ = (long)(expr); rep(name, r_, errno); } while (0)
#define OPEN(name, expr) do { errno = 0; int f_ = (expr); rep(name, f_ < 0 ? -1 : 0, errno); if (f_ >= 0) raw_close(f_); } while (0)
int main(int argc, char **argv) {
    snprintf(d, sizeof d, "%s", argv[1]);
    raw_file(at("src"), "0123456789abcdefghijklmnopqrstuvwxyz");
    raw_file(at("r1"), "rename me");
    raw_file(at("q1"), "rename me");
    raw_file(at("p1"), "rename me");
    int dfd = raw_open(d, O_RDONLY | O_DIRECTORY);
    int w = raw_open(at("w"), O_RDWR | O_CREAT | O_TRUNC);
    int src = raw_open(at("src"), O_RDONLY);
    int src2 = raw_open(at("src"), O_RDONLY);
    int c = raw_open(at("c"), O_WRONLY | O_CREAT);
    struct iovec v[2] = {{"hello ", 6}, {"world\n", 6}};
    /* not eligible: a read-only open and its close, stdout */
    int ro = open(at("src"), O_RDONLY); close(ro);
    write(1, "# stdout\n", 9);
    OP("mkdir", mkdir(at("m"), 0755));                                   /* 1 */
    OP("mkdir", mkdirat(dfd, "m2", 0755));                               /* 2 */
    OPEN("open", open(at("o1"), O_WRONLY | O_CREAT, 0644));              /* 3 */
    OPEN("open", open64(at("o2"), O_RDWR | O_CREAT, 0644));              /* 4 */
    OPEN("open", openat(dfd, "o3", O_WRONLY | O_CREAT | O_TRUNC, 0644)); /* 5 */
    OPEN("open", creat(at("o4"), 0644));                                 /* 6 */
    OPEN("open", __open_2(at("src"), O_WRONLY | O_APPEND));              /* 7: the _FORTIFY_SOURCE entry */
    OP("write", write(w, "0123456789", 10));                             /* 8 */
    OP("pwrite", pwrite(w, "abcdefgh", 8, 100));                         /* 9 */
    OP("writev", writev(w, v, 2));                                       /* 10 */
    OP("pwritev", pwritev(w, v, 2, 200));                                /* 11 */
    OP("sendfile", sendfile(w, src, NULL, 16));                          /* 12 */
    OP("copy_file_range", copy_file_range(src2, NULL, w, NULL, 16, 0));  /* 13 */
    OP("ftruncate", ftruncate(w, 300));                                  /* 14 */
    OP("ftruncate", truncate(at("w"), 400));                             /* 15 */
    OP("fallocate", fallocate(w, 0, 0, 4096));                           /* 16 */
    errno = EDOM;                      /* posix_fallocate returns the error and leaves errno alone */
    { int r = posix_fallocate(w, 0, 8192); rep("fallocate", r ? -1 : 0, r ? (errno == EDOM ? r : 999) : 0); } /* 17 */
    OP("fsync", fsync(w));                                               /* 18 */
    OP("fdatasync", fdatasync(w));                                       /* 19 */
    OP("close", close(c));                                               /* 20: the descriptor is gone either way */
    OP("rename", rename(at("r1"), at("r2")));                            /* 21 */
    OP("rename", renameat(dfd, "q1", dfd, "q2"));                        /* 22 */
    OP("rename", renameat2(dfd, "p1", dfd, "p2", 0));                    /* 23 */
    errno = 0;
    FILE *f = fopen(at("s"), "w");                                       /* 24 */
    rep("open", f ? 0 : -1, f ? 0 : errno);
    if (!f) f = fdopen(raw_open(at("s2"), O_WRONLY | O_CREAT | O_TRUNC), "w");    /* fopen failed: go on elsewhere */
    { size_t n = fwrite("xyzxyz", 1, 6, f); int e = ferror(f);               /* 25 */
      rep("fwrite", n == 6 && !e ? 0 : -1, n == 6 && !e ? 0 : errno); clearerr(f); }
    { int r = fputs("line\n", f); rep("fwrite", r == EOF ? -1 : 0, r == EOF ? errno : 0); clearerr(f); } /* 26 */
    { int r = fputc('!', f); rep("fwrite", r == EOF ? -1 : 0, r == EOF ? errno : 0); clearerr(f); }     /* 27 */
    { int r = fflush(f); rep("fflush", r == EOF ? -1 : 0, r == EOF ? errno : 0); clearerr(f); }         /* 28 */
    { size_t n = fwrite("tail", 1, 4, f); rep("fwrite", n == 4 ? 0 : -1, n == 4 ? 0 : errno); clearerr(f); } /* 29 */
    { int r = fclose(f); rep("fclose", r == EOF ? -1 : 0, r == EOF ? errno : 0); }                       /* 30 */
    OP("fsync", fsync(dfd));                                             /* 31: a folder, through a read-only fd */
    fflush(stdout);
    return 0;
}
"""


# index -> (family, the system call that must not happen, the file it concerns)
EXPECTED = {
    1: ("mkdir", "mkdir", "m"), 2: ("mkdir", "mkdirat", "m2"), 3: ("open", "openat", "o1"),
    4: ("open", "openat", "o2"), 5: ("open", "openat", "o3"), 6: ("open", "openat", "o4"),    # the shim opens for creat with openat
    7: ("open", "openat", "src"), 8: ("write", "write", "w"), 9: ("pwrite", "pwrite64", "w"),
    10: ("writev", "writev", "w"), 11: ("pwritev", "pwritev", "w"), 12: ("sendfile", "sendfile", "w"),
    13: ("copy_file_range", "copy_file_range", "src"), 14: ("ftruncate", "ftruncate", "w"),
    15: ("ftruncate", "truncate", "w"), 16: ("fallocate", "fallocate", "w"), 17: ("fallocate", "fallocate", "w"),
    18: ("fsync", "fsync", "w"), 19: ("fdatasync", "fdatasync", "w"),
    20: ("close", None, None),                    # Linux: the descriptor is closed even when close fails
    21: ("rename", "rename", "r1"), 22: ("rename", "renameat", "q1"), 23: ("rename", "renameat", "p1"),
    24: ("open", "openat", "s"),
    25: ("fwrite", None, None), 26: ("fwrite", None, None), 27: ("fwrite", None, None),   # buffered: no call yet
    28: ("fflush", "write", "s"), 29: ("fwrite", "write", "s"), 30: ("fclose", "write", "s"),
    31: ("fsync", "fsync", ""),
}
# what the stdio stream leaves in s when that call fails (a failed flush loses the buffer)
STDIO_LEFT = {None: b"xyzxyzline\n!tail", 25: b"line\n!tail", 26: b"xyzxyz!tail", 27: b"xyzxyzline\ntail",
              28: b"tail", 29: b"xyzxyzline\n!", 30: b"xyzxyzline\n!"}
_LINE = re.compile(r"^(\w+) (-?\d+) (\d+)$", re.M)
_STRACE_CALL = re.compile(r"^\d+\s+(\w+)\(")


@pytest.fixture(scope="module")
def families(cbuild):
    return cbuild.build("iofail_families", FAMILIES_SRC, flags=["-O0", "-g"])


def _strace_calls(log: str, folder: str) -> collections.Counter:
    """(system call, file under folder) for every call on a file of the folder (strace -y)."""
    out = collections.Counter()
    for line in log.splitlines():
        m = _STRACE_CALL.match(line)
        found = re.search(re.escape(folder) + r"(/[^>\"/]*)?[>\"]", line)
        if m and found:
            name = (found[1] or "").lstrip("/")
            relative = re.search(r'>, "([^/"]+)"', line)      # an *at call: the name after the folder's fd
            out[(m[1], relative[1] if not name and relative else name)] += 1
    return out


def _run(cli, prog, folder, tmp_path, *opts, strace=True):
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    log = tmp_path / "strace.log"
    argv = ["strace", "-f", "-qq", "-y", "-o", str(log), str(prog), str(folder)] if strace else [str(prog), str(folder)]
    res = cli("io-fail", "--json", "--target-exe", str(prog), "--path", f"{folder}/*", *opts, "--", *argv)
    assert res.exit_code == 0, res.stderr
    lines = _LINE.findall(res.stderr)
    calls = _strace_calls(log.read_text(), str(folder)) if strace else None
    stream = folder / "s" if (folder / "s").exists() else folder / "s2"
    return res.json(), [(n, int(rc), int(e)) for n, rc, e in lines], calls, stream.read_bytes()


needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (the kernel's view)")


@needs_strace
def test_each_family_fails_once_and_is_not_performed(cli, families, tmp_path):
    folder = tmp_path / "d"
    doc, lines, plain_calls, plain_s = _run(cli, families, folder, tmp_path)
    assert [n for n, _, _ in lines] == [EXPECTED[k][0] if EXPECTED[k][0] != "fflush" else "fflush"
                                        for k in sorted(EXPECTED)]
    assert all(rc >= 0 for _, rc, _ in lines)
    assert doc["eligible_total"] == len(EXPECTED)             # stdout and the read-only open are not counted
    assert plain_s == STDIO_LEFT[None]
    for k, (family, syscall, name) in EXPECTED.items():
        doc, lines, calls, s = _run(cli, families, folder, tmp_path, "--fail-at", str(k))
        failed = [i for i, (_, rc, _) in enumerate(lines, 1) if rc < 0]
        assert failed == [k], (k, lines)
        assert lines[k - 1][2] == 28, (k, lines[k - 1])               # ENOSPC, whatever the convention
        (f,) = doc["failures"]
        assert (f["function"], f["index"], f["errno_name"]) == (family, k, "ENOSPC")
        missing = plain_calls - calls
        if syscall is None:            # close: still closed; a buffered fwrite: no system call yet
            assert not missing, (k, missing)
        else:
            assert missing[(syscall, name)] == 1, (k, missing)
            # and nothing else is missing but what follows on that file (a stream that went
            # elsewhere, a file never opened and so never closed)
            assert all(f == name or call == "close" for call, f in missing), (k, missing)
        assert s == STDIO_LEFT.get(k, STDIO_LEFT[None]), k


@pytest.mark.parametrize("name,number", [("EIO", 5), ("EDQUOT", 122), ("EINTR", 4), ("enospc", 28), ("13", 13)])
def test_errno_choice(cli, families, tmp_path, name, number):
    _, lines, _, _ = _run(cli, families, tmp_path / "d", tmp_path, "--fail-at", "8", "--errno", name, strace=False)
    assert lines[7] == ("write", -1, number)
    _, lines, _, _ = _run(cli, families, tmp_path / "d", tmp_path, "--fail-at", "17", "--errno", name, strace=False)
    assert lines[16] == ("fallocate", -1, number)        # posix_fallocate: returned, errno untouched


def test_unknown_errno_is_a_usage_error(cli, families, tmp_path):
    res = cli("io-fail", "--errno", "ENOTANERROR", "--fail-at", "1", "--", str(families), str(tmp_path))
    assert res.exit_code == 125 and "unknown error" in res.stderr


@pytest.mark.parametrize("k,written", [(8, 5), (9, 4), (10, 6), (11, 6), (12, 8), (13, 8)])
def test_short_write_writes_half(cli, families, tmp_path, k, written):
    doc, lines, _, _ = _run(cli, families, tmp_path / "d", tmp_path, "--fail-at", str(k), "--short-write",
                            strace=False)
    assert lines[k - 1][1] == written, lines[k - 1]
    assert doc["failures"][0]["short"] is True


def test_short_write_of_a_stream_is_a_short_count_and_an_error(cli, families, tmp_path):
    _, lines, _, s = _run(cli, families, tmp_path / "d", tmp_path, "--fail-at", "25", "--short-write", strace=False)
    assert lines[24][1] == -1                          # fwrite wrote 3 of 6 items, and ferror() is set
    assert s == b"xyzline\n!tail"


def test_only_and_after(cli, families, tmp_path):
    doc, lines, _, _ = _run(cli, families, tmp_path / "d", tmp_path, "--only", "fsync,rename", "--after", "1",
                            strace=False)
    failed = [n for n, rc, _ in lines if rc < 0]
    # eligible: fsync(18), renames (21-23), fsync(31); the first succeeds, every later one fails
    assert failed == ["rename", "rename", "rename", "fsync"]
    assert doc["eligible_total"] == 5 and doc["failures_injected"] == 4


def test_stdout_and_other_files_are_untouched(cli, families, tmp_path):
    # --after 0 fails every eligible call: only the folder's files are eligible
    doc, lines, _, _ = _run(cli, families, tmp_path / "d", tmp_path, "--after", "0", strace=False)
    assert len(lines) == len(EXPECTED) and all(rc < 0 for _name, rc, _errno in lines)
    counts = {c["function"]: c for c in doc["counts"]}
    assert counts["write"]["calls"] > counts["write"]["eligible"]       # the write to stdout went through


def test_records_survive_closefrom_and_never_land_in_the_targets_file(cli, cbuild, tmp_path, monkeypatch):
    src = r"""#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    closefrom(3);
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);   /* gets fd 3 */
    if (fd < 0) { perror("open"); return 1; }
    if (write(fd, "daemon data\n", 12) < 0) { perror("write"); return 2; }
    if (fsync(fd) < 0) { perror("fsync"); return 3; }
    close(fd);
    return 0;
}
"""
    prog = cbuild.build("closer_io", src, flags=["-O0", "-g"])
    out = tmp_path / "own.txt"
    for k, status, family in ((1, 1, "open"), (2, 2, "write"), (3, 3, "fsync")):
        res = cli("io-fail", "--json", "--path", str(out), "--fail-at", str(k), "--", str(prog), str(out))
        assert res.exit_code == status, res.stderr
        doc = res.json()
        assert [f["function"] for f in doc["failures"]] == [family]
        assert doc["processes"][0]["exited_normally"] is True            # the X record came through too
        assert doc["outcome"]["class_name"] == "reported"
        left = out.read_bytes() if out.exists() else b""
        assert left in (b"", b"daemon data\n")                          # only the target's own bytes


@pytest.mark.parametrize("kind", ["-static", "-static-pie"])
def test_static_target_refused(cli, cbuild, kind):
    try:
        prog = cbuild.build(f"static_io{kind}", "int main(void){return 0;}", flags=[kind])
    except RuntimeError:
        pytest.skip(f"{kind} not supported by this toolchain")
    res = cli("io-fail", "--fail-at", "1", prog)
    assert res.exit_code == 125 and "LD_PRELOAD cannot inject" in res.stderr


def test_io_uring_program_is_warned_about(cli, cbuild, tmp_path):
    if not os.path.exists("/usr/include/liburing.h"):
        pytest.skip("needs liburing-dev")
    src = r"""#include <fcntl.h>
#include <liburing.h>
#include <string.h>
int main(int argc, char **argv) {
    struct io_uring ring;
    if (io_uring_queue_init(4, &ring, 0)) return 9;
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    static const char msg[] = "through the ring\n";
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_write(sqe, fd, msg, strlen(msg), 0);
    io_uring_submit(&ring);
    struct io_uring_cqe *cqe;
    io_uring_wait_cqe(&ring, &cqe);
    int ok = cqe->res == (int)strlen(msg);
    io_uring_cqe_seen(&ring, cqe);
    io_uring_queue_exit(&ring);
    return ok ? 0 : 8;
}
"""
    prog = cbuild.build("uring_writer", src, flags=["-O0"], libs=["-luring"])
    out = tmp_path / "u.txt"
    res = cli("io-fail", "--json", "--path", str(out), "--only", "write", "--fail-at", "1", "--", str(prog), str(out))
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    # the kernel wrote the file, yet no write went through the C library: io-fail says so
    assert out.read_bytes() == b"through the ring\n"
    assert doc["eligible_total"] == 0 and doc["outcome"]["class_name"] == "not-reached"
    assert any("io_uring" in n for n in doc["notes"])


def test_go_program_is_recognised(cbuild, tmp_path):
    # no Go toolchain here: a C program given the section the Go linker writes
    prog = cbuild.build("pseudo_go", "int main(void){return 0;}", flags=["-O0"])
    copy = tmp_path / "pseudo_go"
    (tmp_path / "buildinfo").write_bytes(b"\xff Go buildinf:")
    subprocess.run(["objcopy", "--add-section", f".go.buildinfo={tmp_path / 'buildinfo'}", str(prog), str(copy)],
                   check=True)
    from mltools.preload.target import direct_io
    assert any("Go program" in r for r in direct_io(str(copy)))
    assert direct_io(str(prog)) == ()


def test_check_classifies_a_single_run(cli, cbuild, tmp_path):
    src = r"""#include <stdio.h>
int main(int argc, char **argv) {
    FILE *f = fopen(argv[1], "w");
    if (!f) return 1;
    fputs("good\n", f);
    fclose(f);                 /* its result ignored, as numpy's tofile does */
    return 0;
}
"""
    prog = cbuild.build("ignores_fclose", src, flags=["-O0"])
    state = tmp_path / "st"
    state.mkdir()
    (state / "f").write_text("good\n")
    check = f"grep -qx good {state / 'f'}"
    res = cli("io-fail", "--json", "--state", str(state), "--check", check, "--path", f"{state}/*",
              "--only", "fclose", "--fail-at", "1", "--", str(prog), str(state / "f"))
    assert res.exit_code == 0
    doc = res.json()
    assert doc["outcome"]["class_name"] == "silent-corruption"
    assert doc["check_before"]["passed"] is True and doc["check_after"]["passed"] is False
    assert (state / "f").read_text() == "good\n"          # --state: put back as it was
    assert "--state" in doc["replay"] and "--check" in doc["replay"]
