"""Interrupted sweeps end cleanly, and sweeps show progress on a terminal: real signals, a real pty.

A sweep interrupted by SIGINT (Ctrl-C) or SIGTERM prints the points it had
finished, marked interrupted (text, and one valid JSON document with
"interrupted": true), ends every process it started (the target, its forked
children), removes its private folder, puts a --state folder back, and exits
130 or 143 -- never "internal error".
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc LD_PRELOAD shim")


def _start(*argv, **kw):
    return subprocess.Popen([sys.executable, "-m", "mltools", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _ours(marker):
    """Processes whose command line holds the marker (the target and its children), mltools itself aside."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
            if marker in " ".join(cmd) and "mltools" not in cmd[1:3]:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _private_folder(procs, prefix):
    for p in procs:
        try:
            for key, value in (p.environ() or {}).items():
                if key == prefix + "RECORDS":
                    return os.path.dirname(value)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def _wait_for_points(marker, at_least=2, timeout=120.0):
    """Until the sweep runs points: the target and at least one forked child (or re-run) at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = _ours(marker)
        if len(procs) >= at_least:
            return procs
        time.sleep(0.05)
    raise AssertionError("the sweep never started its points")


@pytest.mark.parametrize("sig, status, as_json", [(signal.SIGINT, 130, False), (signal.SIGTERM, 143, True)])
def test_an_interrupted_malloc_fail_sweep_reports_what_it_finished(sig, status, as_json):
    marker = f"mf-{uuid.uuid4().hex}"
    argv = ["malloc-fail", "--sweep", "--jobs", "1"] + (["--json"] if as_json else [])
    proc = _start(*argv, "--", sys.executable, "-c", "import json", marker)
    procs = _wait_for_points(marker)
    folder = _private_folder(procs, "MLTOOLS_MF_")
    assert folder and os.path.isdir(folder)
    time.sleep(1.0)                                   # let some points finish
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert "internal error" not in err and "Traceback" not in err and "Directory not empty" not in err
    if as_json:
        doc = json.loads(out)
        assert doc["interrupted"] is True and doc["points"]
        assert doc["schema"] == "mltools.malloc_fail.sweep"
    else:
        assert "INTERRUPTED" in out and "ran " in out
    time.sleep(0.5)
    assert not [p for p in _ours(marker) if p.status() != psutil.STATUS_ZOMBIE]
    assert not os.path.exists(folder)


def test_an_interrupted_io_fail_sweep_puts_the_state_back(tmp_path):
    marker = f"iof-{uuid.uuid4().hex}"
    state = tmp_path / "ckpt"
    state.mkdir()
    (state / "ckpt.bin").write_bytes(b"good state\n" * 100)
    writer = tmp_path / "w.py"
    writer.write_text("import os, sys, time\n"
                      "for i in range(200):\n"
                      "    with open(os.path.join(sys.argv[1], 'ckpt.bin'), 'wb') as f:\n"
                      "        f.write(b'step %d\\n' % i)\n"
                      "    time.sleep(0.01)\n")
    proc = _start("io-fail", "--sweep", "--json", "--path", f"{state}/*", "--state", str(state),
                  "--", sys.executable, str(writer), str(state), marker)
    procs = _wait_for_points(marker)
    folder = _private_folder(procs, "MLTOOLS_IOF_")
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    doc = json.loads(out)
    assert doc["interrupted"] is True and doc["schema"] == "mltools.io_fail.sweep"
    assert (state / "ckpt.bin").read_bytes() == b"good state\n" * 100
    assert sorted(os.listdir(state)) == ["ckpt.bin"]
    time.sleep(0.5)
    assert not [p for p in _ours(marker) if p.status() != psutil.STATUS_ZOMBIE]
    assert folder is None or not os.path.exists(folder)


def _progress_on_a_terminal(*argv, quiet=False):
    """stderr on a pty (stdout to a file): the process and what the terminal shows."""
    from terminal import run_on_terminal

    return run_on_terminal([argv[0], "--quiet", *argv[1:]] if quiet else list(argv), timeout=120)


LOOP = r"""#include <stdlib.h>
#include <unistd.h>
int main(void) {
    for (int i = 0; i < 60; i++) { void *p = malloc(16); if (!p) return 3; usleep(20000); free(p); }
    return 0;
}
"""


def test_a_sweep_shows_done_total_and_time_left_on_a_terminal(cbuild):
    prog = cbuild.build("slow_loop", LOOP, flags=["-O0"])
    for fork in ("--fork", "--no-fork"):
        proc, shown = _progress_on_a_terminal("malloc-fail", "--sweep", "--min-size", "16", "--max-size", "16",
                                              fork, "--", str(prog))
        assert proc.returncode == 0, shown
        counts = [(int(a), int(b)) for a, b in __import__("re").findall(r"sweep: (\d+)/(\d+) \(", shown)]
        assert counts and all(b == 61 for _, b in counts), shown       # 60 points and the stop point
        assert counts == sorted(counts) and counts[-1][0] >= 50
        assert " left" in shown
    proc, shown = _progress_on_a_terminal("malloc-fail", "--sweep", "--min-size", "16", "--max-size", "16",
                                          "--", str(prog), quiet=True)
    assert "sweep:" not in shown


def test_an_io_fail_sweep_shows_progress(tmp_path):
    writer = tmp_path / "w.py"
    writer.write_text("import sys, time\n"
                      "for i in range(20):\n"
                      "    open(sys.argv[1], 'w').write('x')\n"
                      "    time.sleep(0.02)\n")
    target = tmp_path / "out.txt"
    proc, shown = _progress_on_a_terminal("io-fail", "--sweep", "--path", str(target), "--only", "open",
                                          "--", sys.executable, str(writer), str(target))
    assert proc.returncode == 0, shown
    assert "sweep: 21/21 (100%)" in shown.replace("\r", "\n") or "sweep: 20/21" in shown
