"""io-fail's own records: ``F`` (a failed call) and ``T`` (an eligible call of a
traced baseline), and the Python stack CPython's dumper wrote at a failure."""
from __future__ import annotations

import errno as errno_mod
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from mltools.preload.records import Frame, Records, parse_frame, parse_frames, user_frame

__all__ = ["IoFailure", "EligibleCall", "failures_of", "calls_of", "read_python_stack",
           "site_of"]

_PY_FRAME = re.compile(r'^\s*File "(?P<file>.*)", line (?P<line>\d+) in (?P<func>.*)$')


@dataclass(frozen=True)
class IoFailure:
    function: str                  # the call family: write, fsync, rename, ...
    index: int
    pid: int
    tid: int
    fd: Optional[int]
    path: Optional[str]
    path2: Optional[str]           # rename's new name
    errno: int
    errno_name: str
    short: bool                    # a short write instead of an error
    caller: Frame
    user_site: Optional[Frame]
    frames: Tuple[Frame, ...]
    python_stack: Tuple[str, ...] = ()   # "file:line in function", innermost first (CPython targets)


@dataclass(frozen=True)
class EligibleCall:
    index: int
    pid: int
    function: str
    path: Optional[str]
    path2: Optional[str]
    caller: Frame


def failures_of(records: Records, pystack_dir: Optional[str] = None) -> List[IoFailure]:
    out = []
    for d in records.of_kind("F"):
        try:
            n = int(d["errno"])
            caller = parse_frame(d["caller"])
            frames = parse_frames(d.get("frames", ""))
            pid, index = int(d["pid"]), int(d["index"])
            out.append(IoFailure(d["fn"], index, pid, int(d.get("tid", pid)),
                                 int(d["fd"]) if "fd" in d else None, d.get("path"), d.get("path2"), n,
                                 errno_mod.errorcode.get(n, str(n)), d.get("short") == "1", caller,
                                 user_frame(frames or (caller,)), frames,
                                 read_python_stack(pystack_dir, pid, index) if pystack_dir else ()))
        except (KeyError, ValueError):
            continue
    return out


def calls_of(records: Records) -> List[EligibleCall]:
    out = []
    for d in records.of_kind("T"):
        try:
            out.append(EligibleCall(int(d["index"]), int(d["pid"]), d["fn"], d.get("path"), d.get("path2"),
                                    parse_frame(d["caller"])))
        except (KeyError, ValueError):
            continue
    return out


def read_python_stack(folder: str, pid: int, index: int) -> Tuple[str, ...]:
    """CPython's faulthandler format ("Stack (most recent call first):", then
    '  File "f.py", line 3 in g') as "f.py:3 in g", innermost first."""
    try:
        with open(os.path.join(folder, f"{pid}.{index}"), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return ()
    out = []
    for line in text.splitlines():
        m = _PY_FRAME.match(line)
        if m:
            out.append(f"{m['file']}:{m['line']} in {m['func']}")
    return tuple(out)


def site_of(python_stack: Sequence[str], user_site: Optional[Frame], caller: Optional[Frame]) -> str:
    """Where a call was made, for people: the innermost Python frame of a CPython
    target, else the first frame outside libc and the shims, else the raw caller."""
    if python_stack:
        return python_stack[0]
    if user_site is not None:
        return str(user_site)
    return str(caller) if caller is not None else "?"
