"""Where the machine code of an x86-64 ELF file is, and what runs first.

What an instruction-set scan needs before it decodes anything:

- the executable byte ranges (``SHF_EXECINSTR`` sections, or ``PF_X``
  segments when the section headers are gone);
- the function boundaries: ``.eh_frame_hdr``'s table (kept even in stripped
  files, found through ``PT_GNU_EH_FRAME``) and ``FUNC`` symbols with a size
  from ``.symtab`` and ``.dynsym``. Decoding starts only at those boundaries, so
  a linear sweep never starts inside an instruction; code that no FDE covers
  (hand-written assembly kernels) is decoded as the gaps between them;
- the entries the loader or the import runs: ``DT_INIT``, ``DT_PREINIT_ARRAY``
  and ``DT_INIT_ARRAY`` slots (``R_X86_64_RELATIVE`` addends in PIC files),
  ``e_entry`` of a program, ``PyInit_*`` of an extension module;
- the ifunc resolvers (``STT_GNU_IFUNC`` symbols, ``R_X86_64_IRELATIVE``
  addends) and the names of the symbols, for the dispatch evidence.

Tables are read with numpy views of the mapped file (torch's ``libtorch_cpu``
has 530 000 symbols and 190 000 FDEs), every offset checked against the file.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mltools.elf.reader import ElfFormatError

__all__ = ["CodeLayout", "read_code_layout"]

EM_X86_64 = 62
SHT_SYMTAB, SHT_NOBITS, SHT_DYNSYM = 2, 8, 11
SHF_EXECINSTR = 0x4
PT_LOAD, PT_DYNAMIC, PT_GNU_EH_FRAME = 1, 2, 0x6474E550
PF_X = 1
DT_NULL, DT_RELA, DT_RELASZ, DT_INIT = 0, 7, 8, 12
DT_INIT_ARRAY, DT_INIT_ARRAYSZ, DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ = 25, 27, 32, 33
R_X86_64_RELATIVE, R_X86_64_IRELATIVE = 8, 37
STT_FUNC, STT_GNU_IFUNC = 2, 10


@dataclass(frozen=True)
class CodeLayout:
    """The code of one file: decode ``intervals`` (sorted, disjoint, each starting on
    an instruction boundary) from ``sections``; ``entries`` run at load."""
    path: str
    size: int
    sections: Tuple[Tuple[int, int, int], ...]        # (vaddr, file offset, size), executable
    intervals: "object"                                # numpy int64 array (n, 2): [start, end) vaddrs
    function_starts: int                               # boundaries known from FDEs and symbols
    entries: Tuple[Tuple[str, int], ...]               # (what, vaddr) run by the loader or the import
    ifunc_resolvers: Tuple[int, ...]
    symbols: "object"                                  # numpy structured: value, size, tab, name offset
    strtabs: Tuple[bytes, ...]                         # the string tables the symbols' names are in
    is_program: bool

    def offset(self, vaddr: int) -> Optional[int]:
        for va, off, size in self.sections:
            if va <= vaddr < va + size:
                return off + vaddr - va
        return None


def _np():
    import numpy as np
    return np


class _File:
    def __init__(self, path: str):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise ElfFormatError(path, "unreadable", f"cannot open: {exc.strerror}", exc.errno) from None
        try:
            size = os.fstat(fd).st_size
            if size < 64:
                raise ElfFormatError(path, "truncated", "file too short for an ELF header")
            self.buf = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self.path = path
        self.size = size
        if self.buf[:4] != b"\x7fELF" or self.buf[4] != 2 or self.buf[5] != 1:
            raise ElfFormatError(path, "not-elf", "not a 64-bit little-endian ELF file")

    def view(self, dtype, offset: int, count: int, what: str):
        np = _np()
        itemsize = np.dtype(dtype).itemsize
        if offset < 0 or count < 0 or offset + itemsize * count > self.size:
            raise ElfFormatError(self.path, "corrupt", f"{what} lies past the end of the file")
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=offset)

    def close(self) -> None:
        self.buf.close()


_SHDR = [("name", "<u4"), ("type", "<u4"), ("flags", "<u8"), ("addr", "<u8"), ("offset", "<u8"),
         ("size", "<u8"), ("link", "<u4"), ("info", "<u4"), ("addralign", "<u8"), ("entsize", "<u8")]
_PHDR = [("type", "<u4"), ("flags", "<u4"), ("offset", "<u8"), ("vaddr", "<u8"), ("paddr", "<u8"),
         ("filesz", "<u8"), ("memsz", "<u8"), ("align", "<u8")]
_SYM = [("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"), ("value", "<u8"), ("size", "<u8")]
_RELA = [("offset", "<u8"), ("info", "<u8"), ("addend", "<i8")]


def read_code_layout(path: str) -> CodeLayout:
    """The code layout of an x86-64 ELF file (ElfFormatError for anything else)."""
    f = _File(path)
    try:
        return _layout(f)
    except ElfFormatError:
        raise
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        raise ElfFormatError(path, "corrupt", f"corrupt ELF file ({exc})") from None
    finally:
        f.close()


def _layout(f: _File) -> CodeLayout:
    np = _np()
    (etype, machine, _v, entry, phoff, shoff, _fl, _eh, phentsize, phnum, shentsize, shnum,
     shstrndx) = struct.unpack_from("<HHIQQQIHHHHHH", f.buf, 16)
    if machine != EM_X86_64:
        raise ElfFormatError(f.path, "bad-header", f"not x86-64 code (e_machine {machine})")
    phdrs = f.view(_PHDR, phoff, phnum if phentsize == 56 else 0, "the program headers")
    loads = [(int(p["vaddr"]), int(p["offset"]), int(p["filesz"]), int(p["flags"]))
             for p in phdrs if p["type"] == PT_LOAD]

    def off_of(vaddr: int) -> Optional[int]:
        for va, off, size, _flags in loads:
            if va <= vaddr < va + size:
                return off + vaddr - va
        return None

    shdrs = f.view(_SHDR, shoff, shnum if shoff and shentsize == 64 else 0, "the section headers")
    sections = [(int(s["addr"]), int(s["offset"]), int(s["size"])) for s in shdrs
                if s["flags"] & SHF_EXECINSTR and s["type"] != SHT_NOBITS and s["size"]]
    if not sections:
        sections = [(va, off, size) for va, off, size, flags in loads if flags & PF_X and size]
    for va, off, size in sections:
        if off + size > f.size:
            raise ElfFormatError(f.path, "truncated", "an executable section lies past the end of the file")
    sections.sort()

    # symbols: .symtab (if kept) and .dynsym
    tables = []
    for s in shdrs:
        if s["type"] in (SHT_SYMTAB, SHT_DYNSYM) and s["entsize"] == 24 and int(s["link"]) < len(shdrs):
            strtab = shdrs[int(s["link"])]
            syms = f.view(_SYM, int(s["offset"]), int(s["size"]) // 24, "a symbol table")
            tables.append((syms, int(strtab["offset"]), int(strtab["size"])))
    dyn = _dynamic(f, phdrs)
    if not any(True for _ in tables) and dyn:
        tables += _dynsym_from_dynamic(f, dyn, off_of)
    funcs_v, funcs_s, funcs_t, funcs_o = [], [], [], []
    strtabs: List[bytes] = []
    ifuncs: List[int] = []
    pyinit: List[Tuple[str, int]] = []
    for syms, str_off, str_size in tables:
        typ = syms["info"] & 0xF
        strtab = bytes(f.buf[str_off:min(f.size, str_off + str_size)])
        tab = len(strtabs)
        strtabs.append(strtab)
        defined = (syms["shndx"] != 0) & (syms["value"] != 0)
        isfunc = defined & ((typ == STT_FUNC) | (typ == STT_GNU_IFUNC))
        idx = np.nonzero(isfunc)[0]
        funcs_v.append(syms["value"][idx].astype(np.int64))
        funcs_s.append(syms["size"][idx].astype(np.int64))
        funcs_o.append(syms["name"][idx].astype(np.int64))
        funcs_t.append(np.full(len(idx), tab, np.int64))
        ifuncs += syms["value"][defined & (typ == STT_GNU_IFUNC)].astype(np.int64).tolist()
        if b"\0PyInit_" in strtab:
            for i in idx.tolist():
                name = _name(strtab, int(syms["name"][i]))
                if name.startswith("PyInit_"):
                    pyinit.append((name, int(syms["value"][i])))
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64))
    values, sizes = cat(funcs_v), cat(funcs_s)
    symbols = np.zeros(len(values), dtype=[("value", np.int64), ("size", np.int64), ("tab", np.int64),
                                           ("name", np.int64)])
    symbols["value"], symbols["size"], symbols["tab"], symbols["name"] = values, sizes, cat(funcs_t), cat(funcs_o)
    # by address; at one address the sized symbols first, then .symtab's before .dynsym's
    symbols = symbols[np.lexsort((symbols["tab"], symbols["size"] == 0, symbols["value"]))]

    starts = [values, values + sizes]
    fde_starts, fde_ends = _fde_ranges(f, phdrs, off_of)
    starts += [fde_starts, fde_ends]
    bounds = []
    for va, _off, size in sections:
        inside = [a[(a > va) & (a < va + size)] for a in starts]
        pts = _sorted_unique(np.concatenate([np.array([va, va + size], np.int64)] + inside))
        bounds.append(np.stack([pts[:-1], pts[1:]], axis=1))
    intervals = np.concatenate(bounds) if bounds else np.zeros((0, 2), np.int64)

    entries: List[Tuple[str, int]] = []
    relas = _relas(f, dyn, off_of)
    if DT_INIT in dyn:
        entries.append(("DT_INIT", dyn[DT_INIT]))
    for tag, sztag, label in ((DT_PREINIT_ARRAY, DT_PREINIT_ARRAYSZ, "preinit_array"),
                              (DT_INIT_ARRAY, DT_INIT_ARRAYSZ, "init_array")):
        if tag in dyn and dyn.get(sztag):
            entries += [(f"{label}[{i}]", v) for i, v in enumerate(_pointer_array(f, dyn[tag], dyn[sztag],
                                                                                   off_of, relas))]
    if etype == 2 or (entry and _has_interp(phdrs)):
        entries.append(("e_entry", entry))
    entries += pyinit
    if relas is not None:
        irel = relas[(relas["info"] & 0xFFFFFFFF) == R_X86_64_IRELATIVE]
        ifuncs += [int(a) for a in irel["addend"].tolist()]
    entries = list(dict.fromkeys((w, int(a)) for w, a in entries
                                 if a not in (0, 0xFFFFFFFFFFFFFFFF) and _in(sections, a)))
    return CodeLayout(
        path=f.path, size=f.size, sections=tuple(sections), intervals=intervals,
        function_starts=int(len(_sorted_unique(np.concatenate([values, fde_starts])))),
        entries=tuple(entries), ifunc_resolvers=tuple(sorted({a for a in ifuncs if _in(sections, a)})),
        symbols=symbols, strtabs=tuple(strtabs), is_program=etype == 2 or _has_interp(phdrs))


def _sorted_unique(a):
    """np.unique by sorting (numpy 2's hash-based unique is slower on large int arrays)."""
    np = _np()
    a = np.sort(a)
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if len(a) else a


def _in(sections, vaddr: int) -> bool:
    return any(va <= vaddr < va + size for va, _o, size in sections)


def _has_interp(phdrs) -> bool:
    return bool((phdrs["type"] == 3).any())


def _name(strtab: bytes, offset: int) -> str:
    end = strtab.find(b"\0", offset)
    return strtab[offset:end if end >= 0 else len(strtab)].decode("utf-8", "replace")


def _dynamic(f: _File, phdrs) -> Dict[int, int]:
    dyn = [p for p in phdrs if p["type"] == PT_DYNAMIC]
    if not dyn:
        return {}
    p = dyn[0]
    count = int(p["filesz"]) // 16
    out: Dict[int, int] = {}
    for tag, val in f.view([("tag", "<i8"), ("val", "<u8")], int(p["offset"]), count, "PT_DYNAMIC").tolist():
        if tag == DT_NULL:
            break
        out.setdefault(tag, val)
    return out


def _dynsym_from_dynamic(f: _File, dyn, off_of):
    """.dynsym through DT_SYMTAB when the section headers are gone (its size from
    the string table that follows it, as linkers lay them out)."""
    symtab, strtab, strsz = dyn.get(6), dyn.get(5), dyn.get(10)
    if symtab is None or strtab is None or strsz is None:
        return []
    so, to = off_of(symtab), off_of(strtab)
    if so is None or to is None or to <= so:
        return []
    return [(f.view(_SYM, so, (to - so) // 24, ".dynsym"), to, strsz)]


def _relas(f: _File, dyn, off_of):
    if DT_RELA not in dyn or not dyn.get(DT_RELASZ):
        return None
    off = off_of(dyn[DT_RELA])
    if off is None:
        return None
    return f.view(_RELA, off, dyn[DT_RELASZ] // 24, "DT_RELA")


def _pointer_array(f: _File, vaddr: int, size: int, off_of, relas) -> List[int]:
    off = off_of(vaddr)
    if off is None:
        return []
    np = _np()
    vals = f.view("<u8", off, size // 8, "an init array").astype(np.int64).tolist()
    if relas is not None:
        rel = relas[((relas["info"] & 0xFFFFFFFF) == R_X86_64_RELATIVE) & (relas["offset"] >= vaddr)
                    & (relas["offset"] < vaddr + size)]
        for o, a in zip(rel["offset"].tolist(), rel["addend"].tolist()):
            vals[(o - vaddr) // 8] = a
    return [v & 0xFFFFFFFFFFFFFFFF for v in vals]


def _fde_ranges(f: _File, phdrs, off_of):
    """[start, end) of every FDE listed in .eh_frame_hdr's binary-search table."""
    np = _np()
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    hdr = [p for p in phdrs if p["type"] == PT_GNU_EH_FRAME]
    if not hdr:
        return empty
    hv, ho = int(hdr[0]["vaddr"]), int(hdr[0]["offset"])
    if ho + 12 > f.size:
        return empty
    version, ptr_enc, cnt_enc, tab_enc = f.buf[ho], f.buf[ho + 1], f.buf[ho + 2], f.buf[ho + 3]
    # gcc's and clang's layout: eh_frame_ptr (any 4-byte form), fde_count udata4, table datarel|sdata4
    if version != 1 or cnt_enc != 0x03 or tab_enc != 0x3B or ptr_enc & 0x0F not in (0x03, 0x0B):
        return empty
    count = struct.unpack_from("<I", f.buf, ho + 8)[0]
    table = f.view("<i4", ho + 12, 2 * count, ".eh_frame_hdr's table").reshape(-1, 2).astype(np.int64)
    starts = table[:, 0] + hv
    fde_va = table[:, 1] + hv
    seg = next(((va, off, size) for va, off, size, _fl in _loads_of(phdrs)
                if len(fde_va) and va <= int(fde_va.min()) and int(fde_va.max()) + 16 <= va + size), None)
    if seg is None:
        return empty
    fde_off = fde_va - seg[0] + seg[1]
    u8 = f.view("u1", 0, f.size, "the file")
    cie_ptr = _u32(u8, fde_off + 4)
    cie_off = fde_off + 4 - cie_ptr
    for c in _sorted_unique(cie_off).tolist():
        if _fde_pointer_size(f, int(c)) != 4:
            return empty     # only the 4-byte pointer forms gcc and clang use on x86-64
    ranges = _u32(u8, fde_off + 12).astype(np.int64)
    return starts, starts + ranges


def _loads_of(phdrs):
    return [(int(p["vaddr"]), int(p["offset"]), int(p["filesz"]), int(p["flags"]))
            for p in phdrs if p["type"] == PT_LOAD]


def _u32(u8, offs):
    np = _np()
    o = offs.astype(np.int64)
    return (u8[o].astype(np.uint32) | (u8[o + 1].astype(np.uint32) << 8) | (u8[o + 2].astype(np.uint32) << 16)
            | (u8[o + 3].astype(np.uint32) << 24))


def _uleb(buf, off: int) -> Tuple[int, int]:
    val = shift = 0
    while True:
        b = buf[off]
        off += 1
        val |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return val, off


def _fde_pointer_size(f: _File, cie: int) -> Optional[int]:
    """Bytes of an FDE's pc_begin/pc_range as this CIE's augmentation ('zR') encodes them."""
    buf = f.buf
    if cie < 0 or cie + 9 > f.size:
        return None
    _length, cie_id, version = struct.unpack_from("<IIB", buf, cie)
    if cie_id != 0:
        return None
    p = cie + 9
    end = buf.find(b"\0", p, min(f.size, p + 16))
    if end < 0:
        return None
    aug = bytes(buf[p:end])
    p = end + 1
    _, p = _uleb(buf, p)             # code alignment
    _, p = _uleb(buf, p)             # data alignment (sleb: only its length matters here)
    if version == 1:
        p += 1
    else:
        _, p = _uleb(buf, p)
    enc = 0x00
    if aug.startswith(b"z"):
        _, p = _uleb(buf, p)
        for ch in aug[1:]:
            if ch == ord("R"):
                enc = buf[p]
                break
            if ch == ord("P"):
                penc = buf[p]
                p += 1 + {0x03: 4, 0x0B: 4, 0x04: 8, 0x0C: 8, 0x00: 8, 0x02: 2, 0x0A: 2}.get(penc & 0x0F, 8)
            elif ch == ord("L"):
                p += 1
    return {0x03: 4, 0x0B: 4, 0x04: 8, 0x0C: 8, 0x00: 8, 0x02: 2, 0x0A: 2}.get(enc & 0x0F)


def open_mapped(path: str):
    """The file mapped read-only (the caller closes it)."""
    with open(path, "rb") as fh:
        return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)


def interval_names(layout: CodeLayout, starts: Sequence[int]) -> List[Optional[str]]:
    """The name of the function symbol that covers each address, or None."""
    np = _np()
    syms = layout.symbols
    if not len(syms) or not len(starts):
        return [None] * len(starts)
    vals, sizes = syms["value"], syms["size"]
    idx = np.searchsorted(vals, np.asarray(starts, np.int64), side="right") - 1
    out: List[Optional[str]] = []
    for a, i in zip(starts, idx.tolist()):
        best = None
        j = i
        # the nearest symbols at or below a: a sized one must cover a, a zero-size one start there
        while j >= 0 and j > i - 64:
            v, s = int(vals[j]), int(sizes[j])
            if a == v or a < v + s:
                best = j
                while best > 0 and int(vals[best - 1]) == v:     # the first (sized, .symtab) one at v
                    best -= 1
                break
            j -= 1
        if best is None:
            out.append(None)
        else:
            out.append(_name(layout.strtabs[int(syms["tab"][best])], int(syms["name"][best])))
    return out


def has_symbol(layout: CodeLayout, name: str) -> bool:
    """Whether any symbol table of the file names ``name`` (defined or imported)."""
    needle = b"\0" + name.encode() + b"\0"
    return any(needle in t for t in layout.strtabs)
