"""Results kept between runs, keyed by the content of the file they are about.

``$XDG_CACHE_HOME/mltools/<kind>/`` (``~/.cache/mltools/<kind>/`` when the
variable is unset or not absolute, as the XDG spec says):

- ``v<version>/<sha256[:2]>/<sha256>.json``: one result per file content, so
  the same library in two environments, or shipped twice in one, is scanned
  once; a new ``version`` (a change of what is computed) starts afresh;
- ``stat/<dev>-<ino>-<size>-<mtime_ns>``: the sha256 of the file that had this
  identity, so a second run only stats files instead of hashing them (a file
  rewritten in place gets a new mtime and is hashed again).

Writes are atomic (a temporary file renamed into place), so concurrent runs
(one per node on a shared home directory) never read half a file; a cache that
cannot be written is simply not used.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

__all__ = ["cache_root", "ContentCache"]


def cache_root() -> str:
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not base or not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mltools")


def _write_atomic(path: str, text: str) -> bool:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
        return True
    except OSError:
        return False


class ContentCache:
    """JSON results by file content (sha256), with a stat index in front of the hashing."""

    def __init__(self, kind: str, version: int, root: Optional[str] = None):
        self.dir = os.path.join(root or cache_root(), kind)
        self.version = version

    def _result_path(self, sha: str) -> str:
        return os.path.join(self.dir, f"v{self.version}", sha[:2], sha + ".json")

    @staticmethod
    def _stat_key(st: os.stat_result) -> str:
        return f"{st.st_dev}-{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"

    def digest(self, path: str) -> str:
        """The file's sha256, from the stat index when its identity has not changed."""
        from mltools._files import sha256_file

        st = os.stat(path)
        index = os.path.join(self.dir, "stat", self._stat_key(st))
        try:
            with open(index) as fh:
                sha = fh.read().strip()
            if len(sha) == 64:
                return sha
        except OSError:
            pass
        sha = sha256_file(path)
        if os.stat(path).st_mtime_ns == st.st_mtime_ns:     # not rewritten while we read it
            _write_atomic(index, sha)
        return sha

    def get(self, sha: str) -> Optional[Any]:
        try:
            with open(self._result_path(sha)) as fh:
                value = json.load(fh)
        except (OSError, ValueError):
            return None
        return value

    def put(self, sha: str, value: Any) -> None:
        _write_atomic(self._result_path(sha), json.dumps(value, separators=(",", ":")))
