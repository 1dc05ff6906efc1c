"""Parsing the shim's records and symbolizing call sites.

Record lines (tab-separated ``key=value`` after a one-letter kind):
``H`` hello (the handshake: written by every process the shim loads into),
``F`` an injected failure, ``T`` a traced counted call (sweep baselines),
``S``/``C`` fork-mode points skipped / run in a child, ``X`` counts at exit.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from mltools import _proc

# Modules whose frames are never "the user's call site".
_SYSTEM_MODULE = re.compile(r"/(libc\.so|ld-linux|ld64\.so|libstdc\+\+\.so|libgcc_s\.so|libpthread\.so)"
                            r"|mltools/mallocfail/_shim")


@dataclass(frozen=True)
class Frame:
    module: str
    offset: int
    function: Optional[str] = None
    location: Optional[str] = None      # file:line, when debug info exists

    @property
    def raw(self) -> str:
        return f"{self.module}+{self.offset:#x}"

    def __str__(self) -> str:
        where = self.location or self.raw
        return f"{self.function} ({where})" if self.function else where


@dataclass(frozen=True)
class InjectedFailure:
    function: str
    size: int
    index: int
    pid: int
    tid: int
    exe: str
    caller: Frame
    user_site: Optional[Frame]
    frames: Tuple[Frame, ...]


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    ppid: int
    exe: str
    role: str                     # root, tree, each, or why not: not-target, root-taken, not-root
    injects: bool
    forward: str
    exited_normally: bool         # an X record was written (exit(), not a signal or _exit)
    calls: Dict[str, int] = field(default_factory=dict)
    counted: Dict[str, int] = field(default_factory=dict)
    failed: Dict[str, int] = field(default_factory=dict)
    counted_total: int = 0
    live_blocks: Optional[int] = None


@dataclass(frozen=True)
class ForkPoint:
    index: int
    child_pid: Optional[int]
    wait_status: Optional[int]
    timed_out: bool
    skipped_reason: Optional[str]


@dataclass(frozen=True)
class TracedCall:
    pid: int
    function: str
    size: int
    index: int
    frames: Tuple[Frame, ...]


@dataclass(frozen=True)
class CrashRecord:
    pid: int
    signal: int
    fault_address: int
    frames: Tuple[Frame, ...]


@dataclass
class Records:
    processes: List[ProcessRecord]
    failures: List[InjectedFailure]
    traces: List[TracedCall]
    fork_points: List[ForkPoint]
    raw_exit: Dict[int, Dict[str, object]]
    crashes: List[CrashRecord] = field(default_factory=list)


def _fields(parts: Sequence[str]) -> List[Tuple[str, str]]:
    out = []
    for p in parts:
        k, sep, v = p.partition("=")
        if sep:
            out.append((k, v))
    return out


def parse_frame(text: str) -> Frame:
    module, _, off = text.rpartition("+")
    try:
        return Frame(module or "?", int(off, 16))
    except ValueError:
        return Frame(text, 0)


def user_frame(frames: Sequence[Frame]) -> Optional[Frame]:
    """The first frame outside libc, the loader, libstdc++ and the shim."""
    for f in frames:
        if not _SYSTEM_MODULE.search(f.module) and f.module != "?":
            return f
    return None


def parse_records(text: str) -> Records:
    hellos: Dict[int, Dict[str, str]] = {}
    exits: Dict[int, Dict[str, object]] = {}
    failures: List[InjectedFailure] = []
    traces: List[TracedCall] = []
    forks: List[ForkPoint] = []
    crashes: List[CrashRecord] = []
    for line in text.splitlines():
        if not line or line[0] not in "HFTSCXK" or len(line) < 2 or line[1] != "\t":
            continue
        kind, parts = line[0], line.split("\t")[1:]
        kv = _fields(parts)
        d = dict(kv)
        try:
            if kind == "H":
                pid = int(d["pid"])
                # an exec in the same pid writes a new hello: the last one is the image that ran
                hellos[pid] = d
            elif kind == "F":
                frames = tuple(parse_frame(x) for x in d.get("frames", "").split("|") if x)
                caller = parse_frame(d["caller"])
                failures.append(InjectedFailure(d["fn"], int(d["size"]), int(d["index"]), int(d["pid"]),
                                                int(d.get("tid", d["pid"])), d.get("exe", ""), caller,
                                                user_frame(frames or (caller,)), frames))
            elif kind == "T":
                frames = tuple(parse_frame(x) for x in d.get("frames", "").split("|") if x)
                traces.append(TracedCall(int(d["pid"]), d["fn"], int(d["size"]), int(d["index"]), frames))
            elif kind in "SC":
                forks.append(ForkPoint(int(d["index"]), int(d["child"]) if "child" in d else None,
                                       int(d["status"]) if "status" in d else None,
                                       d.get("timed_out") == "1", d.get("reason")))
            elif kind == "K":
                frames = tuple(parse_frame(x) for x in d.get("frames", "").split("|") if x)
                crashes.append(CrashRecord(int(d["pid"]), int(d["signal"]), int(d.get("addr", "0"), 16), frames))
            elif kind == "X":
                calls, counted, failed = {}, {}, {}
                for k, v in kv:
                    if k == "fn":
                        name, c, n, f = v.split(":")
                        calls[name], counted[name], failed[name] = int(c), int(n), int(f)
                exits[int(d["pid"])] = {"calls": calls, "counted": counted, "failed": failed,
                                        "allocs": int(d["allocs"]), "frees": int(d["frees"]),
                                        "role": d.get("role", "")}
        except (KeyError, ValueError):
            continue     # a line cut short by a crash mid-write
    processes = []
    for pid, h in hellos.items():
        x = exits.get(pid)
        role = h.get("role", "")
        processes.append(ProcessRecord(
            pid=pid, ppid=int(h.get("ppid", 0)), exe=h.get("exe", ""), role=role,
            injects=role in ("root", "tree", "each"), forward=h.get("forward", ""),
            exited_normally=x is not None,
            calls=dict(x["calls"]) if x else {}, counted=dict(x["counted"]) if x else {},
            failed=dict(x["failed"]) if x else {},
            counted_total=sum(x["counted"].values()) if x else 0,
            live_blocks=(x["allocs"] - x["frees"]) if x else None))
    return Records(processes, failures, traces, forks, exits, crashes)


# ---- symbolization --------------------------------------------------------------

def symbolize(frames: Iterable[Frame], timeout_s: float = 30.0) -> Dict[Tuple[str, int], Frame]:
    """``addr2line -f -i -C`` per module for every distinct frame. Frames whose
    module has no debug info keep function/location None (addr2line's ``??``)."""
    addr2line = _proc.which("addr2line")
    by_module: Dict[str, List[int]] = defaultdict(list)
    for f in frames:
        if f.module.startswith("/") and f.offset not in by_module[f.module]:
            by_module[f.module].append(f.offset)
    out: Dict[Tuple[str, int], Frame] = {}
    if addr2line is None:
        return out
    for module, offsets in by_module.items():
        if not os.path.exists(module):
            continue
        # offset-1: the return address points after the call instruction
        argv = [addr2line, "-f", "-i", "-C", "-a", "-e", module] + [f"{max(o - 1, 0):#x}" for o in offsets]
        res = _proc.run(argv, timeout=timeout_s, lc_all_c=True)
        if res.returncode != 0:
            continue
        current = None
        pending: List[str] = []
        results: Dict[int, Tuple[Optional[str], Optional[str]]] = {}

        def flush():
            if current is not None and len(pending) >= 2:
                # with -i the innermost inlined frame comes first; keep it
                fn, loc = pending[0], pending[1]
                results[current] = (None if fn == "??" else fn,
                                    None if loc.startswith("??") or loc.endswith(":?") else re.sub(r" \(discriminator \d+\)$", "", loc))

        for line in res.stdout.splitlines():
            if line.startswith("0x"):
                flush()
                current = int(line, 16) + 1
                pending = []
            else:
                pending.append(line.strip())
        flush()
        for off, (fn, loc) in results.items():
            out[(module, off)] = Frame(module, off, fn, loc)
    return out


def with_symbols(frame: Optional[Frame], table: Dict[Tuple[str, int], Frame]) -> Optional[Frame]:
    if frame is None:
        return None
    return table.get((frame.module, frame.offset), frame)


def symbolize_failures(failures: Sequence[InjectedFailure]) -> List[InjectedFailure]:
    todo = []
    for f in failures:
        todo.append(f.caller)
        todo.extend(f.frames)
    table = symbolize(todo)
    out = []
    for f in failures:
        frames = tuple(with_symbols(x, table) for x in f.frames)
        out.append(InjectedFailure(f.function, f.size, f.index, f.pid, f.tid, f.exe,
                                   with_symbols(f.caller, table), user_frame(frames or (with_symbols(f.caller, table),)),
                                   frames))
    return out
