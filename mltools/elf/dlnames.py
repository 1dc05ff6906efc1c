"""Library names an ELF file may pass to ``dlopen``: the ``lib*.so*`` strings in its read-only data.

A library that opens another at run time (cuDNN its sub-libraries, cuBLASLt
``libnvrtc.so.13``, every CUDA library ``libcuda.so.1``) keeps the name as a
string literal, in ``.rodata`` (or ``.lrodata``, the large-model read-only
data where cuFFT keeps its names). Reading those sections finds the names
without running anything; what is only text (an error message naming a
library) is found too, so callers keep the names they know how to judge.

Names built at run time are found as their printf templates
(``libnvrtc.so.%d``) or as stems (``libcudnn_ops.so``, completed by cuDNN with
its own version): :class:`DlopenNames` keeps both apart.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Tuple

from mltools.elf.sections import SHT_NOBITS, ElfSections

__all__ = ["DlopenNames", "dlopen_names_of", "RODATA_PREFIXES"]

RODATA_PREFIXES = (".rodata", ".lrodata")

# No look-behind at the start: with the literal "lib" first, re finds candidates
# with its fast literal search (~800 MB/s); a look-behind first is ~40x slower.
# (one pass finds names and printf templates alike: a name with a % is a template)
_NAME = re.compile(rb"lib[A-Za-z0-9_+\-%]+(?:\.[A-Za-z0-9_+\-%]+)*?\.so(?:\.(?:[0-9]+|%[a-z]))*(?![A-Za-z0-9_%])")
_NAME_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-.%")


@dataclass(frozen=True)
class DlopenNames:
    names: Tuple[str, ...]          # complete names and stems, sorted: libcuda.so.1, libcudnn_ops.so
    templates: Tuple[str, ...]      # printf templates: libnvrtc.so.%d
    bytes_scanned: int = 0


def _words(rx, buf) -> set:
    out = set()
    for m in rx.finditer(buf):
        s = m.start()
        if s and buf[s - 1] in _NAME_CHARS:
            continue            # inside a longer word ("zlib.so", "mylib.so")
        out.add(bytes(m.group()).decode("ascii"))
    return out


def dlopen_names_of(m: ElfSections) -> DlopenNames:
    """The library names in the read-only data sections of a mapped file."""
    names: set = set()
    templates: set = set()
    scanned = 0
    for sec in m.sections:
        if sec.type == SHT_NOBITS or not sec.size or not sec.name.startswith(RODATA_PREFIXES):
            continue
        view = memoryview(m.buf)[sec.offset:sec.offset + sec.size]
        try:
            found = _words(_NAME, view)
        finally:
            view.release()
        templates |= {w for w in found if "%" in w}
        names |= {w for w in found if "%" not in w}
        scanned += sec.size
    return DlopenNames(tuple(sorted(names)), tuple(sorted(templates)), scanned)
