"""malloc-fail's own records (``F`` an injected failure, ``T`` a traced counted call)
and the symbolized call sites built from them. The channel and the records both
shims write are in :mod:`mltools.preload.records`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Optional, Tuple

from mltools.preload.records import (Frame, ProcessRecord, Records, parse_frame, parse_frames,
                                     user_frame)

__all__ = ["InjectedFailure", "TracedCall", "failures_of", "traces_of", "live_blocks", "live_blocks_at_exit"]


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
class TracedCall:
    pid: int
    function: str
    size: int
    index: int
    frames: Tuple[Frame, ...]


def failures_of(records: Records) -> List[InjectedFailure]:
    out = []
    for d in records.of_kind("F"):
        try:
            frames = parse_frames(d.get("frames", ""))
            caller = parse_frame(d["caller"])
            out.append(InjectedFailure(d["fn"], int(d["size"]), int(d["index"]), int(d["pid"]),
                                       int(d.get("tid", d["pid"])), d.get("exe", ""), caller,
                                       user_frame(frames or (caller,)), frames))
        except (KeyError, ValueError):
            continue
    return out


def traces_of(records: Records) -> List[TracedCall]:
    out = []
    for d in records.of_kind("T"):
        try:
            out.append(TracedCall(int(d["pid"]), d["fn"], int(d["size"]), int(d["index"]),
                                  parse_frames(d.get("frames", ""))))
        except (KeyError, ValueError):
            continue
    return out


def live_blocks(process: ProcessRecord) -> Optional[int]:
    """Blocks handed out and not freed when the process exited (None without an exit record)."""
    return live_blocks_at_exit(process.exit_values) if process.exited_normally else None


def live_blocks_at_exit(values: Mapping[str, int]) -> Optional[int]:
    """The same from the numbers of an X record (None when it has no allocs/frees)."""
    if "allocs" not in values or "frees" not in values:
        return None
    return values["allocs"] - values["frees"]
