"""The one way mltools runs other programs: an argv list, a timeout, no shell."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import IO, Callable, Mapping, Optional, Sequence, Union

from mltools.errors import SubprocessError, ToolNotFoundError


@dataclass(frozen=True)
class ProcResult:
    argv: tuple
    returncode: int          # as Popen reports it: negative -N for signal N
    stdout: str
    stderr: str
    elapsed_s: float
    timed_out: bool

    @property
    def exit_status(self) -> int:
        """The shell's view: 128+N when killed by signal N."""
        return exit_status(self.returncode)

    @property
    def signal_name(self) -> Optional[str]:
        return signal_name(-self.returncode) if self.returncode < 0 else None


def signal_name(sig: int) -> str:
    """``SIGKILL`` for 9; ``signal N`` for a number Python has no name for."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def exit_status(returncode: int) -> int:
    """Convert a Popen return code to a shell exit status (128+N for signal N)."""
    return 128 - returncode if returncode < 0 else returncode


def which(program: str, path: Optional[str] = None) -> Optional[str]:
    return shutil.which(program, path=path)


def require_tool(program: str, package_hint: str = "") -> str:
    """Absolute path of ``program`` or ToolNotFoundError naming how to get it."""
    found = which(program)
    if found is None:
        hint = f" (install it: {package_hint})" if package_hint else ""
        raise ToolNotFoundError(f"{program} is not installed or not on PATH{hint}")
    return found


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[str] = None,
    input: Optional[str] = None,
    text: bool = True,
    check: bool = False,
    new_session: bool = True,
    pass_fds: Sequence[int] = (),
    lc_all_c: bool = False,
    stdin: Union[None, int, IO] = None,
    poll: Optional[Callable[[], None]] = None,
    poll_s: float = 0.2,
) -> ProcResult:
    """Run ``argv`` and capture its output.

    ``timeout`` is mandatory: on expiry the whole process group (``new_session``)
    is killed and ``timed_out`` is set; so it is when the run is interrupted
    (the child is registered with ``mltools._lifecycle`` meanwhile). ``check=True`` raises SubprocessError on
    a non-zero status or a timeout. A missing program raises ToolNotFoundError.
    ``lc_all_c`` forces the C locale, for output that is parsed. The child's
    stdin is ``input`` (a pipe), else ``stdin`` (a descriptor or file), else
    /dev/null. ``poll`` is called about every ``poll_s`` seconds while the
    child runs (progress of a long run).
    """
    from mltools._lifecycle import check_interrupt, owned_process

    argv = tuple(str(a) for a in argv)
    if not argv:
        raise ValueError("empty argv")
    check_interrupt()          # an interrupted run starts nothing new
    run_env = dict(os.environ if env is None else env)
    if lc_all_c:
        run_env["LC_ALL"] = "C"
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input is not None else (stdin if stdin is not None else subprocess.DEVNULL),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=run_env,
            cwd=cwd,
            text=text,
            errors="replace" if text else None,
            start_new_session=new_session,
            pass_fds=tuple(pass_fds),
        )
    except FileNotFoundError as exc:
        raise ToolNotFoundError(f"cannot run {argv[0]}: no such program") from exc
    except PermissionError as exc:
        raise SubprocessError(f"cannot run {argv[0]}: permission denied") from exc
    timed_out = False
    with owned_process(proc.pid, own_group=new_session):
        try:
            out, err = _communicate(proc, input, start + timeout, poll, poll_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill(proc, new_session)
            out, err = proc.communicate()
        except BaseException:
            _kill(proc, new_session)      # interrupted: its group goes with it
            proc.wait()
            raise
    elapsed = time.perf_counter() - start
    result = ProcResult(argv, proc.returncode, out or ("" if text else b""),
                        err or ("" if text else b""), elapsed, timed_out)
    if check and (timed_out or proc.returncode != 0):
        what = f"timed out after {timeout:g} s" if timed_out else f"exited with status {result.exit_status}"
        detail = (err or "").strip().splitlines()[-1:] if text else []
        raise SubprocessError(f"{argv[0]} {what}" + (f": {detail[0]}" if detail else ""))
    return result


def _communicate(proc: subprocess.Popen, input, deadline: float, poll, poll_s: float):
    """``proc.communicate`` until ``deadline``, calling ``poll`` between waits."""
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise subprocess.TimeoutExpired(proc.args, 0)
        try:
            return proc.communicate(input=input, timeout=min(left, poll_s) if poll else left)
        except subprocess.TimeoutExpired:
            if poll is None:
                raise
            input = None             # already handed over: communicate goes on with it
            poll()


def _kill(proc: subprocess.Popen, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass
