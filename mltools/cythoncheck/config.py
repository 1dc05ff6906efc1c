"""``[tool.mltools.cython]`` in pyproject.toml, looked up from the checked paths upwards.

Keys (all optional): ``include-dirs`` (list, relative to the pyproject.toml),
``compile-time-env`` (table), ``cplus`` (bool), ``select`` / ``ignore`` (lists
of codes or prefixes), ``fail-on`` (as the option: a severity, codes, or none).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from mltools.errors import InputError, MissingDependencyError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from mltools.findings import FailOn

_KEYS = {"include-dirs", "compile-time-env", "cplus", "select", "ignore", "fail-on"}


@dataclass(frozen=True)
class FileConfig:
    path: Optional[str] = None
    include_dirs: Tuple[str, ...] = ()
    compile_time_env: Tuple[Tuple[str, object], ...] = ()
    cplus: bool = False
    select: Tuple[str, ...] = ()
    ignore: Tuple[str, ...] = ()
    fail_on: Optional[FailOn] = None        # parsed; None: not set (or set to "")


def find_pyproject(paths: Sequence[str]) -> Optional[str]:
    """The nearest pyproject.toml above the common parent of ``paths``."""
    absolute = [os.path.abspath(p) for p in paths if os.path.exists(p)]
    if not absolute:
        return None
    start = os.path.commonpath(absolute)
    if not os.path.isdir(start):
        start = os.path.dirname(start)
    cur = start
    while True:
        cand = os.path.join(cur, "pyproject.toml")
        if os.path.isfile(cand):
            return cand
        parent = os.path.dirname(cur)
        if parent == cur:
            return None
        cur = parent


def _str_list(value, key: str, where: str) -> Tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(f"{where}: {key} must be a list of strings")
    return tuple(value)


def load_config(paths: Sequence[str]) -> FileConfig:
    path = find_pyproject(paths)
    if path is None:
        return FileConfig()
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror})") from None
    if b"mltools" not in raw:
        return FileConfig()
    try:
        import tomllib
    except ImportError:   # Python < 3.11
        try:
            import tomli as tomllib   # type: ignore[no-redef]
        except ImportError:
            raise MissingDependencyError(f"{path} needs a TOML parser on this Python: pip install tomli") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML ({' '.join(str(exc).split())})") from None
    table = doc.get("tool", {}).get("mltools", {}).get("cython")
    if table is None:
        return FileConfig()
    where = f"{path} [tool.mltools.cython]"
    if not isinstance(table, dict):
        raise InputError(f"{where}: must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    base = os.path.dirname(path)
    env = table.get("compile-time-env", {})
    if not isinstance(env, dict):
        raise InputError(f"{where}: compile-time-env must be a table")
    cplus = table.get("cplus", False)
    if not isinstance(cplus, bool):
        raise InputError(f"{where}: cplus must be true or false")
    raw_fail_on = table.get("fail-on")
    fail_on = None
    if raw_fail_on is not None:
        from mltools.findings import parse_fail_on
        try:
            parsed = parse_fail_on(str(raw_fail_on))
        except ValueError as exc:
            raise InputError(f"{where}: fail-on: {exc}") from None
        fail_on = parsed if raw_fail_on else None      # fail-on = "" leaves the default
    return FileConfig(
        path=path,
        include_dirs=tuple(os.path.join(base, d) for d in _str_list(table.get("include-dirs", []), "include-dirs", where)),
        compile_time_env=tuple((str(k), v) for k, v in env.items()),
        cplus=cplus,
        select=_str_list(table.get("select", []), "select", where),
        ignore=_str_list(table.get("ignore", []), "ignore", where),
        fail_on=fail_on,
    )
