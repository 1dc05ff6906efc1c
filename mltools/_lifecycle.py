"""How a run of mltools ends when it is interrupted: one place for SIGINT and SIGTERM.

- :func:`signals_handled` (entered once per command, by the CLI's root group)
  turns SIGINT and SIGTERM into :class:`Interrupted` (a ``KeyboardInterrupt``,
  so ``finally`` blocks and context managers run) and, on the way out,
  ends every process group mltools started and removes its temporary
  directories.
- Everything that starts a process registers it with :func:`owned_process`
  (``_proc.run`` and ``_target`` do), so that a child in its own session,
  which the terminal's Ctrl-C never reaches, is ended with its whole group.
- :func:`write_stdout` writes the final result whole: a first signal waits
  for the end of it (:func:`signals_deferred`), so a document on stdout is
  never cut in the middle; a second signal still ends the run at once.
- :func:`temp_dir` makes a temporary directory that is removed however the
  run ends.
- Loops that can report what they had finished (sweeps, benchmarks, scans)
  catch ``KeyboardInterrupt``, return a partial result with
  ``interrupted=True``, and the CLI, having printed it, ends the run with
  :func:`interrupt_exit_status`: 130 for SIGINT, 143 for SIGTERM.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:     # annotations only: importing typing is a tenth of a one-file command
    from typing import Dict, Iterator, Optional, Set

__all__ = ["Interrupted", "signals_handled", "signals_deferred", "write_stdout", "owned_process", "temp_dir",
           "thread_pool", "received_signal", "interrupt_exit_status", "end_owned_processes", "check_interrupt",
           "worker_signals", "report_interrupt"]


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_lock = threading.Lock()
_groups: Dict[int, int] = {}          # pid -> process group id of each live child we own
_temp_dirs: Set[str] = set()
_received: Optional[int] = None
_depth = 0
_deferring = False
_pending: Optional[int] = None


def received_signal() -> Optional[int]:
    """The first interrupting signal of this run, or None."""
    return _received


def check_interrupt() -> None:
    """Raise :class:`Interrupted` again if a signal arrived (for code that caught it to stop
    a worker pool and must not go on)."""
    if _received is not None:
        raise Interrupted(_received)


def interrupt_exit_status(signum: Optional[int] = None) -> int:
    """128+N, as a shell reports a process ended by signal N (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum or _received or signal.SIGINT)


def report_interrupt() -> int:
    """End a run that was interrupted: ``Interrupted (SIGINT).`` (or SIGTERM) on stderr, on a
    line of its own, and the exit status for it (:func:`interrupt_exit_status`)."""
    import sys

    sig = received_signal() or signal.SIGINT
    stream = sys.stderr
    if stream is not None:
        stream.write(f"\nInterrupted ({signal.Signals(sig).name}).\n")
        stream.flush()
    return interrupt_exit_status(sig)


def _in_forked_child() -> None:
    """A process forked from ours (a multiprocessing worker) is not the run: it gets the default
    signal actions back (the parent ends it; no traceback from a worker on Ctrl-C) and owns
    none of the parent's children or directories."""
    global _depth, _received, _deferring, _pending
    if _depth:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
    _depth = 0
    _received = None
    _deferring, _pending = False, None
    _groups.clear()
    _temp_dirs.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_forked_child)


def worker_signals() -> None:
    """A forked worker leaves interrupts to the parent: it ignores SIGINT (the terminal sends
    it to the whole group; the parent stops the workers) and dies of SIGTERM, which is how the
    parent ends its workers, without the parent's handler (a traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _on_signal(signum, _frame) -> None:
    global _received, _pending
    if _received is None:
        _received = signum
    if _deferring and _pending is None:
        _pending = signum
        return
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold back the first SIGINT/SIGTERM that arrives inside (it is raised as
    :class:`Interrupted` on the way out); a second one is raised at once, so a write blocked
    on a full pipe can still be stopped."""
    global _deferring, _pending
    if _deferring:
        yield
        return
    _deferring, _pending = True, None
    try:
        yield
    finally:
        _deferring = False
        pending, _pending = _pending, None
    if pending is not None:
        raise Interrupted(pending)


def write_stdout(text: str) -> None:
    """Write ``text`` to stdout whole, though a signal arrive in the middle of it.

    The bytes go to the file descriptor in a loop of ``os.write``: when a signal handler
    interrupts a write to a full pipe, a buffered stream's ``write`` returns short and the text
    layer above it drops the rest without an error (CPython 3.11: 64 KiB of 300 KB arrive).
    A stream with no descriptor (a test runner's) is written as it is."""
    import sys

    stream = sys.stdout
    with signals_deferred():
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            stream.write(text)
            stream.flush()
            return
        stream.flush()
        view = memoryview(text.encode(getattr(stream, "encoding", None) or "utf-8",
                                      getattr(stream, "errors", None) or "strict"))
        while view:
            view = view[os.write(fd, view):]


@contextlib.contextmanager
def signals_handled() -> Iterator[None]:
    """For the length of one command: SIGINT and SIGTERM raise Interrupted, and whatever way
    the command ends, the processes and temporary directories it owned are cleaned up.
    Nested uses (a command that calls another) only count."""
    global _depth, _received
    _depth += 1
    previous = {}
    if _depth == 1:
        _received = None
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, _on_signal)
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            # a second Ctrl-C while cleaning up must not leave children behind
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
            try:
                end_owned_processes()
                _remove_temp_dirs()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)


@contextlib.contextmanager
def owned_process(pid: int, *, own_group: bool) -> Iterator[None]:
    """Register the child ``pid`` (the leader of its own process group when ``own_group``)
    until the block ends. When the block is left by an exception (an interrupt, a failure),
    the child and its group are ended before the exception goes on; a signal in any other
    code ends every registered child."""
    with _lock:
        _groups[pid] = pid if own_group else 0
    try:
        yield
    except BaseException:
        _end({pid: pid if own_group else 0}, grace_s=1.0)
        raise
    finally:
        with _lock:
            _groups.pop(pid, None)


def end_owned_processes(grace_s: float = 2.0) -> None:
    """SIGTERM every registered child (its whole group where it leads one), then SIGKILL
    what is left after ``grace_s``."""
    with _lock:
        targets = dict(_groups)
    _end(targets, grace_s)


def _end(targets: Dict[int, int], grace_s: float) -> None:
    if not targets:
        return
    for pid, pgid in targets.items():
        _send(pid, pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid, pgid) for pid, pgid in targets.items()):
        time.sleep(0.02)
    for pid, pgid in targets.items():
        _send(pid, pgid, signal.SIGKILL)


def _send(pid: int, pgid: int, sig: int) -> None:
    try:
        if pgid:
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _state(pid: int) -> Optional[tuple]:
    """(state letter, process group) from /proc/PID/stat, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, pgid: int) -> bool:
    """Still running (a zombie waiting to be reaped has ended)."""
    if not pgid:
        st = _state(pid)
        return st is not None and st[0] != "Z"
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _state(int(name))
            if st is not None and st[1] == pgid and st[0] != "Z":
                return True
    return False


@contextlib.contextmanager
def temp_dir(prefix: str = "mltools-", dir: Optional[str] = None) -> Iterator[str]:
    """A private temporary directory, removed when the block ends or the run is interrupted."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix=prefix, dir=dir)
    with _lock:
        _temp_dirs.add(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        with _lock:
            _temp_dirs.discard(path)


def _remove_temp_dirs() -> None:
    with _lock:
        paths = list(_temp_dirs)
        _temp_dirs.clear()
    if paths:
        import shutil        # here, not at the top: every command imports this module at start-up
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def thread_pool(max_workers: int) -> Iterator["object"]:
    """A ThreadPoolExecutor whose workers wait on child processes: when the block is
    interrupted, the children are ended first (so the waiting threads return at once) and
    queued work is cancelled, instead of the pool waiting for every child to finish."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=max_workers)
    try:
        yield pool
    except BaseException:
        end_owned_processes(grace_s=0.5)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
