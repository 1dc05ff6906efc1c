"""The folder a target writes (``--state DIR``): copied once, put back before every run.

The copy lives in the run's private folder. Putting it back keeps DIR itself
(its inode: a shell or a process may have it as its working directory) and
replaces what is inside: entries the run added are removed, changed or
removed ones come back with their contents, modes and times.
"""
from __future__ import annotations

import os
import shutil
import stat

from mltools.errors import InputError


def _writable_then_retry(func, path, _exc_info) -> None:
    """rmtree's onerror: a read-only folder the run made still goes."""
    parent = os.path.dirname(path)
    try:
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        func(path)
    except OSError:
        pass


def _clear(path: str) -> None:
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, onerror=_writable_then_retry)
        else:
            try:
                os.unlink(p)
            except PermissionError:
                _writable_then_retry(os.unlink, p, None)


class StateFolder:
    """``folder`` (absolute) as it was when this object was made."""

    def __init__(self, folder: str, private: str, name: str = "state-copy"):
        if not os.path.isdir(folder):
            raise InputError(f"--state {folder}: not a folder")
        self.folder = folder
        self.copy = os.path.join(private, name)
        try:
            shutil.copytree(folder, self.copy, symlinks=True)
        except (OSError, shutil.Error) as exc:
            raise InputError(f"--state {folder}: cannot copy it ({exc})") from None
        self._mode = stat.S_IMODE(os.stat(folder).st_mode)

    def restore(self) -> None:
        """Put the folder back as it was (its own inode kept)."""
        if not os.path.isdir(self.folder):
            if os.path.lexists(self.folder):
                os.unlink(self.folder)
            os.mkdir(self.folder)
        os.chmod(self.folder, self._mode | stat.S_IWUSR | stat.S_IXUSR)
        _clear(self.folder)
        shutil.copytree(self.copy, self.folder, symlinks=True, dirs_exist_ok=True)
        os.chmod(self.folder, self._mode)

    def snapshot(self, name: str) -> "StateFolder":
        """A copy of the folder as it is now (for the fork point of a sweep)."""
        return StateFolder(self.folder, os.path.dirname(self.copy), name)
