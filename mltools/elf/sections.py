"""Section headers of an ELF file, for the readers that need section contents.

The loader never looks at sections (``mltools.elf.reader`` does not either),
but two questions are answered only there: the GPU code embedded by ``nvcc``
(``.nv_fatbin``, see :mod:`mltools.elf.fatbin`) and the library names a
library passes to ``dlopen`` (string literals in ``.rodata``, see
:mod:`mltools.elf.dlnames`). Both read one file through one mapping:
:func:`mapped_sections` opens it once and gives the buffer and the headers.

Every header is checked against the file size; a file whose section table is
missing (stripped of it with ``sstrip``) or broken has no sections here, which
is what ``readelf -S`` reports too.
"""
from __future__ import annotations

import mmap
import os
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

from mltools.elf.files import ELFMAG

__all__ = ["Section", "ElfSections", "mapped_sections", "section_names_at", "SHT_NOBITS"]

SHT_NOBITS = 8


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int           # bytes in the file (0 for SHT_NOBITS)


@dataclass(frozen=True)
class ElfSections:
    """A mapped file and its section headers (valid inside :func:`mapped_sections`)."""
    path: str
    buf: object                         # mmap (or b"" for an empty file)
    sections: Tuple[Section, ...]
    machine: Optional[int]              # e_machine, None when the file is not ELF
    elf_type: Optional[int]

    def named(self, name: str) -> Optional[Section]:
        for s in self.sections:
            if s.name == name:
                return s
        return None


def _parse(buf, base: int = 0, end: Optional[int] = None) -> Tuple[Tuple[Section, ...], Optional[int], Optional[int]]:
    """The section headers of the ELF image at ``buf[base:end]`` (offsets relative to ``base``)."""
    size = (len(buf) if end is None else end) - base
    if size < 52 or bytes(buf[base:base + 4]) != ELFMAG or buf[base + 4] not in (1, 2) or buf[base + 5] not in (1, 2):
        return (), None, None
    is64 = buf[base + 4] == 2
    e = "<" if buf[base + 5] == 1 else ">"
    if is64:
        if size < 64:
            return (), None, None
        elf_type, machine = struct.unpack_from(e + "HH", buf, base + 16)
        shoff, = struct.unpack_from(e + "Q", buf, base + 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", buf, base + 0x3A)
        fmt, want = e + "IIQQQQIIQQ", 64
    else:
        elf_type, machine = struct.unpack_from(e + "HH", buf, base + 16)
        shoff, = struct.unpack_from(e + "I", buf, base + 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", buf, base + 0x2E)
        fmt, want = e + "IIIIIIIIII", 40
    if shoff == 0 or shentsize != want or shoff + want > size:
        return (), machine, elf_type
    if shnum == 0:          # more than 0xff00 sections: the count is in section 0's sh_size
        shnum = struct.unpack_from(fmt, buf, base + shoff)[5]
    if shoff + shnum * want > size:
        return (), machine, elf_type
    raw = [struct.unpack_from(fmt, buf, base + shoff + i * want) for i in range(shnum)]
    if shstrndx == 0xFFFF:  # SHN_XINDEX: the index is in section 0's sh_link
        shstrndx = raw[0][6] if raw else 0
    if not raw or shstrndx >= len(raw):
        return (), machine, elf_type
    str_off, str_size = raw[shstrndx][4], raw[shstrndx][5]
    if str_off + str_size > size:
        return (), machine, elf_type
    out = []
    for name, typ, flags, addr, offset, sz, *_ in raw:
        if name >= str_size:
            label = ""
        else:
            stop = buf.find(b"\0", base + str_off + name, base + str_off + str_size)
            label = bytes(buf[base + str_off + name:stop if stop >= 0 else base + str_off + str_size]).decode("latin-1")
        if typ == SHT_NOBITS or offset + sz > size:
            sz = 0 if typ == SHT_NOBITS else max(0, size - offset)
        out.append(Section(label, typ, flags, addr, offset, sz))
    return tuple(out), machine, elf_type


def section_names_at(buf, base: int, end: int) -> Tuple[str, ...]:
    """The section names of an ELF image embedded in ``buf`` (a cubin inside a fatbin)."""
    return tuple(s.name for s in _parse(buf, base, end)[0])


@contextmanager
def mapped_sections(path: str) -> Iterator[ElfSections]:
    """Map ``path`` read-only and parse its section headers; raises OSError when it cannot be opened."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.fstat(fd).st_size
        buf = mmap.mmap(fd, 0, prot=mmap.PROT_READ) if size else b""
    finally:
        os.close(fd)
    try:
        sections, machine, elf_type = _parse(buf)
        yield ElfSections(path, buf, sections, machine, elf_type)
    finally:
        if not isinstance(buf, bytes):
            buf.close()

