"""Small ELF shared objects for any machine, class and byte order, written byte by byte.

For tests that compare mltools' reader with readelf on architectures no
compiler here targets. Each file has a PT_LOAD covering it, PT_DYNAMIC
(NEEDED, SONAME, RUNPATH, FLAGS, FLAGS_1, DT_HASH, the symbol and version
tables), a PT_NOTE with a build-id and an ABI tag, optionally PT_INTERP and
PT_GNU_STACK, and optionally section headers (.dynsym, .dynstr,
.gnu.version*, .note) that point at the same bytes.
"""
from __future__ import annotations

import struct
from typing import Optional, Sequence

DT = {"NULL": 0, "NEEDED": 1, "HASH": 4, "STRTAB": 5, "SYMTAB": 6, "STRSZ": 10, "SYMENT": 11, "SONAME": 14,
      "RUNPATH": 29, "FLAGS": 30, "VERSYM": 0x6FFFFFF0, "FLAGS_1": 0x6FFFFFFB, "VERDEF": 0x6FFFFFFC,
      "VERDEFNUM": 0x6FFFFFFD, "VERNEED": 0x6FFFFFFE, "VERNEEDNUM": 0x6FFFFFFF}


def _elf_hash(name: bytes) -> int:
    h = 0
    for c in name:
        h = ((h << 4) + c) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


def make_elf(machine: int, *, elf_class: int = 64, little: bool = True, osabi: int = 0, etype: int = 3,
             e_flags: int = 0, needed: Sequence[str] = ("libc.so.6",), soname: Optional[str] = "libgen.so.1",
             runpath: Optional[str] = "$ORIGIN/../lib", interp: Optional[str] = None, flags: int = 0,
             flags_1: int = 0, build_id: bytes = bytes(range(20)), defined: Sequence[str] = ("gen_a", "gen_b"),
             undefined: Sequence[str] = ("puts",), sections: bool = True, stack_exec: bool = False) -> bytes:
    e = "<" if little else ">"
    wide = elf_class == 64
    word = "Q" if wide else "I"
    ehsize, phent, shent = (64, 56, 64) if wide else (52, 32, 40)
    symsz = 24 if wide else 16
    dynsz = 16 if wide else 8
    align8 = 8 if wide else 4

    # strings
    strtab = bytearray(b"\0")

    def s(text: str) -> int:
        off = len(strtab)
        strtab.extend(text.encode() + b"\0")
        return off

    need_offs = [s(n) for n in needed]
    soname_off = s(soname) if soname is not None else None
    runpath_off = s(runpath) if runpath is not None else None
    sym_names = [(n, True) for n in defined] + [(n, False) for n in undefined]
    sym_offs = [s(n) for n, _ in sym_names]
    ver_need_file = s(needed[0]) if needed else s("libc.so.6")
    ver_need = [("GLIBC_2.2.5", 2), ("GLIBC_2.34", 3)]
    ver_need_offs = [s(v) for v, _ in ver_need]
    ver_def_base = s(soname or "libgen.so.1")
    ver_def = s("GEN_1.0")

    # layout: headers, then the blobs, 8-aligned
    nph = 4 + (1 if interp is not None else 0)
    pos = ehsize + nph * phent
    blobs = []

    def place(data: bytes, align: int = 8) -> int:
        nonlocal pos
        pos = (pos + align - 1) & -align
        off = pos
        blobs.append((off, data))
        pos += len(data)
        return off

    interp_off = place(interp.encode() + b"\0", 1) if interp is not None else None
    nsyms = 1 + len(sym_names)
    syms = bytearray(symsz)                    # index 0: the null symbol
    for i, ((name, is_def), noff) in enumerate(zip(sym_names, sym_offs)):
        info = (1 << 4) | 2                    # GLOBAL FUNC
        shndx = 5 if is_def else 0
        value = 0x1000 + 16 * i if is_def else 0
        if wide:
            syms += struct.pack(e + "IBBHQQ", noff, info, 0, shndx, value, 8 if is_def else 0)
        else:
            syms += struct.pack(e + "IIIBBH", noff, value, 8 if is_def else 0, info, 0, shndx)
    sym_off = place(bytes(syms))
    # versym: defined -> GEN_1.0 (index 2 in verdef numbering: base is 1), undefined -> GLIBC_2.2.5 (idx 3)
    versym = [0] + [2 if d else 3 for _n, d in sym_names]
    versym_off = place(struct.pack(e + f"{nsyms}H", *versym), 2)
    # verdef: base (index 1, VER_FLG_BASE) and GEN_1.0 (index 2)
    vd = bytearray()
    vd += struct.pack(e + "HHHHIII", 1, 1, 1, 1, _elf_hash(b"libgen.so.1"), 20, 28)
    vd += struct.pack(e + "II", ver_def_base, 0)
    vd += struct.pack(e + "HHHHIII", 1, 0, 2, 1, _elf_hash(b"GEN_1.0"), 20, 0)
    vd += struct.pack(e + "II", ver_def, 0)
    verdef_off = place(bytes(vd), 4)
    # verneed: one file, two versions (indexes 3, 4)
    vn = bytearray(struct.pack(e + "HHIII", 1, len(ver_need), ver_need_file, 16, 0))
    for j, ((vname, _x), voff) in enumerate(zip(ver_need, ver_need_offs)):
        nxt = 16 if j + 1 < len(ver_need) else 0
        vn += struct.pack(e + "IHHII", _elf_hash(vname.encode()), 0, 3 + j, voff, nxt)
    verneed_off = place(bytes(vn), 4)
    # DT_HASH: one bucket, every chain empty; nchain is the symbol count
    hash_off = place(struct.pack(e + "II", 1, nsyms) + struct.pack(e + "I", 0) + struct.pack(e + f"{nsyms}I",
                                                                                          *([0] * nsyms)), 4)
    str_off = place(bytes(strtab), 1)
    # notes: ABI tag, build-id
    def note(name: bytes, ntype: int, desc: bytes) -> bytes:
        name0 = name + b"\0"
        pad = lambda b: b + b"\0" * (-len(b) % 4)   # noqa: E731
        return struct.pack(e + "III", len(name0), len(desc), ntype) + pad(name0) + pad(desc)
    notes = note(b"GNU", 1, struct.pack(e + "IIII", 0, 3, 2, 0)) + note(b"GNU", 3, build_id)
    note_off = place(notes, 4)
    # dynamic
    dyn = []
    for off in need_offs:
        dyn.append(("NEEDED", off))
    if soname_off is not None:
        dyn.append(("SONAME", soname_off))
    if runpath_off is not None:
        dyn.append(("RUNPATH", runpath_off))
    dyn += [("HASH", hash_off), ("STRTAB", str_off), ("SYMTAB", sym_off), ("STRSZ", len(strtab)),
            ("SYMENT", symsz), ("VERSYM", versym_off), ("VERDEF", verdef_off), ("VERDEFNUM", 2),
            ("VERNEED", verneed_off), ("VERNEEDNUM", 1)]
    if flags:
        dyn.append(("FLAGS", flags))
    if flags_1:
        dyn.append(("FLAGS_1", flags_1))
    dyn.append(("NULL", 0))
    dyn_bytes = b"".join(struct.pack(e + ("qQ" if wide else "iI"), DT[t], v) for t, v in dyn)
    dyn_off = place(dyn_bytes, align8)

    # section headers (optional): null, .interp?, .dynsym, .dynstr, .gnu.version, .gnu.version_d,
    # .gnu.version_r, .note.gnu, .dynamic, .shstrtab
    shdrs = []
    shstr = bytearray(b"\0")

    def sh(name, stype, flags_, addr, size, link=0, info=0, align=1, entsize=0):
        off = len(shstr)
        shstr.extend(name.encode() + b"\0")
        shdrs.append((off, stype, flags_, addr, addr, size, link, info, align, entsize))

    shoff = 0
    shstrndx = 0
    if sections:
        shdrs.append((0,) * 10)
        sh(".dynsym", 11, 2, sym_off, len(syms), link=2, info=1, align=align8, entsize=symsz)
        sh(".dynstr", 3, 2, str_off, len(strtab))
        sh(".gnu.version", 0x6FFFFFFF, 2, versym_off, 2 * nsyms, link=1, align=2, entsize=2)
        sh(".gnu.version_d", 0x6FFFFFFD, 2, verdef_off, len(vd), link=2, info=2, align=4)
        sh(".gnu.version_r", 0x6FFFFFFE, 2, verneed_off, len(vn), link=2, info=1, align=4)
        sh(".note.gnu", 7, 2, note_off, len(notes), align=4)
        sh(".dynamic", 6, 3, dyn_off, len(dyn_bytes), link=2, align=align8, entsize=dynsz)
        shstrndx = len(shdrs)
        sh(".shstrtab", 3, 0, 0, 0)
        shstr_off = place(bytes(shstr), 1)
        last = shdrs[-1]
        shdrs[-1] = (last[0], last[1], last[2], 0, shstr_off, len(shstr), 0, 0, 1, 0)
        shoff = (pos + align8 - 1) & -align8
        pos = shoff + len(shdrs) * shent

    total = pos
    out = bytearray(total)
    ident = b"\x7fELF" + bytes([2 if wide else 1, 1 if little else 2, 1, osabi, 0]) + b"\0" * 7
    out[:16] = ident
    phoff = ehsize
    struct.pack_into(e + "HHI" + word + word + word + "IHHHHHH", out, 16, etype, machine, 1, 0, phoff, shoff,
                     e_flags, ehsize, phent, nph, shent if sections else 0, len(shdrs), shstrndx)
    phdrs = []
    if interp is not None:
        phdrs.append((3, 4, interp_off, len(interp) + 1, 1))
    phdrs.append((1, 5, 0, total, 0x1000))                        # PT_LOAD, R+X, the whole file
    phdrs.append((2, 6, dyn_off, len(dyn_bytes), align8))         # PT_DYNAMIC
    phdrs.append((4, 4, note_off, len(notes), 4))                 # PT_NOTE
    phdrs.append((0x6474E551, 7 if stack_exec else 6, 0, 0, 16))  # PT_GNU_STACK
    for i, (ptype, pflags, off, size, align) in enumerate(phdrs):
        if wide:
            struct.pack_into(e + "IIQQQQQQ", out, phoff + i * phent, ptype, pflags, off, off, off, size, size, align)
        else:
            struct.pack_into(e + "IIIIIIII", out, phoff + i * phent, ptype, off, off, off, size, size, pflags, align)
    for off, data in blobs:
        out[off:off + len(data)] = data
    for i, h in enumerate(shdrs):
        if wide:
            struct.pack_into(e + "IIQQQQIIQQ", out, shoff + i * shent, *h)
        else:
            struct.pack_into(e + "IIIIIIIIII", out, shoff + i * shent, *h)
    return bytes(out)
