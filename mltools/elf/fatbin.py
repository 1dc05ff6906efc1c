"""The GPU code ``nvcc`` embeds in host ELF files, listed from the fatbin headers alone.

``nvcc`` puts a library's device code in the ``.nv_fatbin`` section: one or
more *fatbin containers*, each a run of *entries*, an entry being a cubin (SASS
for one ``sm_XY``) or PTX (for one ``compute_XY``, with its PTX ISA version).
What the CUDA runtime needs to decide whether a kernel can run on a GPU (the
kind, the architecture, the ``a``/``f`` target variants, the PTX ISA) is in
each entry's header, so nothing is decompressed and only the headers are read.

Container header (16 bytes, 8-aligned; containers follow each other with zero
padding)::

    u32 magic 0xBA55ED50   u16 version 1   u16 header size 16   u64 bytes after this header

Entry header (64 bytes or more; the next entry starts after header + payload)::

    0  u16 kind (1 PTX, 2 cubin, 4 LTO-IR)   4  u32 header size   8  u64 payload size
    16 u32 compressed size   24 u16 minor, 26 u16 major (PTX ISA for PTX)
    28 u32 arch (75, 80, 90, 100, 120, ...)   40 u64 flags   56 u64 uncompressed size

Flags: 0x2000 compressed (LZ4), 0x8000 compressed (zstd), 0x100000 an
architecture-specific target (``sm_90a``), 0x200000 a family target
(``sm_120f``). The container and entry layouts are NVIDIA's private format:
checked against ``cuobjdump --list-elf --list-ptx`` on every CUDA library of
the torch, JAX and CuPy wheels and on ``nvcc`` builds for each target
(``tests/test_fatbin.py``). Like ``cuobjdump``, only ``.nv_fatbin`` counts:
``__nv_relfatbin`` holds the pre-link inputs of ``-rdc`` builds, and
libraries that keep more code elsewhere (cuFFT's ``.ldata``, cuBLASLt's and
cuDNN's ``.cask_resource``) load it themselves.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

from mltools.elf.sections import ElfSections, mapped_sections, section_names_at

__all__ = ["GpuCodeEntry", "GpuCode", "read_gpu_code", "gpu_code_of", "parse_fatbin", "parse_arch",
           "entry_runs_on", "summarize_targets", "target_key", "FATBIN_SECTION", "EM_CUDA"]

FATBIN_MAGIC = 0xBA55ED50
_MAGIC_BYTES = struct.pack("<I", FATBIN_MAGIC)
FATBIN_SECTION = ".nv_fatbin"
EM_CUDA = 190

_KIND = {1: "ptx", 2: "sass", 4: "ltoir"}
_F_LZ4, _F_ZSTD, _F_ARCH_SPECIFIC, _F_FAMILY = 0x2000, 0x8000, 0x100000, 0x200000
_CONTAINER = struct.Struct("<IHHQ")
# nvcc emits a cubin for every translation unit, kernels or not: those without are 1.4-2.3 KB
# (measured on the CUDA 13 wheels), one with two small kernels 4.8 KB. An uncompressed cubin is
# judged by its .text.<kernel> sections; a compressed one this small is taken as empty.
_EMPTY_CUBIN_MAX = 2560
_ENTRY = struct.Struct("<HHIQIIHHIIIQQQ")


@dataclass(frozen=True)
class GpuCodeEntry:
    kind: str                       # "sass" (a cubin), "ptx", "ltoir" or "kindN"
    arch: int                       # 80 for sm_80 / compute_80
    variant: str = ""               # "", "a" (arch-specific) or "f" (family)
    version: Tuple[int, int] = (0, 0)   # PTX ISA for PTX; the cubin's code version for SASS
    compression: Optional[str] = None   # "zstd", "lz4" or None
    kernels: Optional[bool] = None      # a cubin with kernels (True), without (False), unknown (None)

    @property
    def target(self) -> str:
        """``sm_90a`` for SASS, ``compute_90`` for PTX (nvcc's names)."""
        return f"{'compute' if self.kind == 'ptx' else 'sm'}_{self.arch}{self.variant}"

    @property
    def capability(self) -> Tuple[int, int]:
        """The compute capability it was built for: sm_86 -> (8, 6), sm_100 -> (10, 0)."""
        return divmod(self.arch, 10)


@dataclass(frozen=True)
class GpuCode:
    """The GPU code of one file."""
    path: str
    entries: Tuple[GpuCodeEntry, ...]
    container: str                  # "elf" (.nv_fatbin of a host object), "fatbin" or "cubin"

    @property
    def sass(self) -> Tuple[str, ...]:
        return tuple(sorted({e.target for e in self.entries if e.kind == "sass"}, key=target_key))

    @property
    def ptx(self) -> Tuple[str, ...]:
        return tuple(sorted({e.target for e in self.entries if e.kind == "ptx"}, key=target_key))

    @property
    def has_kernels(self) -> bool:
        """False when every cubin is an empty one (a file with no kernels of its own)."""
        return any(e.kind != "sass" or e.kernels is not False for e in self.entries)

    @property
    def newest_ptx_isa(self) -> Optional[Tuple[int, int]]:
        isas = [e.version for e in self.entries if e.kind == "ptx"]
        return max(isas) if isas else None


def target_key(target: str) -> Tuple[int, str]:
    num = target.split("_", 1)[1]
    digits = "".join(c for c in num if c.isdigit())
    return (int(digits or 0), num[len(digits):])


def parse_arch(text: str) -> Tuple[int, str]:
    """``sm_90a`` / ``compute_120f`` / ``90`` / ``9.0`` -> (arch number, variant); ValueError otherwise."""
    t = text.strip().lower()
    for prefix in ("sm_", "compute_", "sm", "compute"):
        if t.startswith(prefix):
            t = t[len(prefix):]
            break
    variant = ""
    if t[-1:] in ("a", "f"):
        t, variant = t[:-1], t[-1]
    if "." in t:
        major, _, minor = t.partition(".")
        if major.isdigit() and minor.isdigit() and len(minor) == 1:
            return int(major) * 10 + int(minor), variant
    elif t.isdigit() and len(t) >= 2:
        return int(t), variant
    raise ValueError(f"{text!r} is not a GPU architecture (sm_90, sm_120a, compute_80, 8.6)")


def entry_runs_on(entry: GpuCodeEntry, capability: Tuple[int, int]) -> bool:
    """Whether the CUDA runtime can use ``entry`` on a GPU of ``capability`` (SASS as is, PTX by JIT).

    NVIDIA's rules: a cubin for ``sm_XY`` runs on X.Z with Z >= Y (same major
    only); ``sm_XYa`` only on X.Y; ``sm_XYf`` on the family X.Z, Z >= Y. PTX for
    ``compute_XY`` is compiled for any X.Y or newer GPU, ``a`` only for X.Y, ``f``
    within the family.
    """
    if entry.kind not in ("sass", "ptx"):
        return False
    want = entry.capability
    if entry.variant == "a":
        return capability == want
    if entry.kind == "sass" or entry.variant == "f":
        return capability[0] == want[0] and capability[1] >= want[1]
    return capability >= want


def parse_fatbin(buf, start: int = 0, end: Optional[int] = None) -> List[GpuCodeEntry]:
    """The entries of every fatbin container found in ``buf[start:end]``."""
    end = len(buf) if end is None else end
    out: List[GpuCodeEntry] = []
    pos = start
    while True:
        i = buf.find(_MAGIC_BYTES, pos, end)
        if i < 0 or i + 16 > end:
            return out
        _magic, version, header_size, fat_size = _CONTAINER.unpack_from(buf, i)
        if version != 1 or header_size != 16 or i + 16 + fat_size > end:
            pos = i + 4          # the magic's bytes inside something else
            continue
        p, cend = i + 16, i + 16 + fat_size
        while p + 64 <= cend:
            (kind, _v, ehsize, payload, _csize, _opt, minor, major, arch,
             _idoff, _idlen, flags, _zero, dsize) = _ENTRY.unpack_from(buf, p)
            if ehsize < 64 or p + ehsize + payload > cend:
                break
            variant = "a" if flags & _F_ARCH_SPECIFIC else ("f" if flags & _F_FAMILY else "")
            compression = "zstd" if flags & _F_ZSTD else ("lz4" if flags & _F_LZ4 else None)
            kernels = None
            if kind == 2:
                if compression is None:
                    names = section_names_at(buf, p + ehsize, p + ehsize + payload)
                    kernels = any(n.startswith(".text.") for n in names) if names else None
                elif 0 < dsize < _EMPTY_CUBIN_MAX:
                    kernels = False
            out.append(GpuCodeEntry(
                kind=_KIND.get(kind, f"kind{kind}"), arch=arch, variant=variant, version=(major, minor),
                compression=compression, kernels=kernels))
            p += ehsize + payload
        pos = max(cend, i + 4)


def _cubin_entry(m: ElfSections) -> Optional[GpuCodeEntry]:
    """A bare cubin (EM_CUDA): its architecture from e_flags (ABI version 8 and later: bits 8-15)."""
    buf = m.buf
    if len(buf) < 52:
        return None
    e = "<" if buf[5] == 1 else ">"
    flags, = struct.unpack_from(e + "I", buf, 48 if buf[4] == 2 else 36)
    arch = (flags >> 8) & 0xFF if buf[8] >= 8 else flags & 0xFF
    return GpuCodeEntry("sass", arch) if arch else None


def gpu_code_of(m: ElfSections) -> Optional[GpuCode]:
    """The GPU code of an already mapped file: None when it has none."""
    if m.machine == EM_CUDA:
        entry = _cubin_entry(m)
        return GpuCode(m.path, (entry,), "cubin") if entry else None
    if m.machine is not None:
        sec = m.named(FATBIN_SECTION)
        if sec is None or not sec.size:
            return None
        entries = parse_fatbin(m.buf, sec.offset, sec.offset + sec.size)
        return GpuCode(m.path, tuple(entries), "elf") if entries else None
    if bytes(m.buf[:4]) == _MAGIC_BYTES:        # a standalone .fatbin (nvcc -fatbin)
        entries = parse_fatbin(m.buf)
        return GpuCode(m.path, tuple(entries), "fatbin") if entries else None
    return None


def read_gpu_code(path: str) -> Optional[GpuCode]:
    """The GPU code in ``path`` (a host ELF file, a ``.fatbin`` or a cubin); None when it has none.

    Raises OSError when the file cannot be read.
    """
    with mapped_sections(path) as m:
        return gpu_code_of(m)


def summarize_targets(entries: Iterable[GpuCodeEntry]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """(SASS targets, PTX targets) of many entries, each sorted by architecture."""
    entries = list(entries)
    sass = {e.target for e in entries if e.kind == "sass"}
    ptx = {e.target for e in entries if e.kind == "ptx"}
    return tuple(sorted(sass, key=target_key)), tuple(sorted(ptx, key=target_key))
