"""Finding the ELF files of an environment: site dirs and ``--path`` dirs.

Shared objects are found by name (``*.so``, ``*.so.N``), other executables by
their mode bits; either way the first four bytes must be the ELF magic. Each
real directory is walked once, however many sys.path entries lead to it.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from typing import Iterable, List, Set, Tuple

_SO_NAME = re.compile(r"\.so(\.\d+)*$|\.so\.")
_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn"}
_SITE_DIR_NAMES = {"site-packages", "dist-packages"}
ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class ElfCandidate:
    path: str            # as found under the walked dir (not resolved)
    root: str            # the walked dir it was found under
    is_extension: bool   # a Python extension module (imported by name)


def is_extension_name(name: str) -> bool:
    """``foo.cpython-311-x86_64-linux-gnu.so``, ``foo.abi3.so`` or a bare ``foo.so`` module."""
    if re.search(r"\.(cpython|pypy)[^.]*\.so$|\.abi3\.so$", name):
        return True
    return name.endswith(".so") and not name.startswith("lib")


def _has_elf_magic(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == ELF_MAGIC
    except OSError:
        return False


def _is_linker_script(path: str) -> bool:
    """``libfoo.so`` can be a GNU ld script (``INPUT(...)``): for the link editor, never loaded."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(256).lstrip()
    except OSError:
        return False
    return head.startswith((b"/* GNU ld script", b"INPUT(", b"GROUP(", b"OUTPUT_FORMAT("))


def _dir_id(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def walk_elf_files(dirs: Iterable[str]) -> Tuple[List[ElfCandidate], List[str]]:
    """Every ELF file under ``dirs`` (and every ``*.so`` that should be one) and the dirs
    actually walked (each real directory once).

    Nested site dirs (a ``site-packages`` below a walked stdlib dir) are left to
    their own sys.path entry. Symlinked directories are followed once.
    """
    found: List[ElfCandidate] = []
    walked: List[str] = []
    seen_dirs: Set[tuple] = set()
    seen_files: Set[tuple] = set()
    tops = [d for d in dirs if d and os.path.isdir(d)]
    top_ids = {_dir_id(d) for d in tops}
    for top in tops:
        top_id = _dir_id(top)
        if top_id in seen_dirs:
            continue
        walked.append(top)
        seen_dirs.add(top_id)
        stack = [top]
        while stack:
            d = stack.pop()
            try:
                entries = list(os.scandir(d))
            except OSError:
                continue
            for e in entries:
                name = e.name
                try:
                    if e.is_dir():
                        if name in _SKIP_DIRS or name in _SITE_DIR_NAMES:
                            continue   # not on sys.path, or walked as its own sys.path entry
                        st = e.stat()
                        dir_id = (st.st_dev, st.st_ino)
                        if dir_id in seen_dirs or dir_id in top_ids:
                            continue
                        seen_dirs.add(dir_id)
                        stack.append(e.path)
                        continue
                    if not e.is_file():
                        continue
                except OSError:
                    continue
                if _SO_NAME.search(name):
                    pass
                elif "." in name:
                    continue           # .py, .pyc, .txt, ...: not worth a stat
                try:
                    st = e.stat()
                except OSError:
                    continue
                if not _SO_NAME.search(name) and not st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
                    continue
                file_id = (st.st_dev, st.st_ino)
                if file_id in seen_files:
                    continue
                if not _has_elf_magic(e.path):
                    # a shared-object name without ELF inside (a Git LFS pointer, a truncated
                    # download) is kept: the static pass reports it, as ld.so would refuse it
                    if not _SO_NAME.search(name) or _is_linker_script(e.path):
                        continue
                seen_files.add(file_id)
                found.append(ElfCandidate(e.path, top, is_extension_name(name)))
    found.sort(key=lambda c: c.path)
    return found, walked
