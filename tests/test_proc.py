import signal
import sys

import pytest

from mltools import _proc
from mltools.errors import SubprocessError, ToolNotFoundError


def test_run_captures_and_reports_status():
    r = _proc.run([sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"],
                  timeout=30)
    assert (r.returncode, r.stdout, r.stderr, r.timed_out) == (3, "out\n", "err\n", False)
    assert r.exit_status == 3


def test_run_signal_status():
    r = _proc.run([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"], timeout=30)
    assert r.returncode == -9 and r.exit_status == 137 and r.signal_name == "SIGKILL"


def test_run_timeout_kills_the_group():
    r = _proc.run(["sh", "-c", "sleep 30 & sleep 30"], timeout=0.5)
    assert r.timed_out and r.elapsed_s < 10


def test_missing_program_and_check():
    with pytest.raises(ToolNotFoundError):
        _proc.run(["/nonexistent/prog"], timeout=5)
    with pytest.raises(SubprocessError, match="exited with status 1"):
        _proc.run(["false"], timeout=5, check=True)


def test_exit_status():
    assert _proc.exit_status(-signal.SIGSEGV) == 139
    assert _proc.exit_status(0) == 0
