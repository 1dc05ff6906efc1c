"""A static dependency resolver that gives glibc ld.so's answer without running anything.

The rules (glibc 2.36, ``elf/dl-load.c``, ``elf/dl-deps.c``, ``elf/rtld.c``):

- Objects are mapped breadth-first over DT_NEEDED, after LD_PRELOAD,
  ``--preload`` and ``/etc/ld.so.preload``. A name is first compared with every
  object already loaded (the names it was requested by, its path, its SONAME):
  a match is reused and nothing is searched. A file already loaded under
  another name (same device and inode) is reused too.
- A name with a ``/`` is a path (``$ORIGIN`` etc. expanded, relative to the
  current directory). Otherwise, in order: DT_RPATH of the requesting object,
  of the object that loaded it, and so on up, then of the executable (all only
  while the requester has no DT_RUNPATH; an object with DT_RUNPATH contributes
  no RPATH); LD_LIBRARY_PATH (``:`` and ``;``, an empty element is the current
  directory); DT_RUNPATH of the requester only; ``/etc/ld.so.cache`` (entries in
  the system directories are refused under DF_1_NODEFLIB); the system
  directories (skipped under DF_1_NODEFLIB).
- In every directory, ``glibc-hwcaps/<level>/`` for each active level, then
  (glibc <= 2.36) the legacy ``tls``/platform subdirectories, then the directory.
- A candidate of the wrong ELF class or machine is skipped, and so is one the
  process may not open (EACCES); one that is not an ELF file, too short, or
  otherwise malformed stops the loader (fatal); any other open error (ELOOP...)
  ends that search list.
- ``$ORIGIN`` is the directory of the path an object was found under (symlinks
  not resolved), and for the executable the directory of its realpath.

Use one :class:`Resolver` for many files: it shares the ld.so cache, the
directory listings and the parsed ELF headers.
"""
from __future__ import annotations

import errno as _errno
import os
import re
import struct
from stat import S_ISLNK as _S_ISLNK

from mltools._record import record
from mltools.elf.ldcache import LdCache, read_ld_cache, read_ld_so_conf
from mltools.elf.ldso import (LoaderConfig, abi_for, expand_dst, loader_config, loader_config_for_root,
                              root_realpath, split_search_path)
from mltools.elf.reader import DF_1_PIE, ET_DYN, ET_EXEC, ElfFormatError, ElfInfo, read_elf
from mltools.errors import InputError, UsageError
from mltools.findings import Finding, Severity

TYPE_CHECKING = False
if TYPE_CHECKING:     # annotations only: importing typing is a tenth of a one-file command
    from typing import ClassVar, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "Candidate", "NearMiss", "Library", "DepTree", "DepTreeSet", "Resolver", "resolve_tree", "VIA_LABELS", "via_label",
    "ROOT_PLACEHOLDER", "template_of", "resolve_dlopen",
]

# What each ``via`` value means: the loader's own term (findings, search labels)
# and the short form the text views use.
VIA_LABELS: Dict[str, Tuple[str, str]] = {
    "rpath": ("DT_RPATH", "rpath"),
    "ld_library_path": ("LD_LIBRARY_PATH", "LD_LIBRARY_PATH"),
    "runpath": ("DT_RUNPATH", "runpath"),
    "ld.so.cache": ("ld.so.cache", "ld.so.cache"),
    "system_dir": ("system directory", "default path"),
    "path": ("path in DT_NEEDED", "direct"),
    "preload": ("preload", "preload"),
    "loaded": ("already loaded", "already loaded"),
    "interpreter": ("program interpreter", "interpreter"),
}


def via_label(via: str, short: bool = False) -> str:
    """The words for a ``via`` (or candidate ``source``) value; unknown values as they are."""
    labels = VIA_LABELS.get(via)
    return via if labels is None else labels[1 if short else 0]


@record
class Candidate:
    """One file the loader tries for a name, and what it made of it."""
    path: str
    outcome: str                 # "absent", "skipped", "fatal", "found"
    source: str                  # rpath, ld_library_path, runpath, ld.so.cache, system_dir, path
    reason: Optional[str] = None


@record
class NearMiss:
    path: str
    reason: str


@record
class Library:
    """One distinct object the loader maps (or would fail to find)."""
    soname: str                          # DT_SONAME, or the requested name when it has none / is missing
    path: Optional[str]                  # realpath; None when not found
    via: Optional[str]                   # see VIA_LABELS; None when not found
    needed_by: Tuple[str, ...]           # the `path` (or the root) of every object whose DT_NEEDED names it
    depth: int                           # breadth-first level: 1 for the root's own NEEDED
    found_as: Optional[str] = None       # the path as the loader opened it ($ORIGIN is its directory)
    requested_as: Tuple[str, ...] = ()   # DT_NEEDED / preload names it answered
    via_object: Optional[str] = None     # for rpath/runpath: whose DT_RPATH / DT_RUNPATH
    hwcaps_subdir: Optional[str] = None  # "glibc-hwcaps/x86-64-v3", "tls/x86_64"... when found in one
    needed: Tuple[str, ...] = ()         # its own DT_NEEDED names
    loader: Optional[str] = None         # the object whose DT_NEEDED (or preload) mapped it first
    error: Optional[str] = None          # why the loader fails on it (fatal candidate), if it does
    tried: Tuple[Candidate, ...] = ()    # for a missing or failing library: every file tried, in order
    near_misses: Tuple[NearMiss, ...] = ()

    @property
    def found(self) -> bool:
        return self.path is not None and self.error is None


@record
class DepTree:
    SCHEMA: ClassVar[str] = "mltools.elf.tree"
    SCHEMA_VERSION: ClassVar[int] = 1
    root: str
    libraries: Tuple[Library, ...]       # load order (breadth-first), one entry per distinct library
    findings: Tuple[Finding, ...]
    root_needed: Tuple[str, ...] = ()
    interpreter: Optional[str] = None
    context: Tuple[str, ...] = ()        # objects loaded before the root (main program, earlier dlopens)

    @property
    def missing(self) -> Tuple[Library, ...]:
        return tuple(lib for lib in self.libraries if lib.path is None)

    @property
    def failed(self) -> Tuple[Library, ...]:
        return tuple(lib for lib in self.libraries if not lib.found)

    @property
    def ok(self) -> bool:
        return not self.failed

    def by_soname(self) -> Dict[str, Library]:
        return {lib.soname: lib for lib in self.libraries}


@record
class DepTreeSet:
    """Several trees, for ``elf tree A B C --json``."""
    SCHEMA: ClassVar[str] = "mltools.elf.trees"
    SCHEMA_VERSION: ClassVar[int] = 1
    trees: Tuple[DepTree, ...]


# --- internal state --------------------------------------------------------------------------

class _Obj:
    """A link map: one object in the simulated namespace."""
    __slots__ = ("info", "found_as", "real", "names", "origin", "loader", "depth", "via", "via_object",
                 "hwcaps", "needed_by", "is_main", "context", "kind", "_rpath", "_runpath", "error",
                 "tried", "in_tree")

    def __init__(self, info: Optional[ElfInfo], found_as: str, real: Optional[str], origin: Optional[str],
                 loader: Optional["_Obj"], depth: int, via: Optional[str], kind: str = "lib"):
        self.info = info
        self.found_as = found_as
        self.real = real
        self.names: List[str] = []
        self.origin = origin
        self.loader = loader
        self.depth = depth
        self.via = via
        self.via_object: Optional[str] = None
        self.hwcaps: Optional[str] = None
        self.needed_by: List[str] = []
        self.is_main = False
        self.context = False
        self.kind = kind
        self._rpath = None
        self._runpath = None
        self.error: Optional[str] = None
        self.tried: Tuple[Candidate, ...] = ()
        self.in_tree = False

    @property
    def soname(self) -> Optional[str]:
        return self.info.soname if self.info is not None else None

    def ident(self) -> str:
        return self.real or self.found_as


_ALL = object()   # a directory that exists but cannot be listed: try every name


class Resolver:
    """Shared state for resolving many files: loader configuration, ld.so cache,
    directory listings and parsed ELF headers.

    It is a snapshot: files and directories are read once, so make a new
    Resolver to see changes on disk. Not thread-safe; use one per thread.
    """

    def __init__(self, *, root: Optional[str] = None, config: Optional[LoaderConfig] = None,
                 hwcaps_mask: Optional[Sequence[str]] = None, cache: Optional[LdCache] = None,
                 use_cache: bool = True):
        cfg = config or loader_config_for_root(root)
        self.config = cfg.with_hwcaps_mask(hwcaps_mask)
        self._hwcaps_mask = hwcaps_mask
        # the sysroot as a prefix of host paths: "" for the real root
        self.sysroot_prefix = "" if self.config.root in ("", "/") else self.config.root.rstrip("/")
        if cache is not None or not use_cache:
            self.cache = cache
        else:
            self.cache = read_ld_cache(self.sysroot_prefix + self.config.cache_path)
        self._use_cache = use_cache
        self._listing: Dict[str, object] = {}
        self._verdicts: Dict[str, tuple] = {}
        self._subdirs = tuple(f"glibc-hwcaps/{s}/" for s in self.config.hwcaps_subdirs) + tuple(
            s + "/" for s in self.config.legacy_subdirs) + ("",)
        self._conf_dirs: Optional[Tuple[str, ...]] = None
        self._searched_dirs: Dict[str, str] = {}   # every directory searched, with a label
        self._search_memo: Dict[tuple, tuple] = {}
        self._objmeta: Dict[tuple, Tuple[str, str]] = {}    # (real, origin) per found path
        self._realdirs: Dict[str, str] = {}                 # realpath per directory
        self._link_depth = 0
        self._etc_preload: Optional[Tuple[str, ...]] = None
        self._tree_memo: Dict[tuple, "DepTree"] = {}
        self._siblings: Dict[str, "Resolver"] = {self.config.abi: self}
        # with a sysroot: host directories of the files named outside it (see load_root)
        self._outside: List[str] = []

    def for_abi(self, abi: str, interp: Optional[str] = None) -> "Resolver":
        """The resolver of the ``abi`` loader in the same root, sharing what can be shared
        (an i386 program on an x86-64 host: the i386 loader, the same ld.so.cache file)."""
        sib = self._siblings.get(abi)
        if sib is None:
            cfg = loader_config(abi, self.config.root, interp)
            if cfg.cache_path == self.config.cache_path:     # the same file: parsed once
                sib = Resolver(config=cfg, hwcaps_mask=self._hwcaps_mask, cache=self.cache, use_cache=False)
            else:
                sib = Resolver(config=cfg, hwcaps_mask=self._hwcaps_mask, use_cache=self._use_cache)
            sib._use_cache = self._use_cache
            sib._siblings = self._siblings
            sib._outside = self._outside
            self._siblings[abi] = sib
        return sib

    def for_object(self, info: ElfInfo, path: str) -> "Resolver":
        """The resolver whose loader loads ``info`` (UsageError naming the loader it
        needs for a machine no modelled loader loads)."""
        if self.config.accepts(info.elf_class, info.machine):
            return self
        abi = abi_for(info.elf_class, info.machine, info.e_flags, info.interp, what=path)
        return self.for_abi(abi, info.interp)

    # -- trees of programs with the same needs, kept as templates (see resolve_tree) -------
    def memoized_tree(self, key: tuple) -> Optional["DepTree"]:
        return self._tree_memo.get(key)

    def remember_tree(self, key: tuple, template: "DepTree") -> None:
        self._tree_memo[key] = template

    # -- file system, with the sysroot applied ---------------------------------------------
    def host(self, path: str) -> str:
        """The host path of ``path`` as the target sees it (the sysroot prefixed; files
        named outside the sysroot, and what lies under their directories, stay host paths)."""
        prefix = self.sysroot_prefix
        if not prefix or not path.startswith("/"):
            return path
        for d in self._outside:
            if path.startswith(d) and (len(path) == len(d) or path[len(d)] == "/"):
                return path
        return prefix + path

    def add_outside(self, host_dir: str) -> None:
        d = host_dir.rstrip("/") or "/"
        if d != "/" and d not in self._outside:
            self._outside.append(d)

    def locate_input(self, p: str) -> Tuple[str, str]:
        """(host path, path as the target sees it) of a file named on the command line.

        With a sysroot, FILE may be a host path inside the root, a path as the
        target sees it (looked up in the root), or a host path outside the root:
        such a file is read where it lies, and its directory stays on the host
        (its ``$ORIGIN`` paths find its neighbours there); every other search
        (system directories, the cache, LD_LIBRARY_PATH, absolute RPATHs) is in
        the root.
        """
        prefix = self.sysroot_prefix
        if not prefix:
            return p, p
        ap = os.path.abspath(p)
        if ap.startswith(prefix + "/") and os.path.lexists(ap):
            return ap, ap[len(prefix):]
        if os.path.lexists(self.host(ap)) or not os.path.lexists(ap):
            return self.host(ap), ap
        self.add_outside(os.path.dirname(ap))
        self.add_outside(os.path.dirname(os.path.realpath(ap)))
        return ap, ap

    def _in_root(self, host_path: str) -> str:
        """With a sysroot, a host path whose symlinks lead out of the root (an absolute
        link) is resolved inside the root instead, as the target resolves it."""
        prefix = self.sysroot_prefix
        if not prefix or not host_path.startswith(prefix + "/"):
            return host_path
        real = self._realpath(host_path)
        if real == prefix or real.startswith(prefix + "/"):
            return host_path
        return root_realpath(prefix, host_path[len(prefix):])

    def _list(self, d: str):
        hit = self._listing.get(d, None)
        if hit is not None or d in self._listing:
            return hit
        try:
            names = frozenset(os.listdir(self._in_root(d) if self.sysroot_prefix else (d or ".")))
        except (FileNotFoundError, NotADirectoryError):
            names = None
        except OSError:
            names = _ALL if os.path.isdir(d or ".") else None
        self._listing[d] = names
        return names

    def _has(self, d: str, name: str) -> bool:
        names = self._list(d)
        return names is _ALL or (names is not None and name in names)

    def verify(self, path: str) -> tuple:
        """(outcome, ElfInfo|None, reason): what open_verify makes of ``path`` (a host path).

        outcome is "ok", "absent" (ENOENT/EACCES/ENOTDIR: the search goes on),
        "stop" (another open error: this search list ends), "skip" (wrong class or
        machine, foreign OS ABI note) or "fatal" (the loader gives up).
        """
        hit = self._verdicts.get(path)
        if hit is not None:
            return hit
        verdict = self._verify(self._in_root(path) if self.sysroot_prefix else path)
        self._verdicts[path] = verdict
        return verdict

    def _verify(self, path: str) -> tuple:
        cfg = self.config
        try:
            info = read_elf(path, truncated_ok=True)
        except ElfFormatError as exc:
            if exc.kind == "unreadable" and exc.errno in (_errno.ENOENT, _errno.EACCES, _errno.ENOTDIR, None):
                return ("absent", None, exc.reason)
            if exc.kind == "unreadable":
                return ("stop", None, exc.reason)
            return self._classify_bad(path, exc)
        except InputError as exc:          # vanished / dangling symlink
            return ("absent", None, exc.message)
        bad = header_verdict(info.ident, info.e_version, info.machine, info.type, info.phentsize_ok, cfg)
        if bad is not None:
            return (bad[0], info, bad[1])
        # open_verify: the PT_NOTE ABI tag
        if info.abi_note_os not in (None, 0):
            return ("skip", info, f"ABI note for another OS ({info.abi_note_os})")
        if (info.abi_note_kernel is not None and cfg.kernel_version is not None
                and info.abi_note_kernel > cfg.kernel_version):
            return ("skip", info, "needs a newer kernel ({}.{}.{})".format(*info.abi_note_kernel))
        # _dl_map_object_from_fd, once the search has chosen the file: every failure is fatal
        if info.type == ET_EXEC:
            return ("fatal", info, "cannot dynamically load executable")
        if not info.has_dynamic:
            return ("fatal", info, "object file has no dynamic section")
        if info.truncated:
            return ("fatal", info, f"the file is truncated ({info.truncated}): the loader dies of SIGBUS mapping it")
        if cfg.isa_level and info.x86_isa_needed and info.x86_isa_needed > cfg.isa_level:
            # sysdeps/x86/dl-prop.h: checked once mapped
            return ("fatal", info, f"CPU ISA level is lower than required (x86-64-v{info.x86_isa_needed}, "
                                   f"this CPU: x86-64-v{cfg.isa_level})")
        if info.flags_1 & DF_1_PIE:
            return ("fatal", info, "cannot dynamically load position-independent executable")
        return ("ok", info, None)

    def _classify_bad(self, path: str, exc: ElfFormatError) -> tuple:
        """What open_verify does with a file the reader refused (not ELF, truncated, ...)."""
        cfg = self.config
        if exc.kind == "directory":
            return ("fatal", None, "cannot read file data: Is a directory")
        try:
            with open(path, "rb") as fh:
                head = fh.read(64)
        except OSError as e:
            return ("absent", None, e.strerror)
        if len(head) < (64 if cfg.elf_class == 64 else 52):     # one read() of the header
            return ("fatal", None, "file too short")
        if head[:4] != b"\x7fELF":
            return ("fatal", None, exc.reason if exc.reason.startswith("invalid ELF header") else "invalid ELF header")
        if head[4] in (1, 2) and head[5] in (1, 2):
            e = "<" if head[5] == 1 else ">"
            etype, machine, version = struct.unpack_from(e + "HHI", head, 16)
            phentsize = struct.unpack_from(e + "H", head, 54 if head[4] == 2 else 42)[0]
            ok_size = phentsize == (56 if head[4] == 2 else 32)
        else:
            etype = machine = version = 0
            ok_size = False
        bad = header_verdict(head[:16], version, machine, etype, ok_size, cfg)
        if bad is not None:
            return (bad[0], None, bad[1])
        if exc.kind == "truncated" and exc.reason.startswith("program headers"):
            return ("fatal", None, f"cannot read file data ({exc.reason})")
        if exc.kind == "truncated":
            return ("fatal", None, f"the file is truncated ({exc.reason}): the loader dies of SIGBUS mapping it")
        return ("fatal", None, exc.reason)

    # -- search path pieces ------------------------------------------------------------------
    def expand_list(self, value: str, origin: Optional[str], seps: str = ":") -> Tuple[str, ...]:
        """fillin_rpath: DSTs expanded, trailing slashes dropped, duplicates removed; '' = cwd."""
        out: List[str] = []
        for el in split_search_path(value, seps):
            if el:
                d = expand_dst(el, origin, self.config)
                if not d:
                    continue
                while len(d) > 1 and d.endswith("/"):
                    d = d[:-1]
                if d != "/":
                    d = d + "/"
            else:
                d = ""
            if d not in out:
                out.append(d)
        return tuple(out)

    def rpath_dirs(self, obj: _Obj) -> Tuple[str, ...]:
        if obj._rpath is None:
            info = obj.info
            if info is None or info.rpath is None or info.runpath is not None or info.rpath == "":
                obj._rpath = ()
            else:
                obj._rpath = self.expand_list(info.rpath, obj.origin)
        return obj._rpath

    def runpath_dirs(self, obj: _Obj) -> Tuple[str, ...]:
        if obj._runpath is None:
            info = obj.info
            if info is None or not info.runpath:
                obj._runpath = ()
            else:
                obj._runpath = self.expand_list(info.runpath, obj.origin)
        return obj._runpath

    def _open_path(self, name: str, dirs: Sequence[str], source: str, cwd: str,
                   tried: List[Candidate], label: Optional[str] = None):
        """Try ``name`` in ``dirs``; returns (status, found_as, info, subdir).

        status: "found", "fatal" (found_as is the bad file), "stop" or "none".
        """
        for d in dirs:
            host_d = self.host(d) if d.startswith("/") else os.path.join(cwd, d)
            if self._list(host_d) is None:
                continue
            self._searched_dirs.setdefault(host_d.rstrip("/") or "/", label or via_label(source))
            stop = False
            for sub in self._subdirs:
                hd = host_d + sub if host_d else sub
                names = self._list(hd if hd else ".")
                if names is None:
                    continue
                cand = d + sub + name
                if names is not _ALL and name not in names:
                    tried.append(Candidate(cand, "absent", source))
                    stop = False             # open() failed with ENOENT
                    continue
                outcome, info, reason = self.verify(hd + name if hd else name)
                if outcome == "ok":
                    tried.append(Candidate(cand, "found", source))
                    return "found", cand, info, sub.rstrip("/") or None
                if outcome == "fatal":
                    tried.append(Candidate(cand, "fatal", source, reason))
                    return "fatal", cand, reason, None
                tried.append(Candidate(cand, "skipped" if outcome == "skip" else "absent", source, reason))
                # open_path gives up on this list when, after a directory, errno (set by its last
                # open) is neither ENOENT nor EACCES
                stop = outcome == "stop"
            if stop:
                return "stop", None, None, None
        return "none", None, None, None

    # -- one search, as _dl_map_new_object -------------------------------------------------
    def search(self, name: str, loader: _Obj, main: _Obj, env_dirs: Tuple[str, ...], cwd: str):
        """Returns (status, found_as, info_or_reason, via, via_object, subdir, tried)."""
        tried: List[Candidate] = []
        info = loader.info
        if info is None or info.runpath is None:
            chain = []
            seen_main = False
            lm: Optional[_Obj] = loader
            while lm is not None:
                dirs = self.rpath_dirs(lm)
                if dirs:
                    chain.append((dirs, lm))
                    seen_main |= lm is main
                lm = lm.loader
            if not seen_main and main is not None and main is not loader:
                dirs = self.rpath_dirs(main)
                if dirs:
                    chain.append((dirs, main))
        else:
            chain = []
        runpath = self.runpath_dirs(loader)
        nodeflib = bool(info is not None and info.nodeflib)
        key = (name, env_dirs, runpath, nodeflib, cwd)
        memo = self._search_memo.get(key) if not chain else None
        if memo is not None:
            return memo
        result = self._search(name, chain, env_dirs, runpath, nodeflib, cwd, tried, loader.ident())
        if not chain:
            self._search_memo[key] = result
        return result

    def _search(self, name, chain, env_dirs, runpath, nodeflib, cwd, tried, loader_ident=None):
        for dirs, owner in chain:
            st, found_as, x, sub = self._open_path(name, dirs, "rpath", cwd, tried, f"DT_RPATH of {owner.ident()}")
            if st in ("found", "fatal"):
                return (st, found_as, x, "rpath", owner.ident(), sub, tuple(tried))
            # "stop" ends this object's list only; the next RPATH is still tried
        if env_dirs:
            st, found_as, x, sub = self._open_path(name, env_dirs, "ld_library_path", cwd, tried)
            if st in ("found", "fatal"):
                return (st, found_as, x, "ld_library_path", None, sub, tuple(tried))
        if runpath:
            st, found_as, x, sub = self._open_path(name, runpath, "runpath", cwd, tried,
                                                   f"DT_RUNPATH of {loader_ident}")
            if st in ("found", "fatal"):
                return (st, found_as, x, "runpath", None, sub, tuple(tried))
        if self.cache is not None:
            entry = self.cache.lookup(name, self.config.hwcaps_subdirs, self._cache_flags())
            if entry is None:
                tried.append(Candidate(self.cache.path, "absent", "ld.so.cache", f"no entry for {name}"))
            else:
                refused = nodeflib and any(entry.path.startswith(d.rstrip("/") + "/")
                                           for d in self.config.system_dirs)
                if refused:
                    tried.append(Candidate(entry.path, "skipped", "ld.so.cache",
                                           "DF_1_NODEFLIB: cache entries in system directories are refused"))
                else:
                    outcome, info, reason = self.verify(self.host(entry.path))
                    if outcome == "ok":
                        tried.append(Candidate(entry.path, "found", "ld.so.cache"))
                        sub = f"glibc-hwcaps/{entry.hwcaps_subdir}" if entry.hwcaps_subdir else None
                        return ("found", entry.path, info, "ld.so.cache", None, sub, tuple(tried))
                    if outcome == "fatal":
                        tried.append(Candidate(entry.path, "fatal", "ld.so.cache", reason))
                        return ("fatal", entry.path, reason, "ld.so.cache", None, None, tuple(tried))
                    tried.append(Candidate(entry.path, "skipped" if outcome == "skip" else "absent",
                                           "ld.so.cache", reason))
        if not nodeflib:
            sysdirs = tuple(d if d == "/" else d + "/" for d in self.config.system_dirs)
            st, found_as, x, sub = self._open_path(name, sysdirs, "system_dir", cwd, tried)
            if st in ("found", "fatal"):
                return (st, found_as, x, "system_dir", None, sub, tuple(tried))
        return ("none", None, None, None, None, None, tuple(tried))

    def _cache_flags(self) -> Tuple[int, ...]:
        return self.config.cache_flags

    def etc_preload(self) -> Tuple[str, ...]:
        """The names in /etc/ld.so.preload (read once)."""
        if self._etc_preload is None:
            try:
                with open(self.host(self.config.preload_path)) as fh:
                    self._etc_preload = tuple(fh.read().split())
            except OSError:
                self._etc_preload = ()
        return self._etc_preload

    # -- near misses ------------------------------------------------------------------------
    def conf_dirs(self) -> Tuple[str, ...]:
        if self._conf_dirs is None:
            self._conf_dirs = read_ld_so_conf("/etc/ld.so.conf", root=self.config.root)
        return self._conf_dirs

    def near_misses(self, name: str, searched: Iterable[str], nodeflib: bool = False) -> Tuple[NearMiss, ...]:
        """Files of that name (or another version of it) the search did not take, and why.

        ``nodeflib``: the needing object has DF_1_NODEFLIB, so a cache entry in a
        system directory was refused rather than absent."""
        out: List[NearMiss] = []
        seen = set()
        searched = {s.rstrip("/") or "/" for s in searched}

        def add(path: str, reason: str) -> None:
            if path not in seen:
                seen.add(path)
                out.append(NearMiss(path, reason))

        for d, label in sorted(self._searched_dirs.items()):
            if d in searched:
                continue
            if self._has(d + "/", name) and os.path.exists(d + "/" + name):
                add(f"{d}/{name}", f"same name in a directory searched for another object ({label}), "
                                   "not for this one")
        cached = (self.cache.lookup(name, self.config.hwcaps_subdirs, self._cache_flags())
                  if self.cache is not None else None)
        if cached is not None and nodeflib:
            add(cached.path, "listed in the ld.so cache, but -z nodefaultlib (DF_1_NODEFLIB) of the needing "
                             "object refuses the cache's entries in system directories and the default "
                             "directories")
        for d in self.conf_dirs() if cached is None else ():
            hd = self.host(d)
            if hd.rstrip("/") in searched:
                continue
            if self._has(hd + "/", name) and os.path.exists(hd + "/" + name):
                add(f"{d}/{name}", "in a directory listed in ld.so.conf, but the ld.so cache lacks it "
                                   "(run ldconfig)")
        stem = name.split(".so", 1)[0] + ".so"
        if self.cache is not None:
            for e in self.cache.entries:
                if e.name != name and e.name.startswith(stem) and e.name != stem:
                    add(e.path, f"another version in the ld.so cache: {e.name}")
                elif e.name == name and e.flags not in self._cache_flags():
                    add(e.path, f"in the ld.so cache for another ABI ({e.description})")
        for d in sorted(searched):
            names = self._list(d + "/" if d != "/" else d)
            if names is None or names is _ALL:
                continue
            for other in sorted(names):
                if other != name and other.startswith(stem) and other != stem:
                    add(f"{d}/{other}", f"another version in a searched directory: {other}")
        for pattern_dir in self._ml_dirs():
            if self._has(pattern_dir + "/", name):
                add(f"{pattern_dir}/{name}", "in a directory no search path names")
        return tuple(out[:12])

    def _ml_dirs(self) -> List[str]:
        """Where ML libraries usually hide: CUDA toolkits, conda, pip's nvidia wheels."""
        import glob
        import sys
        pats = ["/usr/local/cuda*/lib64", "/usr/local/cuda*/lib", "/usr/local/cuda*/targets/*/lib",
                "/opt/conda/lib", "/usr/local/lib", "/usr/lib64", "/usr/local/lib64"]
        out = []
        for p in pats:
            out.extend(sorted(glob.glob(self.host(p))))
        if not self.sysroot_prefix:
            # pip's CUDA wheels (nvidia-cuda-runtime-cu12, ...) and torch's own libraries
            for sp in sorted(glob.glob(f"{sys.prefix}/lib/python3*/site-packages")):
                out.extend(sorted(glob.glob(f"{sp}/nvidia/*/lib")) + sorted(glob.glob(f"{sp}/torch/lib")))
        return out

    def _realpath(self, path: str) -> str:
        """os.path.realpath(path), with the realpath of each directory computed once.

        realpath(dir/base) is realpath(dir)/base when base is a plain name that is
        not a symlink; anything else takes os.path.realpath's own walk.
        """
        head, base = os.path.split(path)
        if not head.startswith("/") or base in ("", ".", "..") or "//" in path or "/." in head:
            return os.path.realpath(path)
        try:
            if _S_ISLNK(os.lstat(path).st_mode):
                # libfoo.so.1 -> libfoo.so.1.2.3 in the same directory: resolve the target the same
                # way (a link chain is short; a loop or a longer target takes realpath's walk)
                target = os.readlink(path)
                if "/" in target or target in (".", "..") or self._link_depth > 8:
                    return os.path.realpath(path)
                self._link_depth += 1
                try:
                    return self._realpath(self._real_dir(head) + "/" + target)
                finally:
                    self._link_depth -= 1
        except OSError:
            return os.path.realpath(path)
        return self._real_dir(head) + "/" + base

    def _real_dir(self, head: str) -> str:
        real_head = self._realdirs.get(head)
        if real_head is None:
            real_head = self._realdirs[head] = os.path.realpath(head)
            self._realdirs.setdefault(real_head, real_head)     # a link's target is looked up by its real directory
        return real_head if real_head != "/" else ""

    # -- the namespace ------------------------------------------------------------------------
    def new_object(self, info: ElfInfo, found_as: str, host_path: str, loader: Optional[_Obj], depth: int,
                 via: Optional[str], cwd: str, is_exe_origin: bool = False) -> _Obj:
        key = (found_as, host_path, is_exe_origin, None if host_path.startswith("/") else cwd)
        meta = self._objmeta.get(key)
        if meta is None:
            abs_found = host_path if host_path.startswith("/") else os.path.join(cwd, host_path)
            real = self._realpath(abs_found)
            if is_exe_origin:
                origin = os.path.dirname(real)
                if self.sysroot_prefix and origin.startswith(self.sysroot_prefix):
                    origin = origin[len(self.sysroot_prefix):] or "/"
            else:
                tf = found_as if found_as.startswith("/") else os.path.join(cwd, found_as)
                origin = os.path.dirname(tf) or "/"
            meta = self._objmeta[key] = (real, origin)
        return _Obj(info, found_as, meta[0], meta[1], loader, depth, via)


def header_verdict(ident: bytes, e_version: int, machine: int, etype: int, phentsize_ok: bool,
                   cfg: LoaderConfig) -> Optional[Tuple[str, str]]:
    """("skip" or "fatal", the loader's words) for an ELF header ``open_verify`` refuses,
    checked in its order (glibc 2.36 elf/dl-load.c); None for one it takes."""
    if ident[4:5] != (b"\x02" if cfg.elf_class == 64 else b"\x01"):
        cls = {1: "ELFCLASS32", 2: "ELFCLASS64"}.get(ident[4], f"class {ident[4]}")
        return ("skip", f"wrong ELF class: {cls}")
    if ident[5] != 1:                                   # every modelled loader is little-endian
        return ("fatal", "ELF file data encoding not little-endian")
    if ident[6] != 1:
        return ("fatal", "ELF file version ident does not match current one")
    osabi, abiversion = ident[7], ident[8]
    if osabi not in (0, 3):                             # ELFOSABI_SYSV, ELFOSABI_GNU
        return ("fatal", "ELF file OS ABI invalid")
    if abiversion and not (osabi == 3 and abiversion < 4):     # LIBC_ABI_MAX is 4 in 2.36
        return ("fatal", "ELF file ABI version invalid")
    if any(ident[9:16]):
        return ("fatal", "nonzero padding in e_ident")
    if e_version != 1:
        return ("fatal", "ELF file version does not match current one")
    if machine != cfg.machine:
        from mltools.elf.machines import machine_name
        return ("skip", f"wrong machine: {machine_name(machine)}")
    if etype not in (ET_DYN, ET_EXEC):
        return ("fatal", "only ET_DYN and ET_EXEC can be loaded")
    if not phentsize_ok:
        return ("fatal", "ELF file's phentsize not the expected size")
    return None


class _Order(list):
    """Objects in load order, with a set for membership tests."""

    def __init__(self, items=()):
        super().__init__(items)
        self.ids = {id(o) for o in self}

    def append(self, obj) -> None:
        if id(obj) not in self.ids:
            self.ids.add(id(obj))
            super().append(obj)

    def remove(self, obj) -> None:
        super().remove(obj)
        self.ids.discard(id(obj))

    def __contains__(self, obj) -> bool:
        return id(obj) in self.ids


class _Namespace:
    """The objects loaded so far, in order, with name and file-id lookups.

    ld.so walks its list and takes the first object whose names, path or
    SONAME match; registering every key once, in load order, gives the same
    answer in one dict lookup.
    """

    def __init__(self):
        self.objs: List[_Obj] = []
        self.by_id: Dict[tuple, _Obj] = {}
        self.by_name: Dict[str, _Obj] = {}

    def add(self, obj: _Obj) -> None:
        self.objs.append(obj)
        if obj.info is not None:
            self.by_id.setdefault(obj.info.file_id, obj)
            if obj.info.soname:
                self.by_name.setdefault(obj.info.soname, obj)
        self.by_name.setdefault(obj.found_as, obj)
        for n in obj.names:
            self.by_name.setdefault(n, obj)

    def alias(self, obj: _Obj, name: str) -> None:
        obj.names.append(name)
        self.by_name.setdefault(name, obj)

    def lookup(self, name: str) -> Optional[_Obj]:
        o = self.by_name.get(name)
        if o is not None and name not in o.names:
            o.names.append(name)
        return o


def check_loadable(info: ElfInfo, path: str) -> None:
    """InputError unless ``info`` is something ld.so can start or load (it has a dynamic section)."""
    if info.has_dynamic:
        if info.truncated:
            raise InputError(f"{path}: {info.truncated}")
        return
    if info.dynamic_size == 0:
        raise InputError(f"{path}: PT_DYNAMIC is empty (a separate debug-info file?): the loader refuses it "
                         "(object file has no dynamic section)")
    raise InputError(f"{path}: not a dynamic executable or shared object (no PT_DYNAMIC)")


def _env_dirs(resolver: Resolver, env: Mapping[str, str], main: _Obj) -> Tuple[str, ...]:
    llp = env.get("LD_LIBRARY_PATH")
    if not llp:
        return ()
    return resolver.expand_list(llp, main.origin, seps=":;")


def _preload_names(env: Mapping[str, str], preload: Sequence[str], resolver: Resolver,
                   use_etc_preload: bool) -> List[Tuple[str, str]]:
    names: List[Tuple[str, str]] = []
    for part in re.split(r"[ :]", env.get("LD_PRELOAD", "")):
        if part:
            names.append((part, "LD_PRELOAD"))
    for p in preload:
        for part in re.split(r"[ :]", p):
            if part:
                names.append((part, "--preload"))
    if use_etc_preload:
        names.extend((part, resolver.config.preload_path) for part in resolver.etc_preload())
    return names


def resolve_tree(path: str, *, env: Optional[Mapping[str, str]] = None, preload: Sequence[str] = (),
                 main: Optional[str] = None, loaded: Sequence[str] = (), root: Optional[str] = None,
                 hwcaps_mask: Optional[Sequence[str]] = None, cwd: Optional[str] = None,
                 use_etc_preload: bool = True, resolver: Optional[Resolver] = None, shared: bool = False) -> DepTree:
    """The libraries the loader maps for ``path``, in its order, each with where and why.

    ``path`` is the program (or library) to resolve. By default it is the main
    program, as ``ldd path`` sees it (preloads first). With ``main`` (e.g. the
    Python interpreter), ``main`` is started first with its preloads and
    dependencies, then every object in ``loaded`` is dlopen'ed in order (e.g.
    extensions imported earlier), and then ``path``: its NEEDED names are then
    matched against all of those first, and ``main``'s DT_RPATH applies to its
    searches, as when Python imports an extension.

    ``env`` supplies LD_LIBRARY_PATH and LD_PRELOAD (default: empty, not the
    caller's environment). ``resolver`` shares caches across calls (its root
    and hwcaps mask win over the arguments). Raises InputError/ElfFormatError
    when ``path`` itself cannot be read.

    ``shared``: when ``path`` resolves as an earlier program did (same NEEDED,
    search paths and flags: the resolver's memo), return that tree itself, with
    :data:`ROOT_PLACEHOLDER` as its root, instead of a copy naming ``path``
    (for writers of many trees, which put the root in the text).
    """
    r = resolver or Resolver(root=root, hwcaps_mask=hwcaps_mask)
    first = main or path
    host_p, _target = r.locate_input(first)
    info = read_elf(host_p, truncated_ok=True, notes=False)      # InputError / ElfFormatError name the problem
    check_loadable(info, first)
    r = r.for_object(info, first)
    walk = _Walk(r, path, dict(env or {}), cwd or os.getcwd())
    walk.read_first = (first, host_p, info)          # read once: it picked the loader, it starts the walk
    walk.shared = shared
    return walk.run(
        main=main, preload=preload, loaded=loaded, use_etc_preload=use_etc_preload)


def resolve_dlopen(name: str, caller: str, *, main: str, loaded: Sequence[str] = (),
                   env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                   use_etc_preload: bool = True, resolver: Optional[Resolver] = None) -> DepTree:
    """What ``dlopen(name)`` called from the library ``caller`` maps, as ld.so would.

    The process is ``main`` (e.g. the Python interpreter) with its preloads and
    dependencies, then every object of ``loaded`` dlopen'ed in order (a
    framework's preloads), then ``caller`` with its dependencies. A name that
    matches an object already loaded (its SONAME, a name it was loaded under or
    its path) returns that object (``via == "loaded"``); otherwise it is
    searched with the caller's DT_RPATH chain (when it has no DT_RUNPATH) and
    the main program's, LD_LIBRARY_PATH, the caller's DT_RUNPATH, the ld.so
    cache and the system directories. ``libraries[0]`` is the object dlopen
    returns (``path`` None when not found), the rest what it brings in.
    """
    r = resolver or Resolver()
    return _Walk(r, caller, dict(env or {}), cwd or os.getcwd()).run_dlopen(
        name, main=main, loaded=loaded, use_etc_preload=use_etc_preload)


class _Walk:
    """One resolution: the simulated process's namespace, and the tree of its root.

    The steps follow ld.so: the main program and its interpreter, the
    preloads, a breadth-first walk over DT_NEEDED; with a ``main`` other than
    the root, that process's objects and earlier dlopens come first.
    """

    def __init__(self, resolver: Resolver, path: str, env: Dict[str, str], cwd: str):
        self.r = resolver
        self.path = path
        self.env = env
        self.cwd = cwd
        self.ns = _Namespace()
        self.findings: List[Finding] = []
        self.missing: Dict[str, _Obj] = {}       # not-found names, searched again for the next requester
        self.root_reused: List[str] = []         # names that resolved to the root's own file
        self.tree_depth: Dict[int, int] = {}     # breadth-first level within the root's traversal
        self.main_obj: Optional[_Obj] = None
        self.root_obj: Optional[_Obj] = None
        self.interp_missing: Optional[_Obj] = None
        self.interp_obj: Optional[_Obj] = None
        self.interp_path: Optional[str] = None
        self.interp_verdict: tuple = ("absent", None, None)
        self.read_first: Optional[tuple] = None      # (path, host path, ElfInfo) already read
        self.shared = False
        self.env_dirs: Tuple[str, ...] = ()
        self.preload_names: List[Tuple[str, str]] = []

    def load_root(self, p: str, kind: str) -> _Obj:
        r = self.r
        host_p, found_as = r.locate_input(p)
        if self.read_first is not None and self.read_first[:2] == (p, host_p):
            info = self.read_first[2]
        else:
            info = read_elf(host_p, truncated_ok=True, notes=False)
            check_loadable(info, p)
        if not r.config.accepts(info.elf_class, info.machine):
            from mltools.elf.machines import machine_name
            raise UsageError(f"{p} is ELF{info.elf_class} {info.machine_name}, but the loader of this process "
                             f"({r.config.interpreter}) loads ELF{r.config.elf_class} "
                             f"{machine_name(r.config.machine)} objects only")
        exe = kind == "main" and info.interp is not None
        obj = r.new_object(info, found_as, host_p, None, 0, None, self.cwd, is_exe_origin=exe)
        obj.kind = kind
        obj.names.append(p)
        return obj

    def map_name(self, name: str, loader: _Obj, depth: int, traversal: List[_Obj]) -> Optional[_Obj]:
        """The object ``name`` resolves to for ``loader`` (mapped now if new), as _dl_map_object."""
        r, ns, cwd = self.r, self.ns, self.cwd
        existing = ns.lookup(name)
        if existing is not None:
            return existing
        # A name that was not found is searched again for the next requester
        # (ld.so skips its faked entries): another search path may find it.
        if "/" in name:
            expanded = expand_dst(name, loader.origin, r.config) if "$" in name else name
            tried: List[Candidate] = []
            if expanded is None:
                status, found_as, x, via, via_obj, sub = "none", None, None, "path", None, None
            else:
                host_p = r.host(expanded) if expanded.startswith("/") else os.path.join(cwd, expanded)
                outcome, info, reason = r.verify(host_p)
                status = {"ok": "found", "fatal": "fatal"}.get(outcome, "none")
                tried.append(Candidate(expanded, {"ok": "found", "fatal": "fatal", "skip": "skipped"}.get(
                    outcome, "absent"), "path", reason))
                found_as, x, via, via_obj, sub = expanded, (info if outcome == "ok" else reason), "path", None, None
            tried_t = tuple(tried)
        else:
            status, found_as, x, via, via_obj, sub, tried_t = r.search(name, loader, self.main_obj,
                                                                       self.env_dirs, cwd)
        if status == "found":
            info: ElfInfo = x
            same = ns.by_id.get(info.file_id)
            if same is not None:
                if same is self.main_obj:
                    self.root_reused.append(name)       # the tree then depends on the root's file
                ns.alias(same, name)
                return same
            host_found = r.host(found_as) if found_as.startswith("/") else found_as
            obj = r.new_object(info, found_as, host_found, loader, depth, via, cwd)
            obj.via_object = via_obj
            obj.hwcaps = sub
            obj.names.append(name)
            ns.add(obj)
            traversal.append(obj)
            return obj
        missing = self.missing
        if name in missing and missing[name].kind == ("fatal" if status == "fatal" else "missing"):
            return missing[name]
        obj = _Obj(None, found_as or name, None, None, loader, depth, None, kind="missing")
        obj.names.append(name)
        obj.tried = tried_t
        if status == "fatal":
            obj.kind = "fatal"
            obj.error = x
            obj.real = os.path.realpath(r.host(found_as) if found_as.startswith("/")
                                        else os.path.join(cwd, found_as))
            obj.via = via
            obj.via_object = via_obj
        missing[name] = obj
        traversal.append(obj)
        return obj

    def bfs(self, start: List[_Obj], traversal: List[_Obj], record: bool) -> None:
        """Breadth-first over DT_NEEDED from ``start``; ``record`` notes who needs whom (the tree)."""
        queue = list(start)
        i = 0
        seen = {id(o) for o in queue}
        by_name = self.ns.by_name
        tree_depth = self.tree_depth
        map_name = self.map_name
        while i < len(queue):
            obj = queue[i]
            i += 1
            if obj.info is None:
                continue
            who = (obj.ident() if obj is not self.root_obj else self.path) if record else None
            level = tree_depth.get(id(obj), 0) + 1
            for name in obj.info.needed:
                if not name and record:
                    self.empty_needed(obj)
                dep = by_name.get(name)              # already loaded: reused, nothing searched
                if dep is None:
                    dep = map_name(name, obj, obj.depth + 1, traversal)
                    if dep is None:
                        continue
                elif name not in dep.names:
                    dep.names.append(name)
                if record:
                    if id(dep) not in tree_depth:
                        tree_depth[id(dep)] = level
                    if who not in dep.needed_by:
                        dep.needed_by.append(who)
                    if (dep.via in ("rpath", "runpath") and dep.loader is not obj and not dep.context
                            and dep.kind not in ("missing", "fatal")):
                        self.check_order(name, obj, dep)
                if id(dep) not in seen and dep.kind not in ("missing", "fatal"):
                    seen.add(id(dep))
                    traversal.append(dep)        # an _Order: appends once
                    queue.append(dep)

    def empty_needed(self, obj: _Obj) -> None:
        from mltools.elf.inspect import empty_needed_finding

        who = obj.ident() if obj is not self.root_obj else self.path
        self.findings.append(empty_needed_finding(who, {"object": who}))

    def check_order(self, name: str, requester: _Obj, dep: _Obj) -> None:
        """LOAD_ORDER_DEPENDENT when ``requester``'s own search path would not find ``dep``."""
        st = self.r.search(name, requester, self.main_obj, self.env_dirs, self.cwd)
        if st[0] != "found":
            self.findings.append(Finding(
                "LOAD_ORDER_DEPENDENT", Severity.WARNING,
                f"{requester.ident() if requester is not self.root_obj else self.path} needs {name}, which its own "
                f"search path does not find: it resolves only because {dep.loader.ident() if dep.loader else 'another object'} "
                f"loaded {dep.found_as} first ({via_label(dep.via)})",
                fix="give the object its own DT_RUNPATH (e.g. $ORIGIN) or a path that finds the library",
                details={"requester": requester.ident(), "name": name, "provider": dep.real}))

    def start_process(self, main: str, preload: Sequence[str], use_etc_preload: bool) -> None:
        """Map the main program; find its interpreter (mapped by ``map_interpreter``) and the
        names to preload (mapped by ``map_preloads``)."""
        r, ns, cwd, env, findings = self.r, self.ns, self.cwd, self.env, self.findings
        main_obj = self.main_obj = self.load_root(main, "main")
        main_obj.is_main = True
        ns.add(main_obj)
        # The main program's link-map name is "" (rtld.c), so an empty DT_NEEDED
        # matches it: nothing is searched and nothing is loaded.
        ns.by_name.setdefault("", main_obj)

        self.interp_path = main_obj.info.interp or r.config.interpreter
        self.interp_verdict = r.verify(r.host(self.interp_path))
        self.env_dirs = _env_dirs(r, env, main_obj)
        for el in split_search_path(env["LD_LIBRARY_PATH"], ":;") if env.get("LD_LIBRARY_PATH") else ():
            if el == "":
                findings.append(Finding("EMPTY_PATH_ELEMENT", Severity.WARNING,
                                        "LD_LIBRARY_PATH has an empty element: the loader searches the current "
                                        f"directory ({cwd}) there", fix="remove the empty element",
                                        details={"variable": "LD_LIBRARY_PATH"}))
                break
        self.preload_names = _preload_names(env, preload, r, use_etc_preload)

    def map_interpreter(self) -> None:
        """The program interpreter is in the namespace from the start (when it is there)."""
        outcome, iinfo, _reason = self.interp_verdict
        if outcome == "ok":
            r = self.r
            interp_obj = self.interp_obj = r.new_object(iinfo, self.interp_path, r.host(self.interp_path), None, 0,
                                                        "interpreter", self.cwd)
            interp_obj.kind = "interpreter"
            interp_obj.names.append(self.interp_path)
            self.ns.add(interp_obj)

    def map_preloads(self) -> List[_Obj]:
        """The preloads, searched with the main program as the loader, in order."""
        ns, findings, main_obj = self.ns, self.findings, self.main_obj
        pre_objs: List[_Obj] = _Order()
        for pname, source in self.preload_names:
            before = len(ns.objs)
            dep = self.map_name(pname, main_obj, 1, pre_objs)
            if dep is None or dep.kind in ("missing", "fatal"):
                findings.append(Finding(
                    "PRELOAD_NOT_FOUND", Severity.WARNING,
                    f"object {pname!r} from {source} cannot be preloaded: ignored",
                    details={"name": pname, "source": source}))
                self.missing.pop(pname, None)
                if dep in pre_objs:
                    pre_objs.remove(dep)
                continue
            if len(ns.objs) > before:
                dep.via = "preload"
                dep.via_object = source
        for o in pre_objs:
            o.depth = 1
            self.tree_depth[id(o)] = 1
        return pre_objs

    def load_context(self, pre_objs: List[_Obj], loaded: Sequence[str]) -> None:
        """The process before the root: the main program's tree, then each ``loaded`` object
        dlopen'ed in order with its tree; all of it marked as context."""
        ns = self.ns
        ctx: List[_Obj] = _Order(pre_objs)
        self.bfs([self.main_obj] + pre_objs, ctx, False)
        for extra in loaded:
            try:
                lobj = self.load_root(extra, "dlopen")
            except (InputError, ElfFormatError) as exc:
                raise InputError(f"already-loaded object {extra}: {exc.message}") from None
            same = ns.by_id.get(lobj.info.file_id)
            if same is not None:
                continue
            lobj.origin = os.path.dirname(os.path.abspath(extra))
            ns.add(lobj)
            ctx.append(lobj)
            self.bfs([lobj], ctx, False)
        for o in ns.objs:
            o.context = True
        self.missing.clear()

    def dlopen_root(self, path: str) -> _Obj:
        """``path`` dlopen'ed into the process (or the object already loaded from that file)."""
        ns = self.ns
        root_obj = self.load_root(path, "dlopen")
        root_obj.origin = os.path.dirname(os.path.abspath(path))
        same = ns.by_id.get(root_obj.info.file_id)
        if same is not None:
            return same
        ns.add(root_obj)
        return root_obj

    def run(self, *, main: Optional[str], preload: Sequence[str], loaded: Sequence[str],
            use_etc_preload: bool) -> DepTree:
        r, ns, path, cwd, findings = self.r, self.ns, self.path, self.cwd, self.findings
        root_is_main = main is None
        self.start_process(path if root_is_main else main, preload, use_etc_preload)
        main_obj, interp_path, env_dirs = self.main_obj, self.interp_path, self.env_dirs
        _reason = self.interp_verdict[2]
        self.root_obj = main_obj if root_is_main else None

        # Programs with the same NEEDED list, search paths and flags get the same
        # tree (many of /usr/bin need only libc.so.6): reuse it, renaming the root.
        memo_key = None
        if root_is_main and not findings:
            mi = main_obj.info
            memo_key = (mi.needed, r.rpath_dirs(main_obj), r.runpath_dirs(main_obj), mi.nodeflib, mi.soname,
                        interp_path, env_dirs, tuple(self.preload_names), cwd)
            hit = r.memoized_tree(memo_key)
            if hit is not None:
                return hit if self.shared else _from_template(hit, path)

        self.map_interpreter()
        interp_obj = self.interp_obj
        pre_objs = self.map_preloads()
        if root_is_main:
            root_obj = main_obj
            order: List[_Obj] = _Order(pre_objs)
            self.bfs([main_obj] + pre_objs, order, True)
        else:
            self.load_context(pre_objs, loaded)
            root_obj = self.root_obj = self.dlopen_root(path)
            order = _Order()
            self.bfs([root_obj], order, True)

        if root_is_main and interp_obj is None and main_obj.info.interp:
            # the kernel cannot start the program: its interpreter is not there
            gone = _Obj(None, interp_path, None, None, None, 1, None, kind="missing")
            gone.names.append(interp_path)
            gone.needed_by.append(path)
            gone.tried = (Candidate(interp_path, "absent", "interpreter", _reason),)
            self.interp_missing = gone
            order.append(gone)
        elif not r.config.interpreter_found and self.interp_missing is None and root_is_main:
            # a library of an ABI this machine has no loader for: nothing here can load it
            findings.append(Finding(
                "INTERPRETER_MISSING", Severity.ERROR,
                f"{path} is an {r.config.abi} object and there is no {r.config.abi} loader here "
                f"({r.config.interpreter}): nothing on this machine can load it",
                fix=_no_loader_fix(r), details={"interpreter": r.config.interpreter, "abi": r.config.abi}))
        # The interpreter is always mapped, but ld.so keeps it in the list of
        # objects (and ldd shows it) only when some DT_NEEDED names it (rtld.c).
        libs = self.libraries(order, root_obj)
        rinfo = root_obj.info
        if rinfo is not None and rinfo.rpath is not None and rinfo.runpath is not None:
            findings.append(Finding("RPATH_IGNORED", Severity.INFO,
                                    f"{path} has both DT_RPATH and DT_RUNPATH: the loader ignores its RPATH",
                                    details={"rpath": rinfo.rpath, "runpath": rinfo.runpath}))
        if (root_is_main and rinfo is not None and rinfo.interp
                and "$ORIGIN" in ((rinfo.rpath or "") + (rinfo.runpath or "")).replace("${ORIGIN}", "$ORIGIN")
                and os.path.islink(r.host(os.path.abspath(path)))):
            findings.append(Finding(
                "ORIGIN_OF_SYMLINKED_PROGRAM", Severity.INFO,
                f"{path} is a symlink: $ORIGIN is the directory of its realpath ({main_obj.origin}), which is what "
                "the kernel-started program uses; `ldd` uses the symlink's directory and may disagree",
                details={"origin": main_obj.origin}))
        context = tuple(o.ident() for o in ns.objs if o.context)
        tree = DepTree(root=path, libraries=tuple(libs), findings=tuple(findings),
                       root_needed=rinfo.needed if rinfo else (), interpreter=interp_path if interp_obj else None,
                       context=context)
        if (memo_key is not None and not findings and all(lib.found for lib in libs)
                and not any("/" in n for n in rinfo.needed)
                and not any("/" in n for lib in libs for n in lib.needed)
                and not self.root_reused):
            r.remember_tree(memo_key, _to_template(tree, path))
        return tree

    def run_dlopen(self, name: str, *, main: str, loaded: Sequence[str], use_etc_preload: bool) -> DepTree:
        """``dlopen(name)`` called from ``self.path`` (already loaded) in a process of ``main`` + ``loaded``."""
        self.start_process(main, (), use_etc_preload)
        self.map_interpreter()
        self.load_context(self.map_preloads(), loaded)
        caller = self.root_obj = self.dlopen_root(self.path)
        if not caller.context:            # the caller's own NEEDED tree is mapped before it runs
            ctx: List[_Obj] = _Order([caller])
            self.bfs([caller], ctx, False)
            for o in self.ns.objs:
                o.context = True
            self.missing.clear()
        order: List[_Obj] = _Order()
        existing = self.ns.lookup(name)
        if existing is not None:
            # dlopen of a name already loaded (by SONAME, name or path): that object, nothing searched
            lib = _library(existing, self.r, 1, (caller, self.path))
            lib = _copy(lib, via="loaded", needed_by=(self.path,), depth=1)
            return DepTree(root=self.path, libraries=(lib,), findings=tuple(self.findings),
                           root_needed=(name,), context=tuple(o.ident() for o in self.ns.objs if o.context))
        dep = self.map_name(name, caller, 1, order)
        dep.needed_by.append(self.path)
        self.tree_depth[id(dep)] = 1
        if dep.kind not in ("missing", "fatal"):
            self.bfs([dep], order, True)
        libs = self.libraries(order, caller)
        return DepTree(root=self.path, libraries=tuple(libs), findings=tuple(self.findings), root_needed=(name,),
                       interpreter=self.interp_path if self.interp_obj else None,
                       context=tuple(o.ident() for o in self.ns.objs if o.context))

    def libraries(self, order: List[_Obj], root_obj: _Obj) -> List[Library]:
        """The tree's libraries in load order, with the findings about each."""
        findings, path, r = self.findings, self.path, self.r
        libs: List[Library] = []
        for o in order:
            if o is root_obj:
                continue
            lib = _library(o, r, self.tree_depth.get(id(o), o.depth), (root_obj, path))
            libs.append(lib)
            if o is self.interp_missing:
                findings.append(Finding(
                    "INTERPRETER_MISSING", Severity.ERROR,
                    f"{path} cannot start: its program interpreter {o.found_as} is not there "
                    f"({o.tried[0].reason or 'no such file'})",
                    fix=_no_loader_fix(r),
                    details={"interpreter": o.found_as, "abi": r.config.abi}))
            elif o.kind == "missing":
                findings.append(Finding(
                    "MISSING", Severity.ERROR,
                    f"{lib.soname} not found (needed by {', '.join(lib.needed_by) or path})",
                    fix=_missing_fix(lib) if r.config.interpreter_found else _no_loader_fix(r),
                    details={"soname": lib.soname, "tried": len(lib.tried)}))
            elif o.kind == "fatal":
                findings.append(Finding(
                    "FATAL_CANDIDATE", Severity.ERROR,
                    f"{lib.soname}: the loader fails on {o.found_as}: {o.error} (it does not search further)",
                    fix="remove or replace that file (a Git LFS pointer needs `git lfs pull`)",
                    details={"soname": lib.soname, "path": o.found_as, "error": o.error}))
            elif lib.hwcaps_subdir and lib.hwcaps_subdir.startswith("glibc-hwcaps/"):
                findings.append(Finding(
                    "HWCAPS_OVERRIDE", Severity.INFO,
                    f"{lib.soname} comes from {lib.found_as} ({lib.hwcaps_subdir}), not the directory itself",
                    details={"soname": lib.soname, "subdir": lib.hwcaps_subdir}))
            for c in lib.tried:
                if c.outcome == "skipped" and c.reason and "class" in c.reason:
                    findings.append(Finding(
                        "WRONG_CLASS_SKIPPED", Severity.INFO,
                        f"{c.path} skipped for {lib.soname}: {c.reason}", details={"path": c.path}))
        return libs


# The root's path in a memoized tree (no path holds a NUL). A tree made from a
# template keeps a link to each library it copied (not a field: ``template_of``),
# which lets the JSON writer encode the shared library once.
ROOT_PLACEHOLDER = "\0root\0"


def template_of(obj):
    """The memoized library ``obj`` was copied from for another root, if it was."""
    return obj.__dict__.get("_template")


def _copy(obj, **changes):
    """replace() without re-running __init__ (the values are already checked)."""
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    new.__dict__.update(changes)
    return new


def _swap_root(lib: Library, old: str, new: str) -> Library:
    if lib.loader != old and old not in lib.needed_by:
        return lib
    return _copy(lib, loader=new if lib.loader == old else lib.loader,
                 needed_by=tuple(new if x == old else x for x in lib.needed_by))


def _to_template(tree: DepTree, path: str) -> DepTree:
    return _copy(tree, root=ROOT_PLACEHOLDER, libraries=tuple(_swap_root(lib, path, ROOT_PLACEHOLDER) for lib in tree.libraries))


def _from_template(tmpl: DepTree, path: str) -> DepTree:
    libs = []
    for lib in tmpl.libraries:
        new = _swap_root(lib, ROOT_PLACEHOLDER, path)
        if new is not lib:
            new.__dict__["_template"] = lib     # not a field: lets TreeJsonWriter encode lib once
        libs.append(new)
    return _copy(tmpl, root=path, libraries=tuple(libs))


def _library(o: _Obj, r: Resolver, depth: int, root_ident=(None, None)) -> Library:
    requested = tuple(dict.fromkeys(o.names))
    if o.kind in ("missing", "fatal"):
        name = requested[0]
        if o.kind == "missing":
            searched_dirs = set()
            for c in o.tried:
                searched_dirs.add(os.path.dirname(r.host(c.path) if c.path.startswith("/") else c.path))
            nodeflib = bool(o.loader is not None and o.loader.info is not None and o.loader.info.nodeflib)
            near = r.near_misses(name, searched_dirs, nodeflib) if "/" not in name else ()
        else:
            near = ()
        return Library(soname=name, path=o.real if o.kind == "fatal" else None,
                       via=o.via if o.kind == "fatal" else None, needed_by=tuple(o.needed_by),
                       depth=depth, found_as=o.found_as if o.kind == "fatal" else None,
                       requested_as=requested, via_object=o.via_object, error=o.error,
                       loader=_ident(o.loader, root_ident),
                       tried=o.tried, near_misses=near)
    via = o.via
    if o.context and o.kind != "interpreter":
        via = "loaded"
    return Library(soname=o.soname or requested[0], path=o.real, via=via, needed_by=tuple(o.needed_by),
                   depth=depth, found_as=o.found_as, requested_as=requested, via_object=o.via_object,
                   hwcaps_subdir=o.hwcaps, needed=o.info.needed if o.info else (),
                   loader=_ident(o.loader, root_ident))


def _ident(o: Optional[_Obj], root_ident) -> Optional[str]:
    if o is None:
        return None
    return root_ident[1] if o is root_ident[0] else o.ident()


def _no_loader_fix(r: Resolver) -> str:
    cfg = r.config
    if r.sysroot_prefix:
        return f"the sysroot {cfg.root} has no {cfg.interpreter}: install its C library there"
    return (f"install the {cfg.abi} C library (the package that provides {cfg.interpreter}), or resolve it "
            f"inside an {cfg.abi} sysroot with --root")


def _missing_fix(lib: Library) -> str:
    if any(c.reason and c.reason.startswith("DF_1_NODEFLIB") for c in lib.tried):
        return ("the needing object was linked with -z nodefaultlib, which forbids the ld.so cache's system "
                "entries and the default directories: give it a DT_RUNPATH to the library's directory "
                "(patchelf --set-rpath DIR) or relink it without -z nodefaultlib")
    if lib.near_misses:
        nm = lib.near_misses[0]
        d = os.path.dirname(nm.path)
        if "another version" in nm.reason:
            return f"install the library that provides {lib.soname} ({nm.reason})"
        if "ldconfig" in nm.reason:
            return "run ldconfig (as root) so the ld.so cache lists it"
        return f"add {d} to LD_LIBRARY_PATH or to the needing object's DT_RUNPATH"
    return f"install the package that provides {lib.soname}, or add its directory to LD_LIBRARY_PATH"
