"""The one reader of small kernel and configuration files (/proc, /sys, /etc), and of /proc/cpuinfo.

Every part that asks the kernel about this machine (``env``, ``doctor``,
``bench numa`` on a live machine or an hwloc dump, the benchmarks' machine
line) reads through here, so a file that cannot be read, or a sysfs file that
ends in NUL bytes, means the same thing everywhere.
"""
from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:     # annotations only: importing typing is a tenth of a one-file command
    from typing import Dict, Optional

__all__ = ["read_bytes", "read_text", "cpuinfo_fields", "first_cpuinfo_block", "isa_level_from_flags",
           "usable_cpus"]

# x86-64 psABI micro-architecture levels, as /proc/cpuinfo spells the flags.
# (OSXSAVE is not a cpuinfo flag; the kernel only lists AVX when the OS saves its state.)
ISA_LEVEL_FLAGS = (
    (1, {"cmov", "cx8", "fpu", "fxsr", "mmx", "syscall", "sse", "sse2"}),
    (2, {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}),
    (3, {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    (4, {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
)



def read_bytes(path: str, root: str = "/") -> Optional[bytes]:
    """The bytes of ``path`` (absolute, or relative to ``root``: an hwloc dump's top
    directory), or None when it cannot be read."""
    full = os.path.join(root or "/", path.lstrip("/"))
    try:
        with open(full, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def read_text(path: str, root: str = "/") -> Optional[str]:
    """The text of ``path`` as :func:`read_bytes`, with NUL bytes dropped (some sysfs files
    end in them) and undecodable bytes replaced; None when it cannot be read."""
    data = read_bytes(path, root)
    if data is None:
        return None
    return data.replace(b"\0", b"").decode("utf-8", "replace")


def cpuinfo_fields(text: str, all_blocks: bool = False) -> Dict[str, str]:
    """The ``key: value`` pairs of the first processor block of /proc/cpuinfo's ``text``
    (``model name``, ``flags`` on x86; ``CPU implementer``, ``Features`` on ARM).
    ``all_blocks`` also takes keys that only later blocks have: old ARM kernels
    print ``CPU implementer`` once, after the per-CPU blocks."""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields and not all_blocks:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def first_cpuinfo_block(path: str = "/proc/cpuinfo") -> Dict[str, str]:
    """:func:`cpuinfo_fields` of the first processor only, reading no further than it.

    The kernel writes /proc/cpuinfo a CPU at a time; on a machine with hundreds
    of CPUs reading all of it takes milliseconds that a one-file command should
    not spend."""
    chunks = []
    try:
        with open(path, "rb") as fh:
            while True:
                chunk = fh.read(8192)
                chunks.append(chunk)
                if not chunk or b"\n\n" in chunk:
                    break
    except OSError:
        return {}
    return cpuinfo_fields(b"".join(chunks).decode("utf-8", "replace"))


def isa_level_from_flags(flags: set) -> int:
    """The highest x86-64 level whose flags (and all lower levels') are present; 0 if not even v1."""
    level = 0
    for lvl, needed in ISA_LEVEL_FLAGS:
        if not needed <= flags:
            break
        level = lvl
    return level


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), the default for every ``--jobs``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
