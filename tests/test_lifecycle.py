"""Interrupted runs end cleanly: real SIGINT and SIGTERM to a real mltools process.

Whatever mltools started (here a target in its own session, which the
terminal's Ctrl-C never reaches) is ended with its process group, temporary
directories are removed, and the exit status is 130 (SIGINT) or 143 (SIGTERM),
never click's "Aborted!" with 1.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from mltools import _lifecycle


def _start(*argv, tmpdir):
    env = dict(os.environ, TMPDIR=str(tmpdir))
    return subprocess.Popen([sys.executable, "-m", "mltools", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_child(proc, name, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if child.name() == name:
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{name} never started under {proc.args}")


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_target_group_and_removes_temp_dirs(tmp_path, sig, status):
    proc = _start("malloc-fail", "--after", "1000000", "--", "sleep", "60", tmpdir=tmp_path)
    target = _wait_for_child(proc, "sleep")
    assert os.getsid(target.pid) != os.getsid(0)      # its own session: Ctrl-C would not reach it
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == status, err
    assert "Aborted" not in err and "Traceback" not in err
    assert not target.is_running() or target.status() == psutil.STATUS_ZOMBIE
    assert os.listdir(tmp_path) == []                  # no mltools-mf-* left behind


def test_an_interrupted_benchmark_exits_130_not_1(tmp_path):
    proc = _start("bench", "sum", "--sizes", "1e6", "--repeats", "1000", "--min-time", "1",
                  "--methods", "naive", "--dtype", "float64", "--layout", "1d", "--data", "uniform",
                  tmpdir=tmp_path)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Aborted!" not in err


def test_temp_dir_and_owned_processes_are_cleaned_by_signals_handled():
    with pytest.raises(_lifecycle.Interrupted):
        with _lifecycle.signals_handled():
            with _lifecycle.temp_dir() as d:
                child = subprocess.Popen(["sleep", "60"], start_new_session=True)
                with _lifecycle.owned_process(child.pid, own_group=True):
                    # what the handler does on a signal, without a real one
                    _lifecycle._received = signal.SIGTERM
                    raise _lifecycle.Interrupted(signal.SIGTERM)
    assert _lifecycle.interrupt_exit_status() == 143
    assert not os.path.exists(d)
    child.wait(timeout=10)       # ended by the owned_process block being left


def test_end_owned_processes_ends_the_whole_group():
    child = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    time.sleep(0.3)
    members = psutil.Process(child.pid).children(recursive=True)
    assert len(members) == 2
    with _lifecycle.owned_process(child.pid, own_group=True):
        _lifecycle.end_owned_processes(grace_s=2.0)
    child.wait(timeout=10)
    gone, alive = psutil.wait_procs(members, timeout=10)
    assert not alive


def test_progress_line_counts_and_estimates_time_left(monkeypatch):
    from mltools.cli import _output

    bar = _output.Progress("scan", 100)
    bar._start, bar._start_done = 0.0, 0
    bar.done = 25
    assert bar.line(now=10.0) == "scan: 25/100 (25%), 30s left"
    bar.done = 100
    assert bar.line(now=40.0) == "scan: 100/100 (100%)"
    monkeypatch.setattr(_output, "stderr_is_terminal", lambda: True)
    _output.set_quiet(True)
    try:
        assert not _output.Progress("x", 3).enabled
    finally:
        _output.set_quiet(False)
    assert _output.Progress("x", 3).enabled


def test_forked_pool_workers_end_quietly(tmp_path):
    """Workers forked while the handlers are installed get the default actions back: the pool's
    SIGTERM at the end of a batch ends them without a traceback."""
    import glob as _glob
    libs = sorted(_glob.glob("/usr/lib/x86_64-linux-gnu/lib*.so*"))[:70]
    if len(libs) < 64:
        pytest.skip("needs 64 libraries for the process pool")
    proc = subprocess.run([sys.executable, "-m", "mltools", "elf", "tree", "-j", "2", *libs],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr


def test_a_first_signal_waits_for_the_end_of_a_deferred_block():
    with _lifecycle.signals_handled():
        with pytest.raises(_lifecycle.Interrupted) as raised:
            with _lifecycle.signals_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)                   # the handler has run by now, and raised nothing
                finished = True
        assert finished and raised.value.signum == signal.SIGINT
        with pytest.raises(_lifecycle.Interrupted):
            with _lifecycle.signals_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGTERM)   # a second signal is not held back
                time.sleep(0.05)
                pytest.fail("the second signal did not interrupt")


@pytest.mark.parametrize("command, schema", [(("elf", "tree"), "mltools.elf.trees"),          # the short path
                                             (("elf", "check"), "mltools.elf.check")])        # click's
def test_ctrl_c_while_the_json_is_written_leaves_one_whole_document(tmp_path, command, schema):
    """The document is larger than a pipe holds, so mltools is blocked writing it when the
    signal comes: the reader still gets all of it, and the run says it was interrupted.
    (A plain ``sys.stdout.write`` delivers 64 KiB of it and drops the rest.)"""
    import json
    import select

    files = sorted(str(p) for p in __import__("pathlib").Path("/usr/bin").iterdir()
                   if p.is_file() and not p.is_symlink())[:240]
    proc = _start(*command, "--json", *files, tmpdir=tmp_path)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    assert ready, "no output"
    time.sleep(0.3)                                   # the pipe is full and the writer waits
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert len(out) > 300_000
    assert json.loads(out)["schema"] == schema
    assert proc.returncode == 130, err
