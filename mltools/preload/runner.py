"""One run of a target under a shim: the private folder, the environment, stdin, the records.

Everything a run needs lives in one private folder (``private_dir``: mode
0700, on tmpfs when there is room, removed however the run ends, Ctrl-C
included): the record channel, the shared state page, the bytes given as
stdin to every point of a sweep, the sweep children's stderr files.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from mltools import _proc
from mltools.errors import MltoolsError
from mltools.preload.records import (ProcessRecord, Records, create_channel, create_state_page, parse_records,
                                     read_channel)
from mltools.preload.symbols import crash_location
from mltools.preload.target import Target

_Row = TypeVar("_Row")

_SHM = "/dev/shm"
_SHM_MIN_FREE = 256 << 20


@dataclass(frozen=True)
class Shim:
    """What tells the two shims apart: their name, variables and library."""
    name: str               # "malloc-fail", "io-fail"
    env_prefix: str         # "MLTOOLS_MF_", "MLTOOLS_IOF_"
    library: str            # the shared object given in LD_PRELOAD


@contextlib.contextmanager
def private_dir(tool: str) -> Iterator[str]:
    """A folder of our own for a run or a sweep (removed at the end, interrupted or not)."""
    from mltools._lifecycle import temp_dir

    where = None
    try:
        if os.access(_SHM, os.W_OK) and shutil.disk_usage(_SHM).free >= _SHM_MIN_FREE:
            where = _SHM        # creating files on an overlay /tmp costs more than a fork (measured)
    except OSError:
        where = None
    with temp_dir(prefix=f"mltools-{tool}-", dir=where) as path:
        yield path


@dataclass(frozen=True)
class Stdin:
    """What the target reads on stdin: our own descriptor passed on (a single run),
    the same bytes for every run (a sweep), or nothing (/dev/null)."""
    fd: Optional[int] = None
    data: Optional[bytes] = None

    @contextlib.contextmanager
    def opened(self, folder: str) -> Iterator[Union[None, int, object]]:
        """The value for Popen's stdin. Bytes are given as a regular file (so a
        sweep's forked child can re-open it privately at its parent's offset)."""
        if self.data is None:
            yield self.fd
            return
        path = os.path.join(folder, "stdin")
        if not os.path.exists(path):
            with open(path, "wb") as fh:
                fh.write(self.data)
        with open(path, "rb") as fh:
            yield fh


@dataclass(frozen=True)
class RawRun:
    """A run's process result and the shim's records (not yet symbolized)."""
    argv: Tuple[str, ...]
    cwd: str
    env_set: Dict[str, str]              # what mltools added to the environment
    returncode: int                      # as Popen gives it: -N for signal N
    stdout: bytes
    stderr: bytes
    elapsed_s: float
    timed_out: bool
    records: Records

    @property
    def exit_status(self) -> int:
        """The shell's view: 128+N when killed by signal N."""
        return _proc.exit_status(self.returncode)


def shim_environment(shim: Shim, target: Target, channel: Mapping[str, str], extra: Mapping[str, str],
                     base_env: Optional[Mapping[str, str]] = None) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(full environment, the variables mltools set). The shim comes first in
    LD_PRELOAD (in RTLD_NEXT mode it must sit in front of ASan or jemalloc)."""
    env = {k: v for k, v in (os.environ if base_env is None else base_env).items()
           if not k.startswith(shim.env_prefix)}
    added: Dict[str, str] = {}
    old = env.get("LD_PRELOAD", "").strip()
    added["LD_PRELOAD"] = shim.library + (" " + old if old else "")
    added.update(channel)
    if target.match:
        added[shim.env_prefix + "TARGET"] = ",".join(target.match)
    if target.exclude:
        added[shim.env_prefix + "EXCLUDE"] = ",".join(target.exclude)
    added.update(extra)
    env.update(added)
    return env, added


_run_ids = itertools.count(1)


def run_under_shim(shim: Shim, argv: Sequence[str], target: Target, extra_env: Mapping[str, str], *,
                   folder: str, timeout_s: float, cwd: Optional[str] = None, stdin: Stdin = Stdin(),
                   base_env: Optional[Mapping[str, str]] = None, poll=None, on_start=None) -> RawRun:
    """Run ``argv`` (its program replaced by the target's path) once under ``shim``.
    ``folder`` is a private folder (:func:`private_dir`); ``poll(records_path)``,
    when given, is called about every 0.2 s while the target runs, and
    ``on_start(records_path)`` before it starts."""
    n = next(_run_ids)
    records_path = os.path.join(folder, f"records.{n}")
    state_path = os.path.join(folder, f"state.{n}")
    create_channel(records_path)
    create_state_page(state_path)
    if on_start is not None:
        on_start(records_path)
    try:
        channel = {shim.env_prefix + "RECORDS": records_path, shim.env_prefix + "STATE": state_path}
        env, added = shim_environment(shim, target, channel, extra_env, base_env)
        try:
            with stdin.opened(folder) as child_stdin:
                res = _proc.run([target.path, *argv[1:]], timeout=timeout_s, env=env, cwd=cwd, text=False,
                                stdin=child_stdin, poll=(lambda: poll(records_path)) if poll else None)
        except BaseException:
            if poll:
                poll(records_path)       # an interrupted sweep keeps what its children had finished
            raise
        lines, dropped = read_channel(records_path)
    finally:
        for p in (records_path, state_path):
            with contextlib.suppress(OSError):
                os.unlink(p)
    for key in (shim.env_prefix + "RECORDS", shim.env_prefix + "STATE"):
        added.pop(key, None)           # private paths, gone after the run
    return RawRun(tuple(argv), cwd or os.getcwd(), added, res.returncode, res.stdout,
                  res.stderr, res.elapsed_s, res.timed_out, parse_records(lines, dropped))


def run_plain(argv: Sequence[str], target: Target, *, folder: str, timeout_s: float,
              cwd: Optional[str] = None, stdin: Stdin = Stdin(),
              base_env: Optional[Mapping[str, str]] = None) -> _proc.ProcResult:
    """The same run without any shim (what the user would see)."""
    with stdin.opened(folder) as child_stdin:
        return _proc.run([target.path, *argv[1:]], timeout=timeout_s, cwd=cwd, text=False, stdin=child_stdin,
                         env=dict(os.environ if base_env is None else base_env))


def stdin_for_single_run(stream) -> Stdin:
    """Our stdin passed on to one run: the descriptor itself where there is one, else
    what the stream holds (an in-memory stream, as in tests)."""
    try:
        return Stdin(fd=stream.fileno())
    except (AttributeError, OSError, ValueError):
        pass
    return Stdin(data=_read_all(stream))


def stdin_for_sweep(stream) -> Stdin:
    """A sweep gives every point the same bytes: read them once (none when stdin is a terminal)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return Stdin(data=_read_all(stream))
    if os.isatty(fd):
        return Stdin()
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    return Stdin(data=b"".join(chunks))


def _read_all(stream) -> bytes:
    if stream is None:
        return b""
    raw = getattr(stream, "buffer", stream)
    try:
        data = raw.read()
    except (OSError, ValueError):
        return b""
    return data.encode() if isinstance(data, str) else (data or b"")


class ShimNotLoaded(MltoolsError):
    """The target ran without the shim: no handshake came back."""


def require_handshake(raw: RawRun, target: Target) -> None:
    """A run with no hello, or where no process ran the target, proves nothing."""
    lost = lost_shim_messages(raw.records)
    if not raw.records.processes:
        raise ShimNotLoaded(
            f"the shim did not load into {target.path} (no handshake): the result would prove "
            "nothing. Is it statically linked, setuid, or does it clear LD_PRELOAD?")
    if not any(p.injects for p in raw.records.processes):
        seen = ", ".join(sorted({os.path.basename(p.exe) for p in raw.records.processes}))
        why = f": {lost[0]}" if lost else "; name it with --target-exe"
        raise ShimNotLoaded(f"the shim loaded (into {seen}) but no process ran the target "
                            f"({target.description}){why}")


def lost_shim_messages(records: Records) -> Tuple[str, ...]:
    """One line per exec whose new image ran without the shim."""
    out = []
    for e in records.execs:
        if not e.keeps_shim:
            who = os.path.basename(e.exe) or "?"
            out.append(f"pid {e.pid} ({who}) ran {e.how} of {e.path} with an environment without the shim "
                       "(env -i, clearenv or an unset LD_PRELOAD): that program was not tested")
    return tuple(out)


def sum_counts(procs: Sequence[ProcessRecord], names: Sequence[str], row: Callable[[str, int, int, int], _Row],
               recorded: int) -> Tuple[Tuple[_Row, ...], int, int]:
    """One ``row(name, calls, counted, failed)`` per function, summed over ``procs``; the
    counted total; the failures injected (a process killed by a signal writes no X record:
    when the ``recorded`` F records are more, they count instead)."""
    sums = [(fn, sum(p.calls.get(fn, 0) for p in procs), sum(p.counted.get(fn, 0) for p in procs),
             sum(p.failed.get(fn, 0) for p in procs)) for fn in names]
    return (tuple(row(*s) for s in sums), sum(s[2] for s in sums),
            max(sum(s[3] for s in sums), recorded))


def report_fields(raw: RawRun, target: Target, injecting: Sequence[ProcessRecord]) -> Dict[str, object]:
    """The fields malloc-fail's and io-fail's run reports fill alike from a run: the
    target, how it ended (a timeout is exit status 124) and where an injecting process died."""
    crash_site, crash_frames = crash_location(raw.records, [p.pid for p in injecting])
    return dict(cwd=raw.cwd, program=target.path, target=target.description, environment_set=raw.env_set,
                exit_status=124 if raw.timed_out else raw.exit_status,
                signal=_proc.signal_name(-raw.returncode) if raw.returncode < 0 else None,
                timed_out=raw.timed_out, elapsed_s=round(raw.elapsed_s, 4), crash_site=crash_site,
                crash_frames=crash_frames, processes=tuple(raw.records.processes))


def dropped_notes(records: Records) -> Tuple[str, ...]:
    if not records.dropped:
        return ()
    return (f"{records.dropped} records did not fit the record file and were dropped",)
