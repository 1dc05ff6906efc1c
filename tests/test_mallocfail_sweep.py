"""malloc-fail --sweep against a target whose every failure point has a known outcome.

Oracle: the target's source. Each allocation site reacts to NULL in one
documented way (checked, unchecked write, assert, fallback, leaking error
path, retry-forever), so each index has exactly one right class; fork mode
and re-run mode must agree point for point.
"""
from __future__ import annotations

import json
import shlex
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc LD_PRELOAD shim")

MIX_SRC = r"""#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static char fallback[64];
int main(void) {
    char *a = malloc(11);
    if (!a) return 2;
    char *b = malloc(12);
    memset(b, 1, 12);
    char *c = malloc(13);
    assert(c != NULL);
    char *d = malloc(14);
    if (!d) d = fallback;
    char *e = malloc(15);
    if (!e) c = NULL;
    char *f = malloc(16);
    if (!f) for (;;) pause();
    free(a); free(b); free(c); free(e); free(f);
    if (d != fallback) free(d);
    return 0;
}
"""
# index -> (class, reason, source line)
EXPECTED = {
    1: ("clean-error", None, 7),
    2: ("crash", "SIGSEGV", 9),
    3: ("abort", "assert", 11),
    4: ("absorbed", None, 13),
    5: ("leak", None, 15),
    6: ("hang", None, 17),
    7: ("not-reached", None, None),
}

LOOP_SRC = r"""#include <stdlib.h>
int main(void) {
    void *keep[50];
    for (int i = 0; i < 50; i++) {
        keep[i] = malloc(16);
        if (!keep[i]) return 3;
        void *tmp = calloc(2, 8);
        if (!tmp) return 4;
        free(tmp);
    }
    for (int i = 0; i < 50; i++) free(keep[i]);
    return 0;
}
"""


def sweep_json(cli, *args):
    res = cli("malloc-fail", "--sweep", "--json", "--point-timeout", "2", *[str(a) for a in args])
    assert res.exit_code in (0, 1), res.stderr
    return res, json.loads(res.stdout)


def by_index(doc):
    return {p["index"]: p for p in doc["points"]}


@pytest.mark.parametrize("fork_flag,jobs", [("--fork", "2"), ("--fork", "1"), ("--no-fork", "2")])
def test_sweep_classifies_known_mix(cli, cbuild, fork_flag, jobs):
    # --fork -j 2: two children in flight while the parent goes on; -j 1: one at a time
    prog = cbuild.build("mix", MIX_SRC, flags=["-g", "-O0"])
    res, doc = sweep_json(cli, fork_flag, "--jobs", jobs, prog)
    assert res.exit_code == 1                       # crash, abort, hang and leak found
    assert doc["schema"] == "mltools.malloc_fail.sweep"
    assert doc["baseline"]["counted_total"] == 6 and doc["baseline"]["exit_status"] == 0
    points = by_index(doc)
    assert sorted(points) == sorted(EXPECTED)
    for index, (klass, reason, line) in EXPECTED.items():
        p = points[index]
        assert (p["outcome"]["class_name"], p["outcome"]["reason"]) == (klass, reason), (index, p["outcome"])
        if line is not None:
            assert p["site"]["location"].endswith(f"mix.c:{line}"), (index, p["site"])
            assert p["function"] == "malloc" and p["size"] == 10 + index
    # where the crash and the abort happened (the shim's fatal-signal record)
    assert points[2]["crash_site"]["location"].endswith("mix.c:10")
    assert points[3]["crash_site"]["location"].endswith("mix.c:12")
    assert points[1]["crash_site"] is None
    if fork_flag == "--fork":
        assert doc["forked"] == 6
    assert doc["by_class"] == {"clean-error": 1, "crash": 1, "abort": 1, "absorbed": 1, "leak": 1,
                               "hang": 1, "not-reached": 1}
    assert {p["index"] for p in doc["points"] if p["replay"]} == {2, 3, 5, 6}


def test_replay_reproduces_the_crash(cli, cbuild):
    prog = cbuild.build("mix", MIX_SRC, flags=["-g", "-O0"])
    _, doc = sweep_json(cli, "--max-points", "2", prog)
    replay = by_index(doc)[2]["replay"]
    argv = shlex.split(replay)
    assert argv[:2] == ["mltools", "malloc-fail"] and "--fail-at" in argv
    res = cli(*argv[1:])
    assert res.exit_code == 139
    assert "outcome crash (SIGSEGV)" in res.stderr


def test_persistent_sweep_fails_every_later_call(cli, cbuild):
    prog = cbuild.build("mix", MIX_SRC, flags=["-g", "-O0"])
    _, doc = sweep_json(cli, "--persistent", "--max-points", "4", prog)
    points = by_index(doc)
    # index 4 onwards all fail: the fallback absorbs d, then f's retry loop never ends
    assert points[4]["outcome"]["class_name"] == "hang"
    assert points[1]["outcome"]["class_name"] == "clean-error"


def test_unique_stacks_tests_each_site_once(cli, cbuild):
    prog = cbuild.build("loop", LOOP_SRC, flags=["-g", "-O0"])
    res, doc = sweep_json(cli, "--unique-stacks", prog)
    assert res.exit_code == 0
    assert doc["baseline"]["counted_total"] == 100
    assert doc["points_run"] == 2 and doc["duplicates_skipped"] == 98
    assert doc["forked"] == 2          # only the chosen indices fork
    assert {p["outcome"]["class_name"] for p in doc["points"]} == {"clean-error"}
    assert sorted(p["exit_status"] for p in doc["points"]) == [3, 4]


def test_sweep_text_report(cli, cbuild):
    prog = cbuild.build("loop", LOOP_SRC, flags=["-g", "-O0"])
    res = cli("malloc-fail", "--sweep", prog)
    assert res.exit_code == 0
    assert "baseline: 100 counted calls" in res.stdout
    assert "clean-error 100, not-reached 1" in res.stdout


def test_sweep_rejects_a_fixed_index(cli, cbuild):
    prog = cbuild.build("loop", LOOP_SRC, flags=["-g", "-O0"])
    res = cli("malloc-fail", "--sweep", "--fail-at", "3", prog)
    assert res.exit_code == 125 and "--sweep chooses" in res.stderr


def test_sweep_runs_write_no_core_files(cli, cbuild):
    src = r"""#include <stdlib.h>
#include <sys/resource.h>
int main(void) {
    struct rlimit r;
    getrlimit(RLIMIT_CORE, &r);
    void *p = malloc(5);
    if (!p) return r.rlim_cur == 0 ? 40 : 41;
    free(p);
    return 0;
}
"""
    prog = cbuild.build("core_limit", src, flags=["-O0"])
    for flag in ("--fork", "--no-fork"):
        _, doc = sweep_json(cli, flag, "--min-size", "5", "--max-size", "5", prog)
        assert by_index(doc)[1]["exit_status"] == 40, flag


def test_a_lost_fork_child_reads_as_status_minus_one():
    # the shim writes waitpid's status as unsigned: a child the target reaped (-1) comes as 4294967295
    from mltools.preload.outcome import decode_wait_status
    from mltools.preload.records import parse_records
    records = parse_records(["C\tpid=1\tindex=3\tchild=5\tstatus=4294967295\ttimed_out=0",
                             "C\tpid=1\tindex=4\tchild=6\tstatus=256\ttimed_out=0",
                             "S\tpid=1\tindex=5\treason=threads"])
    assert [f.wait_status for f in records.fork_points] == [-1, 256, None]
    assert decode_wait_status(-1) == -9 and decode_wait_status(256) == 1
