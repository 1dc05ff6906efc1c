"""What to fail, as a frozen dataclass, and its translation into the shim's environment."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from mltools.errors import UsageError

#: The allocation functions the shim interposes, in the shim's bit order.
FUNCTIONS: Tuple[str, ...] = ("malloc", "calloc", "realloc", "reallocarray", "posix_memalign",
                              "aligned_alloc", "memalign", "valloc", "pvalloc")
SCOPES = ("root", "tree", "each")
FORWARDS = ("libc", "next")


@dataclass(frozen=True)
class FailSpec:
    """Which counted calls fail. Indices are 1-based.

    ``after=N``: the first N counted calls succeed and every later one fails
    (``count`` limits how many). ``fail_at=N``: only the N-th fails (``count``
    K: the N-th up to the (N+K-1)-th). ``probability=P``: each counted call
    fails with probability P, decided by a hash of (seed, index), so a run is
    reproducible; ``count`` caps the failures. With none of them the run only
    counts. Filters (``min_size``, ``max_size``, ``only``) choose which calls
    are counted at all.
    """
    after: Optional[int] = None
    fail_at: Optional[int] = None
    count: Optional[int] = None
    probability: Optional[float] = None
    seed: int = 0
    min_size: int = 0
    max_size: Optional[int] = None
    only: Tuple[str, ...] = ()
    per_thread: bool = False

    def __post_init__(self) -> None:
        modes = [m for m in ("after", "fail_at", "probability") if getattr(self, m) is not None]
        if len(modes) > 1:
            raise UsageError(f"choose one of --after, --fail-at and --probability (got {', '.join(modes)})")
        if self.after is not None and self.after < 0:
            raise UsageError("--after must be 0 or more")
        if self.fail_at is not None and self.fail_at < 1:
            raise UsageError("--fail-at counts from 1")
        if self.count is not None and self.count < 1:
            raise UsageError("--count must be 1 or more")
        if self.probability is not None and not 0.0 <= self.probability <= 1.0:
            raise UsageError("--probability must be between 0 and 1")
        if self.max_size is not None and self.max_size < self.min_size:
            raise UsageError("--max-size is smaller than --min-size")
        bad = [f for f in self.only if f not in FUNCTIONS]
        if bad:
            raise UsageError(f"unknown function {bad[0]!r} in --only (known: {', '.join(FUNCTIONS)})")

    @property
    def injects(self) -> bool:
        return any(getattr(self, m) is not None for m in ("after", "fail_at", "probability"))

    def first_index(self) -> Optional[int]:
        if self.after is not None:
            return self.after + 1
        if self.fail_at is not None:
            return self.fail_at
        if self.probability is not None:
            return 1
        return None

    def shim_env(self) -> Dict[str, str]:
        env: Dict[str, str] = {}
        first = self.first_index()
        if self.probability is not None:
            # fail when splitmix64(seed ^ splitmix64(index)) < threshold
            threshold = min(int(self.probability * 2.0 ** 64), 2 ** 64 - 1)
            env["MLTOOLS_MF_PROB_THRESHOLD"] = str(threshold)
            env["MLTOOLS_MF_SEED"] = str(self.seed % 2 ** 64)
        if first is not None:
            env["MLTOOLS_MF_FIRST"] = str(first)
        count = self.count
        if count is None and self.fail_at is not None:
            count = 1
        if count is not None:
            env["MLTOOLS_MF_COUNT"] = str(count)
        if self.min_size:
            env["MLTOOLS_MF_MIN_SIZE"] = str(self.min_size)
        if self.max_size is not None:
            env["MLTOOLS_MF_MAX_SIZE"] = str(self.max_size)
        if self.only:
            env["MLTOOLS_MF_FUNCS"] = str(sum(1 << FUNCTIONS.index(f) for f in set(self.only)))
        if self.per_thread:
            env["MLTOOLS_MF_PER_THREAD"] = "1"
        return env

    def cli_args(self) -> Tuple[str, ...]:
        """The malloc-fail options that reproduce this spec."""
        out = []
        for name in ("after", "fail_at", "count", "probability"):
            value = getattr(self, name)
            if value is not None:
                out += [f"--{name.replace('_', '-')}", str(value)]
        if self.probability is not None:
            out += ["--seed", str(self.seed)]
        if self.min_size:
            out += ["--min-size", str(self.min_size)]
        if self.max_size is not None:
            out += ["--max-size", str(self.max_size)]
        if self.only:
            out += ["--only", ",".join(self.only)]
        if self.per_thread:
            out.append("--per-thread")
        return tuple(out)


@dataclass(frozen=True)
class RunOptions:
    """How the target is run, independent of what fails."""
    scope: str = "root"
    forward: str = "libc"
    python_malloc: bool = False
    target_exe: Optional[str] = None
    timeout_s: float = 600.0
    max_records: int = 64
    extra_env: Tuple[Tuple[str, str], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise UsageError(f"--scope must be one of {', '.join(SCOPES)}")
        if self.forward not in FORWARDS:
            raise UsageError(f"--forward must be one of {', '.join(FORWARDS)}")
        if self.timeout_s <= 0:
            raise UsageError("--timeout must be positive")


def parse_size(text: str) -> int:
    """``4096``, ``64k``, ``1MB``, ``1MiB``, ``2G``: decimal units for kB/MB/GB,
    binary for k/K/KiB/M/MiB/G/GiB (as ``ls -h`` users expect)."""
    s = text.strip()
    units = {"": 1, "b": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024 ** 2, "mib": 1024 ** 2,
             "mb": 1000 ** 2, "g": 1024 ** 3, "gib": 1024 ** 3, "gb": 1000 ** 3}
    i = len(s)
    while i and not s[i - 1].isdigit():
        i -= 1
    number, unit = s[:i], s[i:].strip().lower()
    if not number.isdigit() or unit not in units:
        raise UsageError(f"not a size: {text!r} (examples: 4096, 64k, 1MB, 1MiB)")
    return int(number) * units[unit]
