"""The record channel between a shim and mltools, and the records both shims write.

The channel is a file in a private folder (``runner.private_dir``), named to the
shim in an environment variable. The shim maps it and closes the descriptor
at once (``csrc/preload/preload.c``), so a target that closes every inherited
descriptor (``closefrom``, daemons) keeps the channel, and nothing is ever
written into a descriptor number the target reuses. Layout: a 64-byte header
(magic ``MLTREC02``, bytes reserved, capacity, records dropped), then one
line per record, ``KIND<TAB>key=value<TAB>...``. A writer reserves its
bytes with one atomic add and stores the kind letter last, so a record cut
short by a killed process shows up as bytes starting with NUL, which the
reader skips.

Kinds every shim writes: ``H`` hello (the handshake: each process the shim
loads into, and each process the target forks), ``E`` an exec (does the new
image keep the shim?), ``K`` where a process died of a signal after a
failure, ``S``/``C`` sweep points skipped or run in a forked child, ``X``
counts at exit. ``F`` (a failure) and ``T`` (a traced call) differ per shim
and are parsed by the tool.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, TypeVar

MAGIC = b"MLTREC02"
HEADER_SIZE = 64
_HEADER = struct.Struct("<8sQQQ")          # magic, used, capacity, dropped
#: Never more than this (sparse: only what the shim writes takes memory).
MAX_CAPACITY = 1 << 30
MIN_CAPACITY = 1 << 20

# Frames that are never "the user's call site".
_SYSTEM_MODULE = re.compile(r"/(libc\.so|ld-linux|ld64\.so|libstdc\+\+\.so|libgcc_s\.so|libpthread\.so)"
                            r"|mltools/(mallocfail|iofail)/_shim")


def create_channel(path: str, capacity: Optional[int] = None) -> int:
    """Create the record file at ``path`` (mode 0600, sparse) and return its capacity in bytes.

    The capacity is at most a quarter of the free space of the file system
    (a shim writing past a full tmpfs through its mapping would get SIGBUS).
    """
    if capacity is None:
        free = shutil.disk_usage(os.path.dirname(path) or ".").free
        capacity = max(MIN_CAPACITY, min(MAX_CAPACITY, free // 4))
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, _HEADER.pack(MAGIC, 0, capacity, 0))
        os.ftruncate(fd, HEADER_SIZE + capacity)
    finally:
        os.close(fd)
    return capacity


def create_state_page(path: str) -> None:
    """The page the shims share across the target's processes (root claim, tree counter)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, 4096)
    finally:
        os.close(fd)


@dataclass
class ChannelReader:
    """Reads the complete records of a channel, from where the last read stopped."""
    path: str
    offset: int = 0
    dropped: int = 0

    def read(self) -> List[str]:
        try:
            with open(self.path, "rb") as fh:
                magic, used, capacity, dropped = _HEADER.unpack(fh.read(_HEADER.size))
                if magic != MAGIC:
                    return []
                self.dropped = dropped
                end = min(used, capacity)
                if end <= self.offset:
                    return []
                fh.seek(HEADER_SIZE + self.offset)
                data = fh.read(end - self.offset)
        except (OSError, struct.error):
            return []
        lines = []
        consumed = 0
        for piece in data.split(b"\n")[:-1]:     # the last piece has no newline yet
            consumed += len(piece) + 1
            if b"\0" in piece:
                # a writer reserved these bytes and died before finishing (its kind
                # byte is still NUL); a whole record may follow the hole
                piece = piece.rsplit(b"\0", 1)[1]
            if len(piece) >= 2 and 65 <= piece[0] <= 90 and piece[1:2] == b"\t":
                lines.append(piece.decode("utf-8", "replace"))
        self.offset += consumed
        return lines


def read_channel(path: str) -> Tuple[List[str], int]:
    """(every complete record line, records dropped because the file was full)."""
    reader = ChannelReader(path)
    lines = reader.read()
    return lines, reader.dropped


# ---- records ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """A code address as module+offset (what the shim writes), with a name and a
    source line where the module's symbols or debug information give one."""
    module: str
    offset: int
    function: Optional[str] = None
    location: Optional[str] = None      # file:line, from DWARF

    @property
    def raw(self) -> str:
        return f"{self.module}+{self.offset:#x}"

    def __str__(self) -> str:
        if self.function:
            return f"{self.function} ({self.location or self.raw})"
        if self.location:
            return f"{self.location} ({self.raw}, no symbol)"
        return self.raw


def parse_frame(text: str) -> Frame:
    module, _, off = text.rpartition("+")
    try:
        return Frame(module or "?", int(off, 16))
    except ValueError:
        return Frame(text, 0)


def parse_frames(text: str) -> Tuple[Frame, ...]:
    return tuple(parse_frame(x) for x in text.split("|") if x)


_F = TypeVar("_F")


def first_failure_by_pid(failures: Sequence[_F]) -> Dict[int, _F]:
    """Each process's failure of the lowest index (malloc-fail's or io-fail's: records with
    ``pid`` and ``index``)."""
    out: Dict[int, _F] = {}
    for f in sorted(failures, key=lambda x: x.index):
        out.setdefault(f.pid, f)
    return out


def user_frame(frames: Sequence[Frame]) -> Optional[Frame]:
    """The first frame outside libc, the loader, libstdc++ and the shims."""
    for f in frames:
        if f is not None and not _SYSTEM_MODULE.search(f.module) and f.module != "?":
            return f
    return None


@dataclass(frozen=True)
class ProcessRecord:
    """A process the shim loaded into (its hello) and its counts at exit (X)."""
    pid: int
    ppid: int
    exe: str
    role: str                     # root, tree, each; or why not: not-target, not-root, root-taken
    injects: bool
    exited_normally: bool         # an X record was written (exit(), not a signal or _exit)
    calls: Dict[str, int] = field(default_factory=dict)
    counted: Dict[str, int] = field(default_factory=dict)
    failed: Dict[str, int] = field(default_factory=dict)
    counted_total: int = 0
    failed_total: int = 0
    hello: Dict[str, str] = field(default_factory=dict)      # the shim's own hello fields
    exit_values: Dict[str, int] = field(default_factory=dict)  # the X record's other numbers


@dataclass(frozen=True)
class ExecRecord:
    """A process ran exec (or posix_spawn); ``keeps_shim`` is false when the new
    image's environment lost the shim (``env -i``, ``clearenv``, an unset LD_PRELOAD)."""
    pid: int
    exe: str
    how: str
    path: str
    keeps_shim: bool


@dataclass(frozen=True)
class CrashRecord:
    pid: int
    signal: int
    fault_address: int
    frames: Tuple[Frame, ...]


@dataclass(frozen=True)
class ForkPoint:
    """A sweep point the fork pass skipped (``skipped_reason``) or ran in ``child_pid``."""
    index: int
    child_pid: Optional[int]
    wait_status: Optional[int]    # waitpid's status; None when skipped; -1 when lost
    timed_out: bool
    skipped_reason: Optional[str]


@dataclass
class Records:
    processes: List[ProcessRecord]
    execs: List[ExecRecord]
    crashes: List[CrashRecord]
    fork_points: List[ForkPoint]
    exits: Dict[int, Dict[str, object]]
    tool_records: List[Tuple[str, Dict[str, str]]]     # F, T, ...: parsed by the tool
    dropped: int = 0

    def of_kind(self, kind: str) -> List[Dict[str, str]]:
        return [d for k, d in self.tool_records if k == kind]


_INJECTING_ROLES = ("root", "tree", "each")


def parse_wait_status(text: str) -> int:
    """A waitpid status as the shim writes it (a C int cast to unsigned: a lost child's -1
    comes as 4294967295) back as the int it was."""
    value = int(text)
    return value - (1 << 32) if value >= 1 << 31 else value


def parse_records(lines: Sequence[str], dropped: int = 0) -> Records:
    hellos: Dict[int, Dict[str, str]] = {}
    exits: Dict[int, Dict[str, object]] = {}
    execs: List[ExecRecord] = []
    crashes: List[CrashRecord] = []
    forks: List[ForkPoint] = []
    tool: List[Tuple[str, Dict[str, str]]] = []
    for line in lines:
        kind, *parts = line.split("\t")
        pairs = [p.partition("=") for p in parts]
        d = {k: v for k, sep, v in pairs if sep}
        try:
            if kind == "H":
                # an exec in the same pid writes a new hello: the last one is the image that ran
                hellos[int(d["pid"])] = d
            elif kind == "X":
                counts = [v.split(":") for k, sep, v in pairs if sep and k == "fn"]
                values = {k: int(v) for k, v in d.items() if k not in ("fn", "pid", "role") and v.isdigit()}
                exits[int(d["pid"])] = {
                    "calls": {c[0]: int(c[1]) for c in counts},
                    "counted": {c[0]: int(c[2]) for c in counts},
                    "failed": {c[0]: int(c[3]) for c in counts},
                    "role": d.get("role", ""), "values": values}
            elif kind == "E":
                execs.append(ExecRecord(int(d["pid"]), d.get("exe", ""), d.get("how", ""), d.get("path", ""),
                                        d.get("keeps") == "1"))
            elif kind == "K":
                crashes.append(CrashRecord(int(d["pid"]), int(d["signal"]), int(d.get("addr", "0"), 16),
                                           parse_frames(d.get("frames", ""))))
            elif kind in "SC":
                forks.append(ForkPoint(int(d["index"]), int(d["child"]) if "child" in d else None,
                                       parse_wait_status(d["status"]) if "status" in d else None,
                                       d.get("timed_out") == "1", d.get("reason")))
            else:
                tool.append((kind, d))
        except (KeyError, ValueError):
            continue     # a record the shim could not finish
    processes = []
    for pid, h in hellos.items():
        x = exits.get(pid)
        role = h.get("role", "")
        counted = dict(x["counted"]) if x else {}
        failed = dict(x["failed"]) if x else {}
        processes.append(ProcessRecord(
            pid=pid, ppid=int(h.get("ppid", 0)), exe=h.get("exe", ""), role=role,
            injects=role in _INJECTING_ROLES, exited_normally=x is not None,
            calls=dict(x["calls"]) if x else {}, counted=counted, failed=failed,
            counted_total=sum(counted.values()), failed_total=sum(failed.values()),
            hello={k: v for k, v in h.items() if k not in ("pid", "ppid", "exe", "role", "version")},
            exit_values=dict(x["values"]) if x else {}))
    return Records(processes, execs, crashes, forks, exits, tool, dropped)
