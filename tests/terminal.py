"""Run a real mltools process with stderr on a pseudo-terminal, as a user at a terminal sees it:
``run_on_terminal`` collects what the terminal shows (progress lines are drawn only there);
``interrupt_after_progress`` sends a signal once the progress line shows finished work."""
from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
import tempfile
from typing import Mapping, Optional, Sequence, Tuple


def run_on_terminal(args: Sequence[str], *, env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                    timeout: float = 300.0) -> Tuple[subprocess.CompletedProcess, str]:
    """Run ``python -m mltools ARGS``: stdout to a file (it is read after the run, so a large
    document cannot block the child), stderr on a pty. Returns (completed process with the
    stdout text, everything the terminal got)."""
    master, slave = pty.openpty()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([sys.executable, "-m", "mltools", *args], stdout=out, stderr=slave,
                                stdin=subprocess.DEVNULL, env=None if env is None else dict(env), cwd=cwd)
        os.close(slave)
        seen, deadline = b"", time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([master], [], [], 0.2)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:          # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=120)
        os.close(master)
        out.seek(0)
        stdout = out.read().decode("utf-8", "replace")
    return (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, None),
            seen.decode("utf-8", "replace"))


def interrupt_after_progress(args: Sequence[str], sig: int, *, label: str, min_done: int = 1,
                             timeout: float = 300.0) -> Tuple[subprocess.CompletedProcess, str]:
    """Run ``python -m mltools ARGS`` with stderr on a pty; send ``sig`` once the progress line
    ``label: N/M`` shows N >= min_done (or the timeout passes). Returns (completed process with
    stdout, everything written on the terminal)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "mltools", *args], stdout=subprocess.PIPE, stderr=slave,
                            text=True)
    os.close(slave)
    seen, deadline = b"", time.monotonic() + timeout
    pattern = re.compile(re.escape(label.encode()) + rb": (\d+)/\d+")
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([master], [], [], 1.0)[0]:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
        if any(int(m) >= min_done for m in pattern.findall(seen)):
            break
    proc.send_signal(sig)
    stdout, _ = proc.communicate(timeout=120)
    try:
        while select.select([master], [], [], 0.2)[0]:
            seen += os.read(master, 4096)
    except OSError:
        pass
    os.close(master)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, None), seen.decode("utf-8", "replace")
