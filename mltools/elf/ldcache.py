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

Lookup follows ``elf/dl-cache.c``: a binary search of the sorted entry table,
then among the entries for a name (file order) those with flags the loader
does not accept are skipped, glibc-hwcaps entries are kept by priority of their
active subdirectory, and the first accepted regular entry ends the search; a
usable hwcaps entry wins over it.
"""
from __future__ import annotations

import os
import struct

from mltools._record import record
from mltools.errors import InputError
from mltools.findings import Finding, Severity

TYPE_CHECKING = False
if TYPE_CHECKING:     # annotations only: importing typing is a tenth of a one-file command
    from typing import ClassVar, List, Optional, Sequence, Tuple, Union

__all__ = ["CacheEntry", "LdCache", "read_ld_cache", "parse_ld_cache", "read_ld_so_conf",
           "LdCacheReport", "ldcache_report", "flags_description", "X86_64_CACHE_FLAGS"]

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
EXT_MAGIC = 0xEAA42174
HWCAP_EXTENSION = 1 << 62
X86_64_CACHE_FLAGS = 0x0303          # FLAG_ELF_LIBC6 | FLAG_X8664_LIB64

# As ``ldconfig -p`` prints them (glibc 2.36 elf/cache.c print_entry).
_TYPE = {0: "libc4", 1: "ELF", 2: "libc5", 3: "libc6"}
_ARCH = {0x0000: "", 0x0100: "64bit", 0x0200: "IA-64", 0x0300: "x86-64", 0x0400: "64bit",
         0x0500: "64bit", 0x0600: "N32", 0x0700: "64bit", 0x0800: "x32", 0x0900: "hard-float",
         0x0a00: "AArch64", 0x0b00: "soft-float", 0x0c00: "nan2008", 0x0d00: "N32,nan2008",
         0x0e00: "64bit,nan2008", 0x0f00: "soft-float", 0x1000: "double-float"}


def flags_description(flags: int) -> str:
    """As ``ldconfig -p`` prints it: ``libc6,x86-64``."""
    kind = _TYPE.get(flags & 0xFF, "unknown")
    arch = _ARCH.get(flags & 0xFF00, str(flags & 0xFF00))
    return f"{kind},{arch}" if arch else kind


@record
class CacheEntry:
    name: str                      # the key: a SONAME (or a link name ldconfig made)
    path: str                      # the value: where the loader opens it
    flags: int
    hwcap: int
    hwcaps_subdir: Optional[str] = None   # glibc-hwcaps/<this> entry (extension), else None

    @property
    def description(self) -> str:
        return flags_description(self.flags)


def _libcmp(p1: bytes, p2: bytes) -> int:
    """``_dl_cache_libcmp``: byte order, except that runs of digits compare as numbers."""
    i = j = 0
    n1, n2 = len(p1), len(p2)
    while i < n1:
        c1 = p1[i]
        c2 = p2[j] if j < n2 else 0
        if 48 <= c1 <= 57:
            if not 48 <= c2 <= 57:
                return 1
            v1 = v2 = 0
            while i < n1 and 48 <= p1[i] <= 57:
                v1 = v1 * 10 + p1[i] - 48
                i += 1
            while j < n2 and 48 <= p2[j] <= 57:
                v2 = v2 * 10 + p2[j] - 48
                j += 1
            if v1 != v2:
                return v1 - v2
        elif 48 <= c2 <= 57:
            return -1
        elif c1 != c2:
            return c1 - c2
        else:
            i += 1
            j += 1
    return 0 - (p2[j] if j < n2 else 0)


class LdCache:
    """A parsed ld.so cache: its format, generator, glibc-hwcaps names and entries.

    ``lookup`` binary-searches the entry table as ``elf/dl-cache.c`` does (the
    table is sorted by ``_dl_cache_libcmp``, descending), decoding only the
    names it compares; ``entries`` decodes the whole table on first use.
    """

    __slots__ = ("path", "format", "generator", "hwcaps_subdirs", "_data", "_table", "_nlibs", "_size",
                 "_strings", "_entries")

    def __init__(self, path: str, format: str, data: bytes, table: int, nlibs: int, size: int, strings: int,
                 generator: Optional[str] = None, hwcaps_subdirs: Tuple[str, ...] = ()):
        self.path = path
        self.format = format              # "new", "old", "combined"
        self.generator = generator
        self.hwcaps_subdirs = hwcaps_subdirs
        self._data = data
        self._table = table               # offset of entry 0
        self._nlibs = nlibs
        self._size = size                 # 24 (new) or 12 (old)
        self._strings = strings           # string offsets count from here
        self._entries: Optional[Tuple[CacheEntry, ...]] = None

    def __len__(self) -> int:
        return self._nlibs

    def _raw(self, i: int) -> Tuple[int, int, int, int]:
        """(flags, key offset, value offset, hwcap) of entry ``i``."""
        if self._size == 24:
            flags, key, value, _osv, hwcap = struct.unpack_from("<iIIIQ", self._data, self._table + 24 * i)
            return flags & 0xFFFFFFFF, key, value, hwcap
        flags, key, value = struct.unpack_from("<iII", self._data, self._table + 12 * i)
        return flags & 0xFFFFFFFF, key, value, 0

    def _bytes(self, off: int) -> Optional[bytes]:
        start = self._strings + off
        if off < 0 or start >= len(self._data):
            return None
        end = self._data.find(b"\0", start)
        return None if end < 0 else self._data[start:end]

    def _subdir(self, hwcap: int) -> Optional[str]:
        if hwcap & HWCAP_EXTENSION and not ((hwcap >> 32) & ~((1 << 30) | 0x3FF)):
            idx = hwcap & 0xFFFFFFFF
            return self.hwcaps_subdirs[idx] if idx < len(self.hwcaps_subdirs) else f"#{idx}"
        return None

    def _entry(self, i: int) -> CacheEntry:
        flags, key, value, hwcap = self._raw(i)
        k, v = self._bytes(key), self._bytes(value)
        if k is None or v is None:
            raise InputError(f"{self.path}: malformed ld.so cache (entry {i} points outside the cache)")
        return CacheEntry(k.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape"),
                          flags, hwcap, self._subdir(hwcap))

    @property
    def entries(self) -> Tuple[CacheEntry, ...]:
        if self._entries is None:
            self._entries = tuple(self._entry(i) for i in range(self._nlibs))
        return self._entries

    def lookup(self, name: str, active_hwcaps: Sequence[str] = (),
               flags: Union[int, Sequence[int]] = X86_64_CACHE_FLAGS) -> Optional[CacheEntry]:
        """The entry the loader uses for ``name``, or None.

        ``flags``: the flags the loader accepts, its default one first (one
        value, or several: i386 also takes plain ``ELF`` entries). Among the
        entries for the name (flags descending), a usable glibc-hwcaps entry of
        the best active level wins; otherwise the first accepted regular entry
        (legacy hwcap entries are skipped, as glibc 2.37+ does)."""
        accepted = (flags,) if isinstance(flags, int) else tuple(flags)
        default = accepted[0]
        key = name.encode("utf-8", "surrogateescape")
        lo, hi = 0, self._nlibs - 1
        while lo <= hi:
            mid = (lo + hi) // 2
            k = self._bytes(self._raw(mid)[1])
            if k is None:
                return None
            cmp = _libcmp(key, k)
            if cmp == 0:
                return self._pick(key, mid, accepted, default, active_hwcaps)
            if cmp < 0:
                lo = mid + 1
            else:
                hi = mid - 1
        return None

    def _pick(self, key: bytes, found: int, accepted, default: int, active_hwcaps) -> Optional[CacheEntry]:
        first = found
        while first > 0:
            k = self._bytes(self._raw(first - 1)[1])
            if k is None or _libcmp(key, k) != 0:
                break
            first -= 1
        best = None
        best_prio = None
        for i in range(first, self._nlibs):
            flags, kof, vof, hwcap = self._raw(i)
            if i > found:
                k = self._bytes(kof)
                if k is None or _libcmp(key, k) != 0:
                    break
            if flags not in accepted or self._bytes(vof) is None:
                continue
            sub = self._subdir(hwcap)
            if sub is not None:
                if sub not in active_hwcaps:
                    continue
                prio = active_hwcaps.index(sub)
                if best is not None and prio >= best_prio:
                    continue
                best, best_prio = i, prio
                continue
            if best is not None:
                break
            if hwcap:            # legacy hwcap entries: the loader ignores them since 2.37
                continue
            best = i
            if flags == default:
                break
        return None if best is None else self._entry(best)


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
    return LdCache(path, "old", data, 16, nlibs, 12, table_end)


def _parse_new(data: bytes, base: int, path: str, fmt: str) -> LdCache:
    nlibs, len_strings, _flags, ext_off = struct.unpack_from("<IIB3xI", data, base + 20)
    if base + 48 + nlibs * 24 > len(data):
        raise InputError(f"{path}: truncated ld.so cache ({nlibs} entries do not fit)")
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
                    subdirs = [_cstr(data, base + o) for o in struct.unpack_from(f"<{size // 4}I", data, off)]
    return LdCache(path, fmt, data, base + 48, nlibs, 24, base, generator, tuple(subdirs))


def _cstr(data: bytes, off: int) -> str:
    if off < 0 or off >= len(data):
        raise ValueError(f"string offset {off} outside the cache")
    end = data.find(b"\0", off)
    if end < 0:
        raise ValueError("unterminated string")
    return data[off:end].decode("utf-8", "surrogateescape")


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
                    import glob
                    for inc in sorted(glob.glob(rootp + pat if rootp else pat)):
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

@record
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
    findings = (stale_findings(cache, all_dirs, root=cfg.root, elf_class=cfg.elf_class, machine=cfg.machine)
                if check_stale else [])
    return LdCacheReport(path=cache_path, format=cache.format, generator=cache.generator,
                         hwcaps_subdirs=cache.hwcaps_subdirs, entries=cache.entries,
                         configured_dirs=dirs, findings=tuple(findings))
