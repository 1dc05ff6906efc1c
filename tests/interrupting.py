"""Interrupt a real mltools process at a known point: once its progress line (drawn because
stderr is a pseudo-terminal) shows at least ``min_done`` items finished."""
from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from typing import Sequence, Tuple


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
