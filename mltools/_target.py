"""What commands that run a target program share: finding the program as a
shell would, the facts about it that decide whether the loader honours our
environment (privileges, PT_INTERP), and running it attached to our terminal.
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from typing import Mapping, Optional, Sequence, Tuple

from mltools._files import read_head
from mltools.errors import MltoolsError


class TargetStartError(MltoolsError):
    """The target could not be started; ``exit_status`` is what a shell returns (127, 126)."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


def find_program(prog: str) -> str:
    """Absolute path of the program a shell would run for ``prog``.

    Raises TargetStartError with 127 (not found) or 126 (not executable), as a shell does.
    """
    if "/" in prog:
        if not os.path.exists(prog):
            raise TargetStartError(f"{prog}: No such file or directory", 127)
        path = prog
    else:
        found = shutil.which(prog)
        if found is None:
            if any(os.path.exists(os.path.join(d or ".", prog))
                   for d in os.environ.get("PATH", "").split(os.pathsep)):
                raise TargetStartError(f"{prog}: Permission denied", 126)
            raise TargetStartError(f"{prog}: command not found", 127)
        path = found
    if os.path.isdir(path):
        raise TargetStartError(f"{prog}: Is a directory", 126)
    if not os.access(path, os.X_OK):
        raise TargetStartError(f"{prog}: Permission denied", 126)
    return os.path.abspath(path)


def shebang(path: str) -> Optional[Tuple[str, ...]]:
    """The words of a ``#!`` line, or None when the file has none."""
    head = read_head(path, 256)
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return tuple(line.split()) if line else None


def elf_interp(path: str) -> Tuple[bool, Optional[str]]:
    """(is an ELF file, its PT_INTERP or None)."""
    from mltools.elf.files import looks_like_elf
    from mltools.elf.reader import ElfFormatError, read_elf

    if not looks_like_elf(path):
        return False, None
    try:
        return True, read_elf(path).interp
    except (ElfFormatError, OSError):
        return True, None


def privilege_reason(path: str, *, only_if_secure: bool = True) -> Optional[str]:
    """Why an exec of ``path`` would be privileged, or None.

    With ``only_if_secure`` (the loader's view) only what makes the kernel set
    AT_SECURE for us counts: set-user-ID to another user, set-group-ID to
    another group, file capabilities. Without it any setuid/setgid bit counts.
    """
    st = os.stat(path)
    if st.st_mode & stat.S_ISUID and (not only_if_secure or st.st_uid != os.geteuid()):
        return f"set-user-ID (owner uid {st.st_uid})"
    if (st.st_mode & stat.S_ISGID and st.st_mode & stat.S_IXGRP
            and (not only_if_secure or st.st_gid != os.getegid())):
        return f"set-group-ID (group gid {st.st_gid})"
    try:
        if os.getxattr(path, "security.capability"):
            return "file capabilities"
    except (OSError, AttributeError):
        pass
    return None


def run_attached(argv: Sequence[str], env: Mapping[str, str],
                 stdout_fd: Optional[int] = None) -> Tuple[int, float]:
    """Run the target on our terminal (stdin and stderr inherited), wait, return
    (returncode as Popen gives it, seconds).

    ``mltools._proc.run`` captures output; a target under study must keep its
    terminal, its process group (so Ctrl-C reaches it) and its streaming output.
    While it runs SIGINT/SIGQUIT are caught and ignored here (a handler, not
    SIG_IGN, so the target keeps the default action) and the caller still reports.
    """
    previous = {}
    for sig in (signal.SIGINT, signal.SIGQUIT):
        try:
            previous[sig] = signal.signal(sig, lambda *_: None)
        except ValueError:            # not the main thread
            pass
    start = time.perf_counter()
    try:
        try:
            proc = subprocess.Popen(list(argv), env=dict(env), stdout=stdout_fd, close_fds=True)
        except FileNotFoundError:
            raise TargetStartError(f"{argv[0]}: command not found", 127) from None
        except PermissionError:
            raise TargetStartError(f"{argv[0]}: Permission denied", 126) from None
        except OSError as exc:
            raise TargetStartError(f"{argv[0]}: {exc.strerror or exc}", 126) from None
        from mltools._lifecycle import owned_process

        with owned_process(proc.pid, own_group=False):
            while True:
                try:
                    rc = proc.wait()
                    break
                except InterruptedError:
                    continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return rc, time.perf_counter() - start
