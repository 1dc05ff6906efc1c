"""The target program: where it is, whether LD_PRELOAD can reach it, and which
processes of its tree count as "the target" for the shim's scope."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Optional, Tuple

from mltools import _proc
from mltools.errors import InputError, ToolNotFoundError, UsageError

#: Interpreters that are wrappers, never the program under test.
SHELLS = ("sh", "bash", "dash", "zsh", "ksh", "mksh", "busybox", "env")


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
    allocator_libs: Tuple[str, ...] = ()   # ASan, jemalloc, tcmalloc, mimalloc in DT_NEEDED


_OTHER_ALLOCATORS = ("libasan", "libjemalloc", "libtcmalloc", "libmimalloc")


def allocator_libs(path: str) -> Tuple[str, ...]:
    """DT_NEEDED entries that bring their own malloc (they need --forward next)."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    found = []
    try:
        with open(path, "rb") as fh:
            for sec in ELFFile(fh).iter_sections():
                if isinstance(sec, DynamicSection):
                    for tag in sec.iter_tags():
                        if tag.entry.d_tag == "DT_NEEDED" and tag.needed.startswith(_OTHER_ALLOCATORS):
                            found.append(tag.needed)
    except (ELFError, OSError):
        return ()
    return tuple(found)


def _identity(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def resolve_program(program: str) -> str:
    if "/" in program:
        path = os.path.abspath(program)
        if not os.path.exists(path):
            raise ToolNotFoundError(f"{program}: no such file")
    else:
        found = _proc.which(program)
        if found is None:
            raise ToolNotFoundError(f"{program}: command not found")
        path = os.path.abspath(found)
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise InputError(f"{program}: not an executable file")
    return path


def _read_head(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(256)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def check_preloadable(path: str) -> None:
    """Refuse targets that LD_PRELOAD silently does not reach (TargetRefused)."""
    st = os.stat(path)
    if st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        which = "setuid" if st.st_mode & stat.S_ISUID else "setgid"
        raise TargetRefused(f"{path} is {which}: the loader ignores LD_PRELOAD for it "
                            "(run an unprivileged copy instead)")
    try:
        if os.getxattr(path, "security.capability"):
            raise TargetRefused(f"{path} has file capabilities: the loader ignores LD_PRELOAD "
                                "for it (run a copy without them)")
    except OSError:
        pass
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            has_interp = any(seg["p_type"] == "PT_INTERP" for seg in elf.iter_segments())
            kind = elf["e_type"]
    except (ELFError, OSError) as exc:
        raise InputError(f"{path}: not a readable ELF file ({exc})") from None
    if not has_interp:
        what = "static-pie" if kind == "ET_DYN" else "statically linked"
        raise TargetRefused(f"{path} is {what} (no PT_INTERP): LD_PRELOAD cannot inject into it; "
                            "link it dynamically to test it")


def _shebang(path: str) -> Optional[Tuple[str, ...]]:
    head = _read_head(path)
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return tuple(line.split()) if line else None


def _shell_identities() -> Tuple[str, ...]:
    seen = []
    for name in SHELLS:
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

    An ELF program is its own target. A script is followed through its
    ``#!`` line (and ``/usr/bin/env NAME``): when the interpreter is not a
    shell (a Python script), the interpreter is the target; when it is a
    shell, shells and ``env`` are excluded and the first other process
    becomes the target. ``target_exe`` names the target explicitly.
    """
    path = resolve_program(program)
    if target_exe is None:
        target_exe = _version_manager_target(path)
    chain = [path]
    current = path
    interpreter_is_shell = False
    for _ in range(4):
        head = _read_head(current)
        if head.startswith(b"\x7fELF"):
            break
        bang = _shebang(current)
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
        check_preloadable(exe)
        return Target(path, "elf" if len(chain) == 1 else "script", tuple(chain), (_identity(exe),), (),
                      f"processes running {exe}", allocator_libs(exe))
    if len(chain) == 1:
        check_preloadable(path)
        return Target(path, "elf", (path,), (_identity(path),), (), f"processes running {path}",
                      allocator_libs(path))
    if interpreter_is_shell:
        check_preloadable(chain[-1])
        return Target(path, "script", tuple(chain), (), _shell_identities(),
                      "the first process that is not a shell or env (a shell wrapper is never injected)")
    check_preloadable(current)
    return Target(path, "script", tuple(chain), (_identity(current),), (),
                  f"processes running the interpreter {current}", allocator_libs(current))
