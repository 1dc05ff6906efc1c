"""The one reader of small kernel and configuration files (/proc, /sys, /etc), and of /proc/cpuinfo.

Every part that asks the kernel about this machine (``env``, ``doctor``,
``bench numa`` on a live machine or an hwloc dump, the benchmarks' machine
line) reads through here, so a file that cannot be read, or a sysfs file that
ends in NUL bytes, means the same thing everywhere.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

__all__ = ["read_bytes", "read_text", "cpuinfo_fields", "usable_cpus"]


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


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), the default for every ``--jobs``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
