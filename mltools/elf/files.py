"""What a file on disk is, for every part that walks directories (``elf scan``, ``doctor``).

One home for each fact:

- :func:`looks_like_elf`: the ELF magic;
- :func:`is_linker_script`: a ``libfoo.so`` that is a GNU ld script (text for
  the link editor, never opened by ld.so);
- :func:`is_extension_name` / :func:`is_tagged_extension_name`: a Python
  extension module by its file name;
- :func:`identical_groups`: files with the same bytes (size first, then sha256);
- :func:`walk_elf_candidates`: the one directory walker, with the two policies
  its callers need (a Python environment's ``sys.path``, or a build tree).
"""
from __future__ import annotations

import os
import re
import stat

from mltools._record import record, factory
from mltools._files import read_head, sha256_file
from mltools.findings import ItemError, require_some_processed

TYPE_CHECKING = False
if TYPE_CHECKING:     # annotations only: importing typing is a tenth of a one-file command
    from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

__all__ = ["ELFMAG", "looks_like_elf", "is_linker_script", "is_linker_script_file", "is_shared_object_name",
           "is_extension_name", "is_tagged_extension_name", "identical_groups", "IdenticalFiles",
           "ElfCandidate", "WalkResult", "walk_elf_candidates", "SITE", "TREE"]

ELFMAG = b"\x7fELF"


def looks_like_elf(path: str) -> bool:
    """True when the file starts with the ELF magic (a cheap pre-filter for scans)."""
    return read_head(path, 4) == ELFMAG


# GNU ld scripts: ``/* GNU ld script`` (glibc's libc.so), ``INPUT(libfoo.so.1)``
# (libncurses.so), ``GROUP ( ... )``, ``OUTPUT_FORMAT(...)``; always text.
_LD_SCRIPT = re.compile(rb"GNU ld script|\b(?:INPUT|GROUP|OUTPUT_FORMAT)\s*\(")
LD_SCRIPT_HEAD_BYTES = 1024


def is_linker_script(head: bytes) -> bool:
    """``head`` (the first bytes of a file) is a GNU ld script: for the linker, not the loader."""
    head = head[:LD_SCRIPT_HEAD_BYTES]
    return b"\0" not in head and _LD_SCRIPT.search(head) is not None


def is_linker_script_file(path: str) -> bool:
    return is_linker_script(read_head(path, LD_SCRIPT_HEAD_BYTES))


_SO_NAME = re.compile(r"\.so(\.\d+)*$|\.so\.")
# CPython ``.cpython-311-x86_64-linux-gnu.so``, the stable ABI ``.abi3.so``, PyPy ``.pypy39-pp73-...so``
_EXTENSION_TAG = re.compile(r"\.(cpython-[^.]+|pypy[^.]*|abi3)\.so$")


def is_shared_object_name(name: str) -> bool:
    """``libfoo.so``, ``libfoo.so.1.2``, ``foo.cpython-311-x86_64-linux-gnu.so``."""
    return _SO_NAME.search(os.path.basename(name)) is not None


def is_tagged_extension_name(name: str) -> bool:
    """An extension module named with its ABI tag: only a Python interpreter loads it."""
    return _EXTENSION_TAG.search(os.path.basename(name)) is not None


def is_extension_name(name: str) -> bool:
    """A file Python can import as an extension module: a tagged name, or a bare ``foo.so``
    that is not named like a library (Python's suffix list ends with plain ``.so``)."""
    base = os.path.basename(name)
    return is_tagged_extension_name(base) or (base.endswith(".so") and not base.startswith("lib"))


# --------------------------------------------------------------------------
# Identical files

@record
class IdenticalFiles:
    groups: Tuple[Tuple[str, Tuple[str, ...]], ...]   # (sha256, sorted paths), sorted by sha256
    digests: Mapping[str, str]                        # path -> sha256 of every file that was hashed


def identical_groups(paths: Iterable[str], *, jobs: Optional[int] = None) -> IdenticalFiles:
    """Files with the same bytes: only files that share a size are hashed (so the big ones,
    libtorch_cpu, are rarely read), each distinct file (device and inode) once, in ``jobs``
    threads. Names of one file (hard links) are identical without hashing twice. Empty and
    unreadable files are left out."""
    by_size: Dict[int, List[Tuple[str, tuple]]] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        if st.st_size:
            by_size.setdefault(st.st_size, []).append((p, (st.st_dev, st.st_ino)))
    to_hash: Dict[tuple, str] = {}                  # one path per distinct file
    for same in by_size.values():
        if len(same) > 1:
            for p, ident in same:
                to_hash.setdefault(ident, p)
    def digest(p: str) -> Optional[str]:
        try:
            return sha256_file(p)
        except OSError:
            return None
    from concurrent.futures import ThreadPoolExecutor

    work = sorted(to_hash.items(), key=lambda kv: kv[1])
    with ThreadPoolExecutor(max_workers=jobs or min(8, (os.cpu_count() or 1) + 2)) as pool:
        by_ident = dict(zip([ident for ident, _ in work], pool.map(digest, [p for _, p in work])))
    digests: Dict[str, str] = {}
    by_digest: Dict[str, List[str]] = {}
    for same in by_size.values():
        if len(same) < 2:
            continue
        for p, ident in same:
            d = by_ident.get(ident)
            if d is not None:
                digests[p] = d
                by_digest.setdefault(d, []).append(p)
    groups = tuple((d, tuple(sorted(ps))) for d, ps in sorted(by_digest.items()) if len(ps) > 1)
    return IdenticalFiles(groups, dict(sorted(digests.items())))


# --------------------------------------------------------------------------
# The walker

SITE = "site"     # the entries of a Python interpreter's sys.path (``doctor``)
TREE = "tree"     # build directories, unpacked wheels, system directories (``elf scan``)

_SKIP_DIRS = {"__pycache__", ".git", ".hg", ".svn"}
_SITE_DIR_NAMES = {"site-packages", "dist-packages"}
# Never ELF: skipped without opening (a scan of a torch venv meets 20k headers and sources).
_TEXT_SUFFIXES = frozenset(
    ".py .pyc .pyi .pyx .pxd .pxi .h .hh .hpp .hxx .cuh .inc .inl .c .cc .cpp .cxx .cu .txt .md .rst "
    ".json .yaml .yml .toml .cfg .ini .csv .typed .cmake .html .js .css .pem .proto .npz .npy .pkl "
    ".png .jpg .svg .gz .zip .whl .tar .xml .f90 .f .mod .ptx .cubin".split())


@record
class ElfCandidate:
    path: str            # as found under the walked dir (not resolved)
    root: str            # the walked dir (or file argument) it was found under
    is_extension: bool   # a Python extension module by its name (see is_extension_name)


@record
class WalkResult:
    candidates: Tuple[ElfCandidate, ...]              # sorted by path
    walked: Tuple[str, ...]                           # the top directories walked, each real one once
    aliases: Mapping[str, Tuple[str, ...]] = factory(dict)   # TREE: realpath -> symlinks
    unreadable: Tuple[ItemError, ...] = ()            # directories and files that could not be read
    missing: Tuple[ItemError, ...] = ()               # TREE: top-level paths that do not exist


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _magic(path: str, unreadable: List[ItemError]) -> bytes:
    """The first 4 bytes; a file that cannot be opened is noted as unreadable."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4)
    except OSError as exc:
        unreadable.append(ItemError(path, f"{path}: cannot read: {_why(exc)}"))
        return b""


def _dir_id(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def walk_elf_candidates(tops: Sequence[str], *, mode: str) -> WalkResult:
    """The files under ``tops`` that are, or claim to be, ELF objects.

    ``mode`` is the policy of the caller:

    - ``SITE`` (a ``sys.path``): tops that are not directories are ignored;
      each real directory is walked once however many entries lead to it
      (symlinked directories are followed once); a ``site-packages`` below a
      walked directory is left to its own sys.path entry; VCS and
      ``__pycache__`` directories are skipped. A candidate is named like a
      shared object, or has no dot in its name and an execute bit; it must
      start with the ELF magic, except a shared-object name that is not a
      linker script (a Git LFS pointer, a truncated download), which is kept
      so that it can be reported. Each file (device and inode) is listed once.
    - ``TREE`` (``elf scan``): tops may be files; a top that does not exist is
      listed in ``missing`` (an InputError when none exists); symlinked directories are not followed, and symlinks to
      files are recorded as aliases of their target; every regular file is a
      candidate unless its suffix says it is text or data (the caller reads
      its magic).

    Directories that cannot be listed (and, in SITE mode, candidate files that
    cannot be opened) are listed in ``unreadable``, never skipped in silence.
    """
    if mode == SITE:
        return _walk_site(tops)
    if mode == TREE:
        return _walk_tree(tops)
    raise ValueError(f"mode must be {SITE!r} or {TREE!r}, not {mode!r}")


def _walk_site(dirs: Sequence[str]) -> WalkResult:
    found: List[ElfCandidate] = []
    walked: List[str] = []
    unreadable: List[ItemError] = []
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
            except OSError as exc:
                unreadable.append(ItemError(d, f"{d}: cannot list: {_why(exc)}"))
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
                so_name = _SO_NAME.search(name) is not None
                if not so_name and "." in name:
                    continue           # .py, .pyc, .txt, ...: not worth a stat
                try:
                    st = e.stat()
                except OSError:
                    continue
                if not so_name and not st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
                    continue
                file_id = (st.st_dev, st.st_ino)
                if file_id in seen_files:
                    continue
                before = len(unreadable)
                if _magic(e.path, unreadable) != ELFMAG:
                    if len(unreadable) > before:
                        continue           # reported as unreadable
                    # a shared-object name without ELF inside is kept: the caller reports
                    # it, as ld.so would refuse it
                    if not so_name or is_linker_script_file(e.path):
                        continue
                seen_files.add(file_id)
                found.append(ElfCandidate(e.path, top, is_extension_name(name)))
    found.sort(key=lambda c: c.path)
    return WalkResult(tuple(found), tuple(walked), unreadable=tuple(sorted(unreadable, key=lambda u: u.path)))


def _walk_tree(paths: Sequence[str]) -> WalkResult:
    files: Dict[str, str] = {}                  # path -> the top it was found under
    aliases: Dict[str, List[str]] = {}
    unreadable: List[ItemError] = []
    missing: List[ItemError] = []

    def plausible(name: str) -> bool:
        return is_shared_object_name(name) or os.path.splitext(name)[1] not in _TEXT_SUFFIXES

    def visit(d: str, top: str) -> None:
        try:
            it = os.scandir(d)
        except OSError as exc:
            unreadable.append(ItemError(d, f"{d}: cannot list: {_why(exc)}"))
            return
        with it:
            for e in it:
                try:
                    if e.is_symlink():
                        if plausible(e.name):
                            real = os.path.realpath(e.path)
                            if os.path.isfile(real):
                                aliases.setdefault(real, []).append(e.path)
                    elif e.is_dir(follow_symlinks=False):
                        visit(e.path, top)
                    elif e.is_file(follow_symlinks=False):
                        if plausible(e.name):
                            files.setdefault(e.path, top)
                except OSError:
                    continue

    walked = []
    for top in paths:
        if not os.path.lexists(top):
            missing.append(ItemError(top, f"{top}: no such file or directory"))
            continue
        if os.path.isfile(top):
            real = os.path.realpath(top)
            files.setdefault(real, real)
            if real != os.path.abspath(top):
                aliases.setdefault(real, []).append(os.path.abspath(top))
        else:
            walked.append(os.path.abspath(top))
            visit(os.path.abspath(top), os.path.abspath(top))
    require_some_processed(missing, len(paths), "paths")
    cands = tuple(ElfCandidate(p, files[p], is_extension_name(p)) for p in sorted(files))
    return WalkResult(cands, tuple(walked), {k: tuple(v) for k, v in aliases.items()},
                      tuple(sorted(unreadable, key=lambda u: u.path)), tuple(missing))
