"""The target program: where it is, whether LD_PRELOAD can reach it, and which
processes of its tree count as "the target" for the shim's scope (the same
for malloc-fail and io-fail)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple

from mltools import _proc
from mltools._files import read_head
from mltools._target import TargetStartError, find_program, privilege_reason, shebang
from mltools.errors import InputError, ToolNotFoundError, UsageError

if TYPE_CHECKING:
    from mltools.elf.reader import ElfInfo

#: Interpreters that are wrappers, never the program under test.
SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "mksh", "busybox", "env")
#: Programs that only run another program (given as PROGRAM, they are never the target).
EXEC_WRAPPERS = ("env", "nice", "timeout", "stdbuf", "setsid", "taskset", "numactl", "chrt", "ionice",
                 "nohup", "setpriv", "unshare", "prlimit", "flock", "time")


class TargetRefused(UsageError):
    """LD_PRELOAD cannot reach this target; running it would prove nothing."""


@dataclass(frozen=True)
class Target:
    path: str                        # absolute path of PROGRAM
    kind: str                        # "elf" or "script"
    interpreter_chain: Tuple[str, ...]
    match: Tuple[str, ...]           # "dev:ino" of the executable that is the target
    exclude: Tuple[str, ...]         # "dev:ino" of wrappers that never inject
    description: str
    image: Optional[str] = None      # the executable that is the target, when one file is (not a wrapper or shell)
    elf: Optional["ElfInfo"] = None  # the ELF headers read when it was resolved (of image, else the wrapper or shell)


_OTHER_ALLOCATORS = ("libasan", "libjemalloc", "libtcmalloc", "libmimalloc")


def allocator_libs(target: Target) -> Tuple[str, ...]:
    """DT_NEEDED entries of the target's image that bring their own malloc (they need --forward next)."""
    if target.image is None or target.elf is None:
        return ()
    return tuple(n for n in target.elf.needed if n.startswith(_OTHER_ALLOCATORS))


def direct_io(path: str, info: Optional["ElfInfo"] = None) -> Tuple[str, ...]:
    """Why a preload misses some of this program's I/O: a Go program makes its system
    calls itself (only cgo's go through libc), an io_uring user submits writes
    through a ring, never through write(). ``info``: its ELF headers, when read already."""
    from mltools.elf.reader import ElfFormatError, read_elf, read_symbols
    from mltools.elf.sections import mapped_sections
    reasons = []
    try:
        if info is None:
            info = read_elf(path)
        imports = {s.name for s in read_symbols(path).symbols if not s.defined}
    except (ElfFormatError, OSError):
        return ()
    if any(n.startswith("liburing") for n in info.needed) or any(n.startswith("io_uring_") for n in imports):
        reasons.append("it uses io_uring (liburing): writes submitted through the ring bypass write()")
    try:
        with mapped_sections(path) as m:
            names = {sec.name for sec in m.sections}
    except OSError:
        names = set()
    if names & {".go.buildinfo", ".note.go.buildid", ".gopclntab"}:
        reasons.append("it is a Go program: Go makes its system calls itself (only cgo calls go through libc)")
    return tuple(reasons)


def _identity(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def resolve_program(program: str) -> str:
    """The program a shell would run (TargetStartError: 127 not found, 126 not executable)."""
    path = find_program(program)
    if not os.path.isfile(path):
        raise TargetStartError(f"{program}: not a regular file", 126)
    return path


def check_preloadable(path: str) -> "ElfInfo":
    """Refuse targets that LD_PRELOAD silently does not reach (TargetRefused); else the file's ELF headers."""
    reason = privilege_reason(path, only_if_secure=False)
    if reason is not None:
        raise TargetRefused(f"{path} is {reason}: the loader ignores LD_PRELOAD for it in "
                            "secure mode (run an unprivileged copy instead)")
    from mltools.elf.reader import ElfFormatError, read_elf
    try:
        info = read_elf(path)
    except (ElfFormatError, OSError) as exc:
        raise InputError(f"{path}: not a readable ELF file ({exc})") from None
    if info.interp is None:
        what = "static-pie" if info.type == 3 else "statically linked"   # ET_DYN = 3
        raise TargetRefused(f"{path} is {what} (no PT_INTERP): LD_PRELOAD cannot inject into it; "
                            "link it dynamically to test it")
    return info


def _shell_identities(names=SHELLS) -> Tuple[str, ...]:
    seen = []
    for name in names:
        for cand in (_proc.which(name), f"/bin/{name}", f"/usr/bin/{name}"):
            if cand and os.path.exists(cand):
                ident = _identity(cand)
                if ident not in seen:
                    seen.append(ident)
    return tuple(seen)


_VERSION_MANAGERS = (("/.pyenv/shims/", "pyenv"), ("/.asdf/shims/", "asdf"), ("/.rbenv/shims/", "rbenv"))


def _version_manager_target(path: str) -> Optional[str]:
    """The real executable behind a pyenv/asdf/rbenv shim (those shims run
    helper programs such as readlink before the interpreter)."""
    for marker, tool in _VERSION_MANAGERS:
        if marker in path:
            exe = os.path.join(path.split(marker)[0], f".{tool}", "bin", tool)
            if not os.path.exists(exe):
                exe = _proc.which(tool)
            if exe is None:
                return None
            res = _proc.run([exe, "which", os.path.basename(path)], timeout=20)
            found = res.stdout.strip().splitlines()[-1:] if res.returncode == 0 else []
            if found and os.path.isfile(found[0]):
                return found[0]
    return None


def resolve_target(program: str, target_exe: Optional[str] = None) -> Target:
    """Locate PROGRAM, refuse what cannot be injected, and decide the target image.

    An ELF program is its own target, unless it only runs another program
    (``env``, ``nice``, ``timeout``, ... :data:`EXEC_WRAPPERS`): then those
    wrappers and shells are excluded and the first other process becomes
    the target. A script is followed through its ``#!`` line (and
    ``/usr/bin/env NAME``): when the interpreter is not a shell (a Python
    script), the interpreter is the target; when it is a shell, shells and
    ``env`` are excluded and the first other process becomes the target.
    ``target_exe`` names the target explicitly.
    """
    path = resolve_program(program)
    if target_exe is None:
        target_exe = _version_manager_target(path)
    chain = [path]
    current = path
    interpreter_is_shell = False
    for _ in range(4):
        head = read_head(current, 256)
        if head.startswith(b"\x7fELF"):
            break
        bang = shebang(current)
        if bang is None:
            raise InputError(f"{current}: neither an ELF file nor a #! script")
        interp = bang[0]
        if os.path.basename(interp) == "env" and len(bang) > 1:
            args = [a for a in bang[1:] if not a.startswith("-")]
            if not args:
                break
            found = _proc.which(args[0])
            if found is None:
                raise ToolNotFoundError(f"{path}: interpreter {args[0]} (via env) not found")
            interp = found
        if os.path.basename(interp) in SHELLS:
            interpreter_is_shell = True
            chain.append(os.path.realpath(interp))
            break
        if not os.path.exists(interp):
            raise ToolNotFoundError(f"{path}: interpreter {interp} not found")
        current = os.path.realpath(interp)
        chain.append(current)
    if target_exe is not None:
        exe = resolve_program(target_exe)
        info = check_preloadable(exe)
        return Target(path, "elf" if len(chain) == 1 else "script", tuple(chain), (_identity(exe),), (),
                      f"processes running {exe}", exe, info)
    if len(chain) == 1 and os.path.basename(path) in EXEC_WRAPPERS:
        info = check_preloadable(path)
        return Target(path, "wrapper", (path,), (), _shell_identities(SHELLS + EXEC_WRAPPERS),
                      f"the first process that is not {os.path.basename(path)}, a shell or another "
                      "program that only runs a program", elf=info)
    if len(chain) == 1:
        info = check_preloadable(path)
        return Target(path, "elf", (path,), (_identity(path),), (), f"processes running {path}", path, info)
    if interpreter_is_shell:
        info = check_preloadable(chain[-1])
        return Target(path, "script", tuple(chain), (), _shell_identities(),
                      "the first process that is not a shell or env (a shell wrapper is never injected)", elf=info)
    info = check_preloadable(current)
    return Target(path, "script", tuple(chain), (_identity(current),), (),
                  f"processes running the interpreter {current}", current, info)
