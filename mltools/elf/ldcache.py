"""``/etc/ld.so.cache``, parsed as the loader reads it, and ``ld.so.conf``.

Formats (glibc ``sysdeps/generic/dl-cache.h``):

- old: ``"ld.so-1.7.0"``, ``nlibs``, then 12-byte entries ``{flags, key, value}``
  whose string offsets count from the end of the entry table;
- new (glibc >= 2.32 writes only this): ``"glibc-ld.so.cache1.1"``, a 48-byte
  header, 24-byte entries ``{flags, key, value, osversion, hwcap}`` whose offsets
  count from the header, and an extension directory (generator string,
  glibc-hwcaps subdirectory names);
- combined: the old table followed by the new one (8-byte aligned); the loader
  reads the new part.

Lookup follows ``elf/dl-cache.c``: among the entries for a name (file order),
those with the wrong flags are skipped, glibc-hwcaps entries are kept by
priority of their active subdirectory, and the first regular entry ends the
search; a usable hwcaps entry wins over it.
"""
from __future__ import annotations

import glob as _glob
import os
import struct
from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple

from mltools.errors import InputError
from mltools.findings import Finding, Severity

__all__ = ["CacheEntry", "LdCache", "read_ld_cache", "parse_ld_cache", "read_ld_so_conf",
           "LdCacheReport", "ldcache_report", "flags_description", "X86_64_CACHE_FLAGS"]

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
EXT_MAGIC = 0xEAA42174
HWCAP_EXTENSION = 1 << 62
X86_64_CACHE_FLAGS = 0x0303          # FLAG_ELF_LIBC6 | FLAG_X8664_LIB64

_TYPE = {0: "libc4", 1: "ELF", 2: "libc5", 3: "libc6"}
_ARCH = {0x0000: "", 0x0100: "SPARC 64-bit", 0x0300: "x86-64", 0x0400: "64bit", 0x0500: "64bit",
         0x0600: "IA-64", 0x0700: "MIPS 64-bit", 0x0800: "x32", 0x0900: "hard-float",
         0x0a00: "AArch64", 0x0b00: "N32", 0x0c00: "soft-float", 0x0d00: "nan2008",
         0x0e00: "nan2008, N32", 0x0f00: "nan2008, 64bit", 0x1000: "double-float",
         0x1100: "double-float, 64bit", 0x1200: "double-float, N32"}


def flags_description(flags: int) -> str:
    """As ``ldconfig -p`` prints it: ``libc6,x86-64``."""
    kind = _TYPE.get(flags & 0xFF, "unknown")
    arch = _ARCH.get(flags & 0xFF00, f"{flags & 0xFF00:#x}")
    return f"{kind},{arch}" if arch else kind


@dataclass(frozen=True)
class CacheEntry:
    name: str                      # the key: a SONAME (or a link name ldconfig made)
    path: str                      # the value: where the loader opens it
    flags: int
    hwcap: int
    hwcaps_subdir: Optional[str] = None   # glibc-hwcaps/<this> entry (extension), else None

    @property
    def description(self) -> str:
        return flags_description(self.flags)


@dataclass(frozen=True)
class LdCache:
    path: str
    format: str                    # "new", "old", "combined"
    entries: Tuple[CacheEntry, ...]
    generator: Optional[str] = None
    hwcaps_subdirs: Tuple[str, ...] = ()
    _by_name: Dict[str, List[CacheEntry]] = field(default_factory=dict, repr=False, compare=False)

    def candidates(self, name: str) -> List[CacheEntry]:
        if not self._by_name and self.entries:
            for e in self.entries:
                self._by_name.setdefault(e.name, []).append(e)
        return self._by_name.get(name, [])

    def lookup(self, name: str, active_hwcaps: Sequence[str] = (),
               flags: int = X86_64_CACHE_FLAGS) -> Optional[CacheEntry]:
        """The entry the loader uses for ``name``, or None."""
        best = None
        best_prio = None
        for e in self.candidates(name):
            if e.flags != flags:
                continue
            if e.hwcaps_subdir is not None:
                if e.hwcaps_subdir in active_hwcaps:
                    prio = active_hwcaps.index(e.hwcaps_subdir)
                    if best_prio is None or prio < best_prio:
                        best, best_prio = e, prio
                continue
            if e.hwcap:          # legacy hwcaps entries: the loader ignores them since 2.40
                continue
            return best or e
        return best


def _cstr(data: bytes, off: int) -> str:
    if off < 0 or off >= len(data):
        raise ValueError(f"string offset {off} outside the cache")
    end = data.find(b"\0", off)
    if end < 0:
        raise ValueError("unterminated string")
    return data[off:end].decode("utf-8", "surrogateescape")


def parse_ld_cache(data: bytes, path: str = "/etc/ld.so.cache") -> LdCache:
    """Parse cache bytes; raises InputError on a malformed cache."""
    try:
        return _parse(data, path)
    except (struct.error, ValueError, IndexError) as exc:
        raise InputError(f"{path}: malformed ld.so cache ({exc})") from None


def _parse(data: bytes, path: str) -> LdCache:
    if data.startswith(NEW_MAGIC):
        return _parse_new(data, 0, path, "new")
    if not data.startswith(OLD_MAGIC):
        raise InputError(f"{path}: not an ld.so cache (unknown magic)")
    nlibs = struct.unpack_from("<I", data, 12)[0]
    table_end = 16 + nlibs * 12
    if table_end > len(data):
        raise InputError(f"{path}: truncated ld.so cache ({nlibs} entries do not fit)")
    new_off = (table_end + 7) & ~7
    if data[new_off:new_off + len(NEW_MAGIC)] == NEW_MAGIC:
        return _parse_new(data, new_off, path, "combined")
    entries = []
    strings = data[table_end:]
    for i in range(nlibs):
        flags, key, value = struct.unpack_from("<iII", data, 16 + i * 12)
        entries.append(CacheEntry(_cstr(strings, key), _cstr(strings, value), flags & 0xFFFFFFFF, 0))
    return LdCache(path=path, format="old", entries=tuple(entries))


def _parse_new(data: bytes, base: int, path: str, fmt: str) -> LdCache:
    nlibs, len_strings, _flags, ext_off = struct.unpack_from("<IIB3xI", data, base + 20)
    if base + 48 + nlibs * 24 > len(data):
        raise InputError(f"{path}: truncated ld.so cache ({nlibs} entries do not fit)")
    view = data[base:]
    generator = None
    subdirs: List[str] = []
    # The extension directory and its sections are addressed from the start of
    # the file (dl-cache.c: cache_extension_load(cache_new, file_base, ...)).
    if ext_off and ext_off + 8 <= len(data):
        magic, count = struct.unpack_from("<II", data, ext_off)
        if magic == EXT_MAGIC:
            for i in range(min(count, 64)):
                tag, _eflags, off, size = struct.unpack_from("<IIII", data, ext_off + 8 + 16 * i)
                if tag == 0:
                    generator = data[off:off + size].decode("utf-8", "replace")
                elif tag == 1:
                    subdirs = [_cstr(view, o) for o in struct.unpack_from(f"<{size // 4}I", data, off)]
    entries = []
    for i in range(nlibs):
        flags, key, value, _osv, hwcap = struct.unpack_from("<iIIIQ", view, 48 + i * 24)
        sub = None
        if hwcap & HWCAP_EXTENSION and not ((hwcap >> 32) & ~((1 << 30) | 0x3FF)):
            idx = hwcap & 0xFFFFFFFF
            sub = subdirs[idx] if idx < len(subdirs) else f"#{idx}"
        entries.append(CacheEntry(_cstr(view, key), _cstr(view, value), flags & 0xFFFFFFFF, hwcap, sub))
    return LdCache(path=path, format=fmt, entries=tuple(entries), generator=generator,
                   hwcaps_subdirs=tuple(subdirs))


def read_ld_cache(path: str = "/etc/ld.so.cache") -> Optional[LdCache]:
    """The parsed cache, or None when the file does not exist (the loader then skips it)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_ld_cache(data, path)


def read_ld_so_conf(path: str = "/etc/ld.so.conf", root: str = "/") -> Tuple[str, ...]:
    """Directories listed in ld.so.conf (``include`` globs followed), in order, without duplicates.

    As ldconfig: ``#`` starts a comment, ``include`` takes several glob patterns
    (relative ones against the including file's directory), ``hwcap`` lines are
    ignored, trailing slashes are dropped.
    """
    seen: List[str] = []
    rootp = root.rstrip("/")

    def parse(fname: str, depth: int) -> None:
        if depth > 16:
            return
        try:
            with open(rootp + fname if rootp else fname, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except OSError:
            return
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            words = line.split()
            if words[0] == "include":
                for pat in words[1:]:
                    if not pat.startswith("/"):
                        pat = os.path.join(os.path.dirname(fname), pat)
                    for inc in sorted(_glob.glob(rootp + pat if rootp else pat)):
                        parse(inc[len(rootp):] if rootp else inc, depth + 1)
            elif words[0] == "hwcap":
                continue
            else:
                for d in line.replace(",", " ").replace(":", " ").split():
                    d = d.rstrip("/") or "/"
                    if "=" in d:          # old "dir=TYPE" syntax
                        d = d.split("=", 1)[0]
                    if d not in seen:
                        seen.append(d)

    parse(path, 0)
    return tuple(seen)


# --- the ``elf ldcache`` report ----------------------------------------------------------------

@dataclass(frozen=True)
class LdCacheReport:
    SCHEMA: ClassVar[str] = "mltools.elf.ldcache"
    SCHEMA_VERSION: ClassVar[int] = 1
    path: str
    format: str
    generator: Optional[str]
    hwcaps_subdirs: Tuple[str, ...]
    entries: Tuple[CacheEntry, ...]
    configured_dirs: Tuple[str, ...]
    findings: Tuple[Finding, ...]


def _is_dso_name(name: str) -> bool:
    """ldconfig's ``_dl_is_dso``: lib*.so*, ld-*.so*, ld.so.*, ld64.so.*."""
    return ((name.startswith("lib") and ".so" in name) or (name.startswith("ld-") and ".so" in name)
            or name.startswith("ld.so.") or name.startswith("ld64.so."))


def stale_findings(cache: LdCache, dirs: Sequence[str], root: str = "/",
                   elf_class: int = 64, machine: int = 62) -> List[Finding]:
    """Libraries in configured directories that the cache lacks, and entries whose file is gone."""
    from mltools.elf.reader import ElfFormatError, read_elf

    rootp = root.rstrip("/")
    findings: List[Finding] = []
    cached_real = {}
    for e in cache.entries:
        cached_real.setdefault(e.name, set()).add(os.path.realpath(rootp + e.path))
    for d in dirs:
        for sub in ("",) + tuple(f"glibc-hwcaps/{s}/" for s in _list_hwcaps(rootp + d)):
            here = rootp + d + "/" + sub
            try:
                names = sorted(os.listdir(here))
            except OSError:
                continue
            for name in names:
                if not _is_dso_name(name):
                    continue
                full = here + name
                if not os.path.isfile(full):
                    continue
                try:
                    info = read_elf(full)
                except (ElfFormatError, InputError):
                    continue
                if info.elf_class != elf_class or info.machine != machine or info.type != 3:
                    continue
                soname = info.soname or name
                if name != soname and not os.path.islink(full):
                    # a real file under a non-SONAME name: ldconfig makes the SONAME link
                    if os.path.exists(here + soname):
                        continue
                if name != soname:
                    continue
                real = os.path.realpath(full)
                if real not in cached_real.get(soname, set()):
                    findings.append(Finding(
                        "LIBRARY_NOT_IN_CACHE", Severity.WARNING,
                        f"{d}/{sub}{soname} is in a configured directory but not in {cache.path}: "
                        "the loader does not find it through the cache",
                        fix="run ldconfig (as root)", details={"soname": soname, "path": f"{d}/{sub}{soname}"}))
    for e in cache.entries:
        if not os.path.exists(rootp + e.path):
            findings.append(Finding(
                "CACHE_ENTRY_MISSING_FILE", Severity.WARNING,
                f"{cache.path} maps {e.name} to {e.path}, which no longer exists",
                fix="run ldconfig (as root)", details={"soname": e.name, "path": e.path}))
    return findings


def _list_hwcaps(d: str) -> List[str]:
    try:
        return sorted(os.listdir(d + "/glibc-hwcaps"))
    except OSError:
        return []


def ldcache_report(cache_path: Optional[str] = None, conf_path: Optional[str] = None,
                   root: Optional[str] = None, check_stale: bool = True) -> LdCacheReport:
    """Parse the cache and (by default) compare it with the directories ld.so.conf lists."""
    from mltools.elf.ldso import loader_config_for_root

    cfg = loader_config_for_root(root)
    rootp = "" if cfg.root in ("", "/") else cfg.root.rstrip("/")
    cache_path = cache_path or rootp + cfg.cache_path
    conf_path = conf_path or "/etc/ld.so.conf"
    cache = read_ld_cache(cache_path)
    if cache is None:
        raise InputError(f"{cache_path}: no such file (the loader then searches only the default directories)")
    dirs = read_ld_so_conf(conf_path, root=cfg.root)
    # ldconfig always indexes SLIBDIR and LIBDIR: the multiarch pair on Debian,
    # lib64 and usr/lib64 elsewhere (never plain /lib and /usr/lib then).
    trusted = cfg.system_dirs[:2]
    all_dirs = tuple(dict.fromkeys(dirs + trusted))
    findings = stale_findings(cache, all_dirs, root=cfg.root) if check_stale else []
    return LdCacheReport(path=cache_path, format=cache.format, generator=cache.generator,
                         hwcaps_subdirs=cache.hwcaps_subdirs, entries=cache.entries,
                         configured_dirs=dirs, findings=tuple(findings))
