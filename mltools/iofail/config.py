"""What to fail, and how the target is run and checked, as frozen dataclasses."""
from __future__ import annotations

import errno as errno_mod
import os
import shlex
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from mltools.errors import UsageError

#: The call families the shim can fail, in the shim's bit order (csrc/iofail/iofail.c).
FAMILIES: Tuple[str, ...] = ("write", "pwrite", "writev", "pwritev", "sendfile", "copy_file_range", "fsync",
                             "fdatasync", "close", "rename", "open", "ftruncate", "fallocate", "mkdir", "fwrite",
                             "fflush", "fclose")
#: The errors a full or failing disk gives (any errno name or number is accepted too).
COMMON_ERRORS = ("ENOSPC", "EIO", "EDQUOT", "EINTR")
SCOPES = ("root", "tree", "each")


def parse_errno(text: str) -> Tuple[str, int]:
    """``ENOSPC`` / ``enospc`` / ``28`` -> (name, number)."""
    t = text.strip()
    if t.isdigit():
        n = int(t)
        if n <= 0:
            raise UsageError("--errno must be a positive error number")
        return errno_mod.errorcode.get(n, str(n)), n
    n = getattr(errno_mod, t.upper(), None)
    if not isinstance(n, int) or not t.upper().startswith("E"):
        raise UsageError(f"unknown error {text!r} for --errno (e.g. {', '.join(COMMON_ERRORS)})")
    return t.upper(), n


@dataclass(frozen=True)
class IoFailSpec:
    """Which eligible calls fail. Indices are 1-based and count eligible calls only:
    those of the chosen families (``only``) on files whose absolute path matches
    ``path`` (a glob; ``*`` also matches ``/``).

    ``after=N``: the first N eligible calls succeed and every later one fails
    (``count`` limits how many); ``fail_at=N``: only the N-th (``count`` K: the
    N-th up to the (N+K-1)-th). With neither the run only counts. A failure
    returns ``errno_name`` (ENOSPC by default); ``short_write`` makes a failing
    write-family call write half of its bytes and return that count instead.
    """
    after: Optional[int] = None
    fail_at: Optional[int] = None
    count: Optional[int] = None
    only: Tuple[str, ...] = ()
    path: Optional[str] = None
    errno_name: str = "ENOSPC"
    short_write: bool = False

    def __post_init__(self) -> None:
        if self.after is not None and self.fail_at is not None:
            raise UsageError("choose one of --after and --fail-at")
        if self.after is not None and self.after < 0:
            raise UsageError("--after must be 0 or more")
        if self.fail_at is not None and self.fail_at < 1:
            raise UsageError("--fail-at counts from 1")
        if self.count is not None and self.count < 1:
            raise UsageError("--count must be 1 or more")
        bad = [f for f in self.only if f not in FAMILIES]
        if bad:
            raise UsageError(f"unknown call family {bad[0]!r} in --only (known: {', '.join(FAMILIES)})")
        if self.path is not None and not os.path.isabs(self.path):
            raise UsageError("the --path glob must be absolute here (the command makes it so)")
        parse_errno(self.errno_name)

    @property
    def injects(self) -> bool:
        return self.after is not None or self.fail_at is not None

    @property
    def errno_number(self) -> int:
        return parse_errno(self.errno_name)[1]

    def first_index(self) -> Optional[int]:
        if self.after is not None:
            return self.after + 1
        return self.fail_at

    def shim_env(self) -> Dict[str, str]:
        env: Dict[str, str] = {"MLTOOLS_IOF_ERRNO": str(self.errno_number)}
        first = self.first_index()
        if first is not None:
            env["MLTOOLS_IOF_FIRST"] = str(first)
        count = self.count if self.count is not None else (1 if self.fail_at is not None else None)
        if count is not None:
            env["MLTOOLS_IOF_COUNT"] = str(count)
        if self.only:
            env["MLTOOLS_IOF_FUNCS"] = str(sum(1 << FAMILIES.index(f) for f in set(self.only)))
        if self.path:
            env["MLTOOLS_IOF_PATH"] = self.path
        if self.short_write:
            env["MLTOOLS_IOF_SHORT"] = "1"
        return env

    def cli_args(self) -> Tuple[str, ...]:
        """The io-fail options that reproduce this spec."""
        out = []
        for name in ("after", "fail_at", "count"):
            value = getattr(self, name)
            if value is not None:
                out += [f"--{name.replace('_', '-')}", str(value)]
        if self.only:
            out += ["--only", ",".join(self.only)]
        if self.path:
            out += ["--path", self.path]
        if self.errno_name != "ENOSPC":
            out += ["--errno", self.errno_name]
        if self.short_write:
            out.append("--short-write")
        return tuple(out)


@dataclass(frozen=True)
class IoRunOptions:
    """How the target is run and what is checked afterwards."""
    scope: str = "root"
    target_exe: Optional[str] = None
    timeout_s: float = 600.0
    max_records: int = 64
    check: Tuple[str, ...] = ()            # argv of the check (exit 0: what is on disk is good)
    check_timeout_s: float = 600.0
    state_dir: Optional[str] = None        # put back as it was before each run (absolute)
    extra_env: Tuple[Tuple[str, str], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise UsageError(f"--scope must be one of {', '.join(SCOPES)}")
        if self.timeout_s <= 0 or self.check_timeout_s <= 0:
            raise UsageError("timeouts must be positive")
        if self.state_dir is not None and not os.path.isabs(self.state_dir):
            raise UsageError("--state must be absolute here (the command makes it so)")

    @property
    def check_text(self) -> Optional[str]:
        return shlex.join(self.check) if self.check else None
