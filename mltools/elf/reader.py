"""A small, fast ELF reader built on ``mmap`` and ``struct``.

It reads what the dynamic loader reads: the ELF header, the program headers,
``PT_INTERP``, ``PT_DYNAMIC`` (NEEDED, SONAME, RPATH, RUNPATH, FLAGS, FLAGS_1)
and, on request, the dynamic symbol table with its GNU versions
(``DT_VERSYM``/``DT_VERDEF``/``DT_VERNEED``) and the notes. Section headers are
never needed, so stripped files work. Every offset is checked against the file
size, so a truncated or corrupt file raises :class:`ElfFormatError` (an
:class:`~mltools.errors.InputError`) with a one-line reason, never a random
exception.

pyelftools is not used here: walking the dynamic tags of 790 objects takes
0.7 s through it and about 0.03 s with this reader (docs/benchmarks.md).
"""
from __future__ import annotations

import errno as _errno
import mmap
import os
import struct

from mltools._record import record
from mltools.elf.files import ELFMAG, is_linker_script
from mltools.errors import InputError

TYPE_CHECKING = False
if TYPE_CHECKING:     # annotations only: importing typing is a tenth of a one-file command
    from typing import Dict, List, Optional, Tuple

__all__ = [
    "ElfFormatError", "ElfInfo", "DynamicSymbol", "VersionNeed", "VersionDef",
    "ElfSymbols", "ElfNotes", "read_elf", "read_symbols", "read_notes",
    "MACHINE_NAMES", "TYPE_NAMES", "dt_flags_names", "dt_flags_1_names",
    "DF_1_NODEFLIB", "DF_ORIGIN", "ET_EXEC", "ET_DYN", "EM_X86_64",
]

# --- constants (elf.h) -------------------------------------------------------
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_NONE, ET_REL, ET_EXEC, ET_DYN, ET_CORE = 0, 1, 2, 3, 4
EM_386, EM_ARM, EM_X86_64, EM_AARCH64, EM_RISCV, EM_PPC64, EM_S390 = 3, 40, 62, 183, 243, 21, 22

PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE, PT_PHDR, PT_TLS = 1, 2, 3, 4, 6, 7
PT_GNU_EH_FRAME, PT_GNU_STACK, PT_GNU_RELRO, PT_GNU_PROPERTY = 0x6474E550, 0x6474E551, 0x6474E552, 0x6474E553

DT_NULL, DT_NEEDED, DT_HASH, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT = 0, 1, 4, 5, 6, 10, 11
DT_SONAME, DT_RPATH, DT_RUNPATH, DT_FLAGS = 14, 15, 29, 30
DT_GNU_HASH = 0x6FFFFEF5
DT_VERSYM, DT_VERDEF, DT_VERDEFNUM, DT_VERNEED, DT_VERNEEDNUM = (
    0x6FFFFFF0, 0x6FFFFFFC, 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF)
DT_FLAGS_1 = 0x6FFFFFFB

DF_ORIGIN, DF_SYMBOLIC, DF_TEXTREL, DF_BIND_NOW, DF_STATIC_TLS = 0x1, 0x2, 0x4, 0x8, 0x10
DF_1_NOW, DF_1_GLOBAL, DF_1_NODELETE, DF_1_ORIGIN, DF_1_NODEFLIB, DF_1_PIE = (
    0x1, 0x2, 0x8, 0x80, 0x800, 0x08000000)

NT_GNU_ABI_TAG, NT_GNU_BUILD_ID, NT_GNU_PROPERTY_TYPE_0 = 1, 3, 5
SHT_STRTAB, SHT_NOTE, SHT_DYNSYM = 3, 7, 11
SHT_GNU_VERDEF, SHT_GNU_VERNEED, SHT_GNU_VERSYM = 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF
DT_REL, DT_RELSZ, DT_RELENT, DT_RELA, DT_RELASZ, DT_RELAENT = 17, 18, 19, 7, 8, 9
DT_PLTRELSZ, DT_PLTREL, DT_JMPREL = 2, 20, 23
GNU_PROPERTY_X86_ISA_1_NEEDED = 0xC0008002
GNU_PROPERTY_X86_FEATURE_1_AND = 0xC0000002

# Short names for messages; readelf's full names are in mltools.elf.machines.
MACHINE_NAMES = {
    0: "none", 2: "sparc", 3: "i386", 4: "m68k", 8: "mips", 15: "hppa", 18: "sparc32plus", 20: "ppc",
    21: "ppc64", 22: "s390", 40: "arm", 42: "superh", 43: "sparcv9", 50: "ia64", 62: "x86-64",
    183: "aarch64", 190: "cuda", 224: "amdgpu", 243: "riscv", 247: "bpf", 258: "loongarch",
    0x9026: "alpha",
}
TYPE_NAMES = {0: "none", 1: "relocatable", 2: "executable", 3: "shared object", 4: "core"}
_DF_NAMES = [(DF_ORIGIN, "ORIGIN"), (DF_SYMBOLIC, "SYMBOLIC"), (DF_TEXTREL, "TEXTREL"),
             (DF_BIND_NOW, "BIND_NOW"), (DF_STATIC_TLS, "STATIC_TLS")]
_DF_1_NAMES = [(0x1, "NOW"), (0x2, "GLOBAL"), (0x4, "GROUP"), (0x8, "NODELETE"),
               (0x10, "LOADFLTR"), (0x20, "INITFIRST"), (0x40, "NOOPEN"), (0x80, "ORIGIN"),
               (0x100, "DIRECT"), (0x200, "TRANS"), (0x400, "INTERPOSE"), (0x800, "NODEFLIB"),
               (0x1000, "NODUMP"), (0x2000, "CONFALT"), (0x4000, "ENDFILTEE"),
               (0x8000, "DISPRELDNE"), (0x10000, "DISPRELPND"), (0x20000, "NODIRECT"),
               (0x40000, "IGNMULDEF"), (0x80000, "NOKSYMS"), (0x100000, "NOHDR"),
               (0x200000, "EDITED"), (0x400000, "NORELOC"), (0x800000, "SYMINTPOSE"),
               (0x1000000, "GLOBAUDIT"), (0x2000000, "SINGLETON"), (0x4000000, "STUB"),
               (0x8000000, "PIE")]


def _flag_names(value: int, table) -> Tuple[str, ...]:
    names = [name for bit, name in table if value & bit]
    rest = value & ~sum(bit for bit, _ in table)
    if rest:
        names.append(hex(rest))
    return tuple(names)


def dt_flags_names(value: int) -> Tuple[str, ...]:
    return _flag_names(value, _DF_NAMES)


def dt_flags_1_names(value: int) -> Tuple[str, ...]:
    return _flag_names(value, _DF_1_NAMES)


class ElfFormatError(InputError):
    """The file is not an ELF object the reader can use.

    ``kind`` is one of ``not-elf``, ``truncated``, ``bad-header``, ``corrupt``,
    ``unreadable``, ``empty``, ``directory``.
    """

    def __init__(self, path: str, kind: str, reason: str, errno: Optional[int] = None):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.kind = kind
        self.reason = reason
        self.errno = errno


@record
class ElfInfo:
    """What the loader needs to know about one ELF file (cheap to compute)."""
    path: str
    size: int
    file_id: Tuple[int, int]          # (st_dev, st_ino): the loader dedups on it
    elf_class: int                    # 32 or 64
    little_endian: bool
    osabi: int
    abiversion: int
    machine: int
    type: int
    phentsize_ok: bool
    interp: Optional[str]
    has_dynamic: bool
    needed: Tuple[str, ...]
    soname: Optional[str]
    rpath: Optional[str]
    runpath: Optional[str]
    flags: int
    flags_1: int
    abi_note_os: Optional[int] = None     # NT_GNU_ABI_TAG OS (0 = Linux), if present
    abi_note_kernel: Optional[Tuple[int, int, int]] = None
    x86_isa_needed: Optional[int] = None  # GNU_PROPERTY_X86_ISA_1_NEEDED as a level (1..4)
    e_flags: int = 0
    dynamic_size: Optional[int] = None    # PT_DYNAMIC's p_filesz; None without PT_DYNAMIC
    ident: bytes = b""                    # e_ident (16 bytes)
    e_version: int = 1
    truncated: Optional[str] = None       # read with truncated_ok: why PT_LOAD runs past the end

    @property
    def machine_name(self) -> str:
        """A short name (x86-64, i386, aarch64...), else readelf's."""
        name = MACHINE_NAMES.get(self.machine)
        if name is None:
            from mltools.elf.machines import machine_name
            name = machine_name(self.machine)
        return name

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, f"type {self.type}")

    @property
    def nodeflib(self) -> bool:
        return bool(self.flags_1 & DF_1_NODEFLIB)


@record
class DynamicSymbol:
    name: str
    version: Optional[str]        # GLIBC_2.34, or None when unversioned
    hidden: bool                  # a non-default version (``name@VER`` rather than ``@@``)
    defined: bool
    binding: str                  # LOCAL GLOBAL WEAK GNU_UNIQUE
    type: str                     # NOTYPE OBJECT FUNC TLS IFUNC ...
    value: int
    size: int
    version_file: Optional[str] = None   # a version from verneed: the library that must define it

    @property
    def versioned_name(self) -> str:
        """``name@@VER`` (default version), ``name@VER`` (hidden or needed), as nm -D shows it."""
        if not self.version or (self.name == self.version and self.defined and self.value == 0):
            return self.name
        sep = "@" if (self.hidden or self.version_file is not None) else "@@"
        return f"{self.name}{sep}{self.version}"


@record
class VersionNeed:
    file: str                     # vn_file: a DT_NEEDED name
    versions: Tuple[str, ...]
    weak: Tuple[str, ...] = ()


@record
class VersionDef:
    name: str
    index: int
    base: bool                    # VER_FLG_BASE: the object's own name, not a version
    parents: Tuple[str, ...] = ()


@record
class ElfSymbols:
    symbols: Tuple[DynamicSymbol, ...]
    version_needs: Tuple[VersionNeed, ...]
    version_defs: Tuple[VersionDef, ...]
    from_sections: Tuple[str, ...] = ()    # what came from section headers: symbols, version_needs, ...

    @property
    def defined(self) -> Tuple[DynamicSymbol, ...]:
        return tuple(s for s in self.symbols if s.defined)

    @property
    def undefined(self) -> Tuple[DynamicSymbol, ...]:
        return tuple(s for s in self.symbols if not s.defined)


@record
class ElfNotes:
    build_id: Optional[str] = None
    abi_tag: Optional[str] = None           # "Linux 3.2.0"
    x86_isa_needed: Optional[int] = None    # x86-64 level (1..4) from GNU_PROPERTY_X86_ISA_1_NEEDED
    x86_features: Tuple[str, ...] = ()       # IBT, SHSTK
    gnu_stack: Optional[str] = None          # "RW" or "RWX" (executable stack)
    relro: bool = False
    tls_memsz: Optional[int] = None
    from_sections: Tuple[str, ...] = ()     # build_id, notes: read from SHT_NOTE sections


_STB = {0: "LOCAL", 1: "GLOBAL", 2: "WEAK", 10: "GNU_UNIQUE"}
_STT = {0: "NOTYPE", 1: "OBJECT", 2: "FUNC", 3: "SECTION", 4: "FILE", 5: "COMMON", 6: "TLS",
        10: "IFUNC"}


class _Image:
    """An opened, bounds-checked view of one ELF file."""

    __slots__ = ("path", "buf", "fd", "size", "e", "cls", "le", "ehdr", "phdrs", "loads", "overrun", "_st")

    def __init__(self, path: str, buf, st: os.stat_result, strict: bool = True, fd: Optional[int] = None):
        """``buf`` is the whole file (mmap), or with ``fd`` its first bytes, the rest read on demand."""
        self.path = path
        self.overrun: Optional[str] = None      # why a PT_LOAD runs past the end (strict=False)
        self.buf = buf
        self.fd = fd
        self.size = len(buf) if fd is None else st.st_size
        self._st = st
        ident = bytes(buf[:16])
        if len(ident) < 4 or ident[:4] != ELFMAG:
            raise ElfFormatError(path, "not-elf", _not_elf_reason(ident, buf))
        if len(ident) < 16:
            raise ElfFormatError(path, "truncated", "file too short for an ELF header (truncated)")
        cls, data = ident[4], ident[5]
        if cls not in (ELFCLASS32, ELFCLASS64):
            raise ElfFormatError(path, "bad-header", f"invalid ELF class {cls}")
        if data not in (ELFDATA2LSB, ELFDATA2MSB):
            raise ElfFormatError(path, "bad-header", f"invalid ELF data encoding {data}")
        self.cls = 64 if cls == ELFCLASS64 else 32
        self.le = data == ELFDATA2LSB
        self.e = "<" if self.le else ">"
        ehsize = 64 if self.cls == 64 else 52
        if self.size < ehsize:
            raise ElfFormatError(path, "truncated", f"file too short ({self.size} bytes) for an ELF header")
        fmt = self.e + ("HHIQQQIHHHHHH" if self.cls == 64 else "HHIIIIIHHHHHH")
        self.ehdr = struct.unpack_from(fmt, buf, 16)
        (_type, _machine, _version, _entry, phoff, _shoff, _flags, _ehsize,
         phentsize, phnum, _shentsize, _shnum, _shstrndx) = self.ehdr
        want_phent = 56 if self.cls == 64 else 32
        self.phdrs: List[tuple] = []
        self.loads: List[tuple] = []
        if phnum and phentsize >= want_phent:
            if phnum == 0xFFFF:      # PN_XNUM: the count is in section 0's sh_info
                phnum = self._xnum_phnum()
            end = phoff + phnum * phentsize
            if phoff > self.size or end > self.size:
                raise ElfFormatError(path, "truncated",
                                     f"program headers end at byte {end}, past the end of the file "
                                     f"({self.size} bytes): truncated")
            pfmt = self.e + ("IIQQQQQQ" if self.cls == 64 else "IIIIIIII")
            table = self.read(phoff, end - phoff)
            if phentsize == want_phent:     # the usual layout: one call for the whole table
                raw = struct.iter_unpack(pfmt, table)
            else:
                raw = (struct.unpack_from(pfmt, table, i * phentsize) for i in range(phnum))
            for p in raw:
                if self.cls == 32:   # p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_flags, p_align
                    p = (p[0], p[6], p[1], p[2], p[3], p[4], p[5], p[7])
                # normalized: type, flags, offset, vaddr, paddr, filesz, memsz, align
                self.phdrs.append(p)
                if p[0] == PT_LOAD:
                    if p[2] + p[5] > self.size and self.overrun is None:
                        self.overrun = (f"a PT_LOAD segment ends at byte {p[2] + p[5]}, past the end "
                                        f"of the file ({self.size} bytes): truncated")
                        if strict:
                            raise ElfFormatError(path, "truncated", self.overrun)
                    self.loads.append(p)

    def _xnum_phnum(self) -> int:
        shoff = self.ehdr[5]
        if self.cls == 64:
            off, fmt = shoff + 44, self.e + "I"
        else:
            off, fmt = shoff + 28, self.e + "I"
        if shoff == 0 or off + 4 > self.size:
            raise ElfFormatError(self.path, "corrupt", "e_phnum is PN_XNUM but section 0 is missing")
        return struct.unpack_from(fmt, self.read(off, 4))[0]

    def sections(self) -> List[tuple]:
        """(name, type, addr, offset, size, link, info, entsize, addralign) of every section, [] without a
        usable section header table (stripped of it, or corrupt: the loader never needs it)."""
        shoff, shentsize, shnum, shstrndx = self.ehdr[5], self.ehdr[10], self.ehdr[11], self.ehdr[12]
        want = 64 if self.cls == 64 else 40
        if not shoff or shentsize < want or shoff >= self.size:
            return []
        if shnum == 0:                       # SHN_UNDEF: the count is in section 0's sh_size
            shnum = self._section0()[5]
        if shnum > 65536 * 16 or shoff + shnum * shentsize > self.size:
            return []
        fmt = self.e + ("IIQQQQIIQQ" if self.cls == 64 else "IIIIIIIIII")
        table = self.read(shoff, shnum * shentsize)
        raw = [struct.unpack_from(fmt, table, i * shentsize) for i in range(shnum)]
        if shstrndx == 0xFFFF:               # SHN_XINDEX: in section 0's sh_link
            shstrndx = raw[0][6] if raw else 0
        names = b""
        if 0 < shstrndx < len(raw) and raw[shstrndx][4] < self.size:
            names = self.read(raw[shstrndx][4], min(raw[shstrndx][5], self.size - raw[shstrndx][4]))
        out = []
        for r in raw:
            name = ""
            if r[0] < len(names):
                end = names.find(b"\0", r[0])
                if end >= 0:
                    name = names[r[0]:end].decode("utf-8", "replace")
            out.append((name, r[1], r[3], r[4], r[5], r[6], r[7], r[9], r[8]))
        return out

    def _section0(self) -> tuple:
        fmt = self.e + ("IIQQQQIIQQ" if self.cls == 64 else "IIIIIIIIII")
        return struct.unpack_from(fmt, self.read(self.ehdr[5], 64 if self.cls == 64 else 40))

    def read(self, off: int, size: int) -> bytes:
        """``size`` bytes at ``off`` (fewer at the end of the file)."""
        buf = self.buf
        if self.fd is None or off + size <= len(buf):
            return bytes(buf[off:off + size])
        return os.pread(self.fd, size, off)

    # vaddr -> file offset through the PT_LOAD segments
    def offset_of(self, vaddr: int, what: str) -> int:
        for p in self.loads:
            if p[3] <= vaddr < p[3] + p[5]:
                return vaddr - p[3] + p[2]
        raise ElfFormatError(self.path, "corrupt", f"{what} address {vaddr:#x} is outside every PT_LOAD segment")

    def cstr(self, off: int, limit: int) -> str:
        if off < 0 or off >= limit:
            raise ElfFormatError(self.path, "corrupt", f"string offset {off:#x} outside the string table")
        end = self.buf.find(b"\0", off, limit)
        if end < 0:
            raise ElfFormatError(self.path, "corrupt", "unterminated string in the string table")
        return bytes(self.buf[off:end]).decode("utf-8", "surrogateescape")

    def dynamic(self) -> List[Tuple[int, int]]:
        dyn = [p for p in self.phdrs if p[0] == PT_DYNAMIC]
        if not dyn:
            return []
        p = dyn[0]
        off, size = p[2], p[5]
        if size == 0:
            return []
        if off + size > self.size:
            raise ElfFormatError(self.path, "truncated", "PT_DYNAMIC lies past the end of the file: truncated")
        entsize = 16 if self.cls == 64 else 8
        n = size // entsize
        flat = struct.unpack(f"{self.e}{n * ('qQ' if self.cls == 64 else 'iI')}", self.read(off, n * entsize))
        tags = flat[0::2]
        if DT_NULL in tags:
            n = tags.index(DT_NULL)
        return list(zip(tags[:n], flat[1:2 * n:2]))

    def strtab(self, dyn) -> Tuple[int, int]:
        """(file offset, end offset) of the dynamic string table."""
        addr = next((v for t, v in dyn if t == DT_STRTAB), None)
        if addr is None:
            raise ElfFormatError(self.path, "corrupt", "PT_DYNAMIC has no DT_STRTAB")
        size = next((v for t, v in dyn if t == DT_STRSZ), None)
        off = self.offset_of(addr, "DT_STRTAB")
        end = self.size if size is None else min(self.size, off + size)
        return off, end


def _not_elf_reason(ident: bytes, buf) -> str:
    head = bytes(buf[:512])
    if head.startswith(b"version https://git-lfs"):
        return "invalid ELF header: a Git LFS pointer file, not the library (run `git lfs pull`)"
    if head.startswith(b"!<arch>"):
        return "invalid ELF header: a static archive (ar), not a shared object"
    if head.startswith(b"#!"):
        return "invalid ELF header: a script"
    if is_linker_script(head):
        return "invalid ELF header: a GNU ld linker script (used at link time only)"
    if len(head) == 0:
        return "file too short: empty file"
    if len(head) < 4:
        return f"file too short: {len(head)} bytes"
    return "invalid ELF header (not an ELF file)"


def _open(path: str, mapped: bool = True):
    """(buffer, stat, fd): the file mapped (fd None), or its first 8 KiB and the open fd
    (``mapped=False``: a few preads cost less than setting up and tearing down a mapping).
    Raises ElfFormatError / InputError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except IsADirectoryError:
        raise ElfFormatError(path, "directory", "is a directory") from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:
        raise ElfFormatError(path, "unreadable", f"cannot open: {exc.strerror}", exc.errno) from None
    try:
        st = os.fstat(fd)
        import stat as _stat
        if _stat.S_ISDIR(st.st_mode):
            raise ElfFormatError(path, "directory", "is a directory")
        if not _stat.S_ISREG(st.st_mode):
            raise ElfFormatError(path, "unreadable", "not a regular file")
        if st.st_size == 0:
            raise ElfFormatError(path, "empty", "file too short: empty file")
        if not mapped:
            try:
                head = os.pread(fd, 8192, 0)
            except OSError as exc:
                raise ElfFormatError(path, "unreadable", f"cannot read: {exc.strerror}", exc.errno) from None
            keep, fd = fd, -1
            return head, st, keep
        try:
            buf = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise ElfFormatError(path, "unreadable", f"cannot map the file: {exc}") from None
        return buf, st, None
    finally:
        if fd >= 0:
            os.close(fd)


def _parse(path: str, parse, strict: bool = True, mapped: bool = True):
    """Open ``path`` and run ``parse(image)``; any malformed structure becomes ElfFormatError.
    ``strict=False`` reads a file whose PT_LOAD segments run past its end (a separate debug
    file, or a truncated one): ``image.overrun`` says so. ``mapped=False`` reads it with
    pread (the headers and dynamic section only: read_elf)."""
    buf, st, fd = _open(path, mapped)
    try:
        return parse(_Image(path, buf, st, strict, fd))
    except ElfFormatError:
        raise
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        raise ElfFormatError(path, "corrupt", f"corrupt ELF file ({exc})") from None
    except OSError as exc:
        raise ElfFormatError(path, "unreadable", f"cannot read: {exc.strerror}", exc.errno) from None
    finally:
        if fd is None:
            buf.close()
        else:
            os.close(fd)


def read_elf(path: str, *, truncated_ok: bool = False, notes: bool = True) -> ElfInfo:
    """Read the header, PT_INTERP and PT_DYNAMIC of ``path``.

    Raises :class:`ElfFormatError` for a file that is not ELF, truncated or corrupt;
    with ``truncated_ok``, a file whose PT_LOAD segments run past its end is read and
    ``ElfInfo.truncated`` says why. ``notes=False`` leaves the ABI tag and x86 ISA
    level out (None): the loader checks them on the libraries it opens, not on the
    program the kernel started.
    """
    return _parse(path, _read_info if notes else _read_info_without_notes, not truncated_ok, mapped=False)


def _read_info_without_notes(img: _Image) -> ElfInfo:
    return _read_info(img, False)


def _read_info(img: _Image, notes: bool = True) -> ElfInfo:
    buf = img.buf
    (etype, machine, e_version, _entry, _phoff, _shoff, e_flags, _ehsize,
     phentsize, _phnum, _shentsize, _shnum, _shstrndx) = img.ehdr
    interp = None
    dynamic_size = None
    abi_os = abi_kernel = isa_needed = None
    for p in img.phdrs:
        if p[0] == PT_INTERP:
            off, size = p[2], p[5]
            if size and off + size > img.size:
                raise ElfFormatError(img.path, "truncated", "PT_INTERP lies past the end of the file: truncated")
            interp = img.read(off, size).split(b"\0", 1)[0].decode("utf-8", "surrogateescape") if size else ""
        elif p[0] == PT_DYNAMIC and dynamic_size is None:
            dynamic_size = p[5]
        elif p[0] == PT_NOTE and notes and p[5] >= 16 and p[7] >= 4:
            for ntype, name, desc in _iter_notes(img, p):
                if name != b"GNU":
                    continue
                if ntype == NT_GNU_ABI_TAG and len(desc) >= 16 and abi_os is None and p[5] >= 32:
                    w = struct.unpack_from(img.e + "IIII", desc)
                    abi_os, abi_kernel = w[0], (w[1], w[2], w[3])
                elif ntype == NT_GNU_PROPERTY_TYPE_0 and isa_needed is None:
                    isa_needed = _gnu_properties(img, desc)[0]
    dyn = img.dynamic()
    needed: List[str] = []
    soname = rpath = runpath = None
    flags = flags_1 = 0
    if dyn:
        strings = None
        for tag, val in dyn:
            if tag in (DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH):
                if strings is None:
                    str_off, str_end = img.strtab(dyn)
                    strings = img.read(str_off, str_end - str_off)
                s = _table_string(img, strings, val)
                if tag == DT_NEEDED:
                    needed.append(s)
                elif tag == DT_SONAME:
                    soname = s
                elif tag == DT_RPATH:
                    rpath = s if rpath is None else rpath + ":" + s
                else:
                    runpath = s if runpath is None else runpath + ":" + s
            elif tag == DT_FLAGS:
                flags = val
            elif tag == DT_FLAGS_1:
                flags_1 = val
    return _new_elf_info(
        path=img.path, size=img.size, file_id=(img._st.st_dev, img._st.st_ino),
        elf_class=img.cls, little_endian=img.le, osabi=buf[7], abiversion=buf[8],
        machine=machine, type=etype, phentsize_ok=phentsize == (56 if img.cls == 64 else 32),
        interp=interp, has_dynamic=bool(dynamic_size), needed=tuple(needed), soname=soname,
        rpath=rpath, runpath=runpath, flags=flags, flags_1=flags_1,
        abi_note_os=abi_os, abi_note_kernel=abi_kernel, x86_isa_needed=isa_needed,
        e_flags=e_flags, dynamic_size=dynamic_size, ident=bytes(buf[:16]), e_version=e_version,
        truncated=img.overrun,
    )


def _table_string(img: _Image, table: bytes, off: int) -> str:
    if off < 0 or off >= len(table):
        raise ElfFormatError(img.path, "corrupt", f"string offset {off:#x} outside the string table")
    end = table.find(b"\0", off)
    if end < 0:
        raise ElfFormatError(img.path, "corrupt", "unterminated string in the string table")
    return table[off:end].decode("utf-8", "surrogateescape")


def _new_elf_info(**values) -> ElfInfo:
    """ElfInfo(**values) without the generated __init__ (runs for every file read)."""
    if len(values) != _ELF_INFO_NFIELDS:
        return ElfInfo(**values)
    info = object.__new__(ElfInfo)
    info.__dict__.update(values)
    return info


_ELF_INFO_NFIELDS = len(ElfInfo.__record_fields__)


def _iter_notes(img: _Image, p):
    off, size = p[2], p[5]
    if off + size > img.size:
        return
    seg = img.read(off, size)
    align = 8 if p[7] == 8 else 4
    e = img.e
    pos = 0
    while pos + 12 <= size:
        namesz, descsz, ntype = struct.unpack_from(e + "III", seg, pos)
        # The descriptor starts at the next ``align`` boundary after the name
        # (offsets within the segment, which starts aligned).
        desc = (pos + 12 + namesz + align - 1) & -align
        nxt = (desc + descsz + align - 1) & -align
        if desc + descsz > size or nxt <= pos:
            return
        yield ntype, seg[pos + 12:pos + 12 + namesz].rstrip(b"\0"), seg[desc:desc + descsz]
        pos = nxt


def read_notes(path: str, *, truncated_ok: bool = False) -> ElfNotes:
    """Build-id, ABI tag, x86 ISA level and CET properties, GNU_STACK, RELRO, TLS size."""
    return _parse(path, _read_notes, not truncated_ok)


def _read_notes(img: _Image) -> ElfNotes:
    stack = None
    relro = False
    tls = None
    note_segments = []
    for p in img.phdrs:
        if p[0] == PT_NOTE:
            note_segments.append(p)
        elif p[0] == PT_GNU_STACK:
            stack = "RW" + ("X" if p[1] & 1 else "")
        elif p[0] == PT_GNU_RELRO:
            relro = True
        elif p[0] == PT_TLS:
            tls = p[6]
    notes = _gnu_notes(img, note_segments)
    from_sections: List[str] = []
    if notes[0] is None or not note_segments:
        # a build-id no PT_NOTE covers (separate debug files), or an object without program
        # headers (ET_REL): the SHT_NOTE sections hold them, as readelf -n shows
        sec = _gnu_notes(img, [(PT_NOTE, 0, x[3], x[2], x[2], x[4], x[4], x[8])
                               for x in img.sections() if x[1] == SHT_NOTE])
        if notes[0] is None and sec[0] is not None:
            from_sections.append("build_id")
        if not note_segments and any(v for v in sec[1:]):
            from_sections.append("notes")
            notes = (notes[0],) + sec[1:]
        notes = (notes[0] or sec[0],) + notes[1:]
    build_id, abi_tag, isa, feats = notes
    return ElfNotes(build_id=build_id, abi_tag=abi_tag, x86_isa_needed=isa, x86_features=tuple(feats),
                    gnu_stack=stack, relro=relro, tls_memsz=tls, from_sections=tuple(from_sections))


def _gnu_notes(img: _Image, segments) -> tuple:
    """(build-id, ABI tag, x86 ISA level, x86 features) from the GNU notes of ``segments``."""
    build_id = abi_tag = isa = None
    feats: List[str] = []
    for p in segments:
        for ntype, name, desc in _iter_notes(img, p):
            if name != b"GNU":
                continue
            if ntype == NT_GNU_BUILD_ID:
                build_id = desc.hex()
            elif ntype == NT_GNU_ABI_TAG and len(desc) >= 16:
                w = struct.unpack_from(img.e + "IIII", desc)
                osname = {0: "Linux", 1: "Hurd", 2: "Solaris", 3: "FreeBSD"}.get(w[0], f"OS {w[0]}")
                abi_tag = f"{osname} {w[1]}.{w[2]}.{w[3]}"
            elif ntype == NT_GNU_PROPERTY_TYPE_0:
                isa2, f2 = _gnu_properties(img, desc)
                isa = isa if isa2 is None else isa2
                feats.extend(x for x in f2 if x not in feats)
    return build_id, abi_tag, isa, feats


def _gnu_properties(img: _Image, desc: bytes):
    isa = None
    feats: List[str] = []
    align = 8 if img.cls == 64 else 4
    off = 0
    while off + 8 <= len(desc):
        pr_type, pr_datasz = struct.unpack_from(img.e + "II", desc, off)
        data = desc[off + 8:off + 8 + pr_datasz]
        if pr_type == GNU_PROPERTY_X86_ISA_1_NEEDED and len(data) >= 4:
            bits = struct.unpack_from(img.e + "I", data)[0]
            level = 0
            for lvl in (1, 2, 3, 4):       # baseline, v2, v3, v4 = bits 0..3
                if bits & (1 << (lvl - 1)):
                    level = lvl
            isa = level or None
        elif pr_type == GNU_PROPERTY_X86_FEATURE_1_AND and len(data) >= 4:
            bits = struct.unpack_from(img.e + "I", data)[0]
            if bits & 1:
                feats.append("IBT")
            if bits & 2:
                feats.append("SHSTK")
        off += 8 + ((pr_datasz + align - 1) & -align)
    return isa, feats


def read_symbols(path: str, *, truncated_ok: bool = False) -> ElfSymbols:
    """The dynamic symbols with their GNU versions, the version needs and definitions.

    Read through PT_DYNAMIC, as the loader sees them; the count comes from DT_HASH or
    DT_GNU_HASH (or, when a GNU hash table hashes no symbol, from the .dynsym section or the
    relocations). An object without PT_DYNAMIC is read through its section headers.
    """
    return _parse(path, _read_symbols, not truncated_ok)


def _symbol_count(img: _Image, d: Dict[int, int]) -> int:
    e = img.e
    if DT_HASH in d:
        off = img.offset_of(d[DT_HASH], "DT_HASH")
        return struct.unpack_from(e + "II", img.buf, off)[1]      # nchain
    if DT_GNU_HASH in d:
        off = img.offset_of(d[DT_GNU_HASH], "DT_GNU_HASH")
        nbuckets, symoffset, bloom_size, _shift = struct.unpack_from(e + "IIII", img.buf, off)
        word = 8 if img.cls == 64 else 4
        boff = off + 16 + bloom_size * word
        if nbuckets > (img.size - boff) // 4:
            raise ElfFormatError(img.path, "corrupt", "DT_GNU_HASH bucket count exceeds the file")
        buckets = struct.unpack_from(e + f"{nbuckets}I", img.buf, boff)
        last = max(buckets) if buckets else 0
        if last < symoffset:
            return symoffset
        coff = boff + nbuckets * 4
        idx = last
        while True:
            pos = coff + (idx - symoffset) * 4
            if pos + 4 > img.size:
                raise ElfFormatError(img.path, "corrupt", "DT_GNU_HASH chain runs past the end of the file")
            if struct.unpack_from(e + "I", img.buf, pos)[0] & 1:
                return idx + 1
            idx += 1
    return 0


def _reloc_symbol_count(img: _Image, d: Dict[int, int]) -> int:
    """1 + the highest symbol index the dynamic relocations use (0 without relocations)."""
    top = 0
    shift = 32 if img.cls == 64 else 8
    word = 8 if img.cls == 64 else 4
    fmt = img.e + ("Q" if img.cls == 64 else "I")
    for addr_tag, size_tag, ent_tag, rela in ((DT_RELA, DT_RELASZ, DT_RELAENT, True),
                                             (DT_REL, DT_RELSZ, DT_RELENT, False),
                                             (DT_JMPREL, DT_PLTRELSZ, None, d.get(DT_PLTREL) == DT_RELA)):
        if addr_tag not in d or not d.get(size_tag):
            continue
        ent = (d.get(ent_tag) if ent_tag else None) or word * (3 if rela else 2)
        off = img.offset_of(d[addr_tag], "relocations")
        size = min(d[size_tag], img.size - off)
        for i in range(size // ent):
            top = max(top, struct.unpack_from(fmt, img.buf, off + i * ent + word)[0] >> shift)
    return top + 1 if top else 0


def _gnu_hash_symoffset(img: _Image, d: Dict[int, int]) -> int:
    if DT_GNU_HASH not in d:
        return 0
    off = img.offset_of(d[DT_GNU_HASH], "DT_GNU_HASH")
    return struct.unpack_from(img.e + "II", img.buf, off)[1]


def _symbol_layout(img: _Image) -> Optional[dict]:
    """Where the dynamic symbols, their versions and string table are (file offsets), from
    PT_DYNAMIC as the loader finds them, else from the section headers (an object without
    PT_DYNAMIC: ET_REL, some test files); None when there are none."""
    dyn = img.dynamic()
    if dyn:
        d: Dict[int, int] = {}
        for tag, val in dyn:
            d.setdefault(tag, val)
        str_off, str_end = img.strtab(dyn)
        count = _symbol_count(img, d)
        from_sections: List[str] = []
        if DT_HASH not in d and DT_SYMTAB in d and count <= _gnu_hash_symoffset(img, d):
            # A GNU hash table that hashes no symbol says nothing about how many there are (some
            # linkers write symoffset 1 for programs whose symbols are all undefined): the
            # .dynsym section says, as readelf uses it, else the relocations do.
            dynsym = next((x for x in img.sections() if x[1] == SHT_DYNSYM and x[2] == d[DT_SYMTAB] and x[7]),
                          None)
            if dynsym is not None:
                count = dynsym[4] // dynsym[7]
                from_sections.append("symbols")
            else:
                count = max(count, _reloc_symbol_count(img, d))
        return {
            "strtab": (str_off, str_end),
            "verdef": (img.offset_of(d[DT_VERDEF], "DT_VERDEF"), d.get(DT_VERDEFNUM, 0)) if DT_VERDEF in d else None,
            "verneed": ((img.offset_of(d[DT_VERNEED], "DT_VERNEED"), d.get(DT_VERNEEDNUM, 0))
                        if DT_VERNEED in d else None),
            "symtab": (img.offset_of(d[DT_SYMTAB], "DT_SYMTAB") if DT_SYMTAB in d else None, count,
                       d.get(DT_SYMENT, 24 if img.cls == 64 else 16)),
            "versym": img.offset_of(d[DT_VERSYM], "DT_VERSYM") if DT_VERSYM in d else None,
            "from_sections": tuple(from_sections),
        }
    secs = img.sections()
    dynsym = next((x for x in secs if x[1] == SHT_DYNSYM and x[7]), None)
    vneed = next((x for x in secs if x[1] == SHT_GNU_VERNEED), None)
    vdef = next((x for x in secs if x[1] == SHT_GNU_VERDEF), None)
    anchor = dynsym or vneed or vdef
    if anchor is None or not 0 < anchor[5] < len(secs) or secs[anchor[5]][1] != SHT_STRTAB:
        return None
    strsec = secs[anchor[5]]
    if strsec[3] + strsec[4] > img.size:
        return None
    versym = next((x for x in secs if x[1] == SHT_GNU_VERSYM), None)
    used = [name for name, sec in (("symbols", dynsym), ("version_needs", vneed), ("version_defs", vdef)) if sec]
    return {
        "strtab": (strsec[3], strsec[3] + strsec[4]),
        "verdef": (vdef[3], vdef[6]) if vdef else None,
        "verneed": (vneed[3], vneed[6]) if vneed else None,
        "symtab": (dynsym[3], dynsym[4] // dynsym[7], dynsym[7]) if dynsym else (None, 0, 0),
        "versym": versym[3] if versym and dynsym else None,
        "from_sections": tuple(used),
    }


def _read_symbols(img: _Image) -> ElfSymbols:
    layout = _symbol_layout(img)
    if layout is None:
        return ElfSymbols((), (), ())
    str_off, str_end = layout["strtab"]
    e = img.e
    buf = img.buf

    # version definitions: index -> name
    vdefs: List[VersionDef] = []
    def_names: Dict[int, str] = {}
    if layout["verdef"] is not None:
        off, num = layout["verdef"]
        for _ in range(min(num, 65535)):
            vd_version, vd_flags, vd_ndx, vd_cnt, _hash, vd_aux, vd_next = struct.unpack_from(e + "HHHHIII", buf, off)
            names = []
            aoff = off + vd_aux
            for _j in range(min(vd_cnt, 256)):
                vda_name, vda_next = struct.unpack_from(e + "II", buf, aoff)
                names.append(img.cstr(str_off + vda_name, str_end))
                if not vda_next:
                    break
                aoff += vda_next
            if names:
                vdefs.append(VersionDef(name=names[0], index=vd_ndx & 0x7FFF, base=bool(vd_flags & 1),
                                        parents=tuple(names[1:])))
                def_names[vd_ndx & 0x7FFF] = names[0]
            if not vd_next:
                break
            off += vd_next

    # version needs: index -> (name, file)
    vneeds: List[VersionNeed] = []
    need_names: Dict[int, Tuple[str, str]] = {}
    if layout["verneed"] is not None:
        off, num = layout["verneed"]
        for _ in range(min(num, 65535)):
            vn_version, vn_cnt, vn_file, vn_aux, vn_next = struct.unpack_from(e + "HHIII", buf, off)
            fname = img.cstr(str_off + vn_file, str_end)
            vers, weak = [], []
            aoff = off + vn_aux
            for _j in range(min(vn_cnt, 65535)):
                _h, vna_flags, vna_other, vna_name, vna_next = struct.unpack_from(e + "IHHII", buf, aoff)
                vname = img.cstr(str_off + vna_name, str_end)
                (weak if vna_flags & 2 else vers).append(vname)
                need_names[vna_other & 0x7FFF] = (vname, fname)
                if not vna_next:
                    break
                aoff += vna_next
            vneeds.append(VersionNeed(file=fname, versions=tuple(vers), weak=tuple(weak)))
            if not vn_next:
                break
            off += vn_next

    symoff, count, entsize = layout["symtab"]
    syms: List[DynamicSymbol] = []
    if count and symoff is not None:
        if entsize < (24 if img.cls == 64 else 16):
            raise ElfFormatError(img.path, "corrupt", f"DT_SYMENT {entsize} is too small")
        if symoff + count * entsize > img.size:
            raise ElfFormatError(img.path, "truncated", "the dynamic symbol table runs past the end of the file")
        versym_off = layout["versym"]
        if versym_off is not None and versym_off + 2 * count > img.size:
            raise ElfFormatError(img.path, "truncated", "DT_VERSYM runs past the end of the file")
        if img.cls == 64:
            fmt = e + "IBBHQQ"     # st_name st_info st_other st_shndx st_value st_size
        else:
            fmt = e + "IIIBBH"     # st_name st_value st_size st_info st_other st_shndx
        st = struct.Struct(fmt)
        versyms = (struct.unpack_from(e + f"{count}H", buf, versym_off) if versym_off is not None else None)
        if entsize == st.size:      # the usual layout: one call for the whole table
            rows = st.iter_unpack(buf[symoff + entsize:symoff + count * entsize])
        else:
            rows = (st.unpack_from(buf, symoff + i * entsize) for i in range(1, count))
        # the string table decoded once (latin-1 keeps byte offsets; the rare non-ASCII name is
        # decoded again as UTF-8); symbols made without the frozen dataclass's per-field setattr
        strtab = bytes(buf[str_off:str_end]).decode("latin-1")
        str_size = len(strtab)
        new = object.__new__
        is64 = img.cls == 64
        for i, f in enumerate(rows, 1):
            if is64:
                st_name, st_info, _other, shndx, value, size = f
            else:
                st_name, value, size, st_info, _other, shndx = f
            if st_name:
                if st_name >= str_size:
                    raise ElfFormatError(img.path, "corrupt", f"string offset {str_off + st_name:#x} outside the string table")
                stop = strtab.find("\0", st_name)
                if stop < 0:
                    raise ElfFormatError(img.path, "corrupt", "unterminated string in the string table")
                name = strtab[st_name:stop]
                if not name.isascii():
                    name = name.encode("latin-1").decode("utf-8", "surrogateescape")
            else:
                name = ""
            version = vfile = None
            hidden = False
            if versyms is not None:
                v = versyms[i]
                hidden = bool(v & 0x8000)
                v &= 0x7FFF
                if v >= 2:
                    if v in def_names:
                        version = def_names[v]
                    elif v in need_names:
                        version, vfile = need_names[v]
            sym = new(DynamicSymbol)
            sym.__dict__.update(
                name=name, version=version, hidden=hidden, defined=shndx != 0,
                binding=_STB.get(st_info >> 4) or str(st_info >> 4),
                type=_STT.get(st_info & 0xF) or str(st_info & 0xF),
                value=value, size=size, version_file=vfile)
            syms.append(sym)
    return ElfSymbols(tuple(syms), tuple(vneeds), tuple(vdefs), layout["from_sections"])


def errno_name(code: int) -> str:
    return _errno.errorcode.get(code, str(code))
