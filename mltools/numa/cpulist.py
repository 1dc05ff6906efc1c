"""The kernel's two ways of writing a set of CPUs (or nodes): lists and masks.

A list is ``"0-3,8,10-11"`` (``cpulist``, ``local_cpulist``, ``*_list``); a mask
is comma-separated 32-bit hex words, most significant first
(``"00000000,0000ff00"``: ``cpumap``, ``local_cpus``, ``package_cpus``). hwloc
reads only masks, so where a dump has both and they disagree, the mask is the
one that agrees with lstopo.
"""
from __future__ import annotations

from typing import Iterable, Tuple

__all__ = ["parse_cpulist", "format_cpulist", "parse_cpumask", "format_cpumask"]


def parse_cpulist(text: str) -> Tuple[int, ...]:
    """``"0-3,8,10-11"`` -> (0, 1, 2, 3, 8, 10, 11); empty text -> ()."""
    out = set()
    for part in text.replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, _, hi = part.partition("-")
            if ":" in hi:   # "0-31:2" stride form (kernel cpulist syntax)
                hi, _, step = hi.partition(":")
                out.update(range(int(lo), int(hi) + 1, int(step.split("/")[0])))
            else:
                out.update(range(int(lo), int(hi) + 1))
        else:
            out.add(int(part))
    return tuple(sorted(out))


def format_cpulist(ids: Iterable[int]) -> str:
    """(0, 1, 2, 3, 8) -> ``"0-3,8"``; the inverse of parse_cpulist."""
    ids = sorted(set(ids))
    parts = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


def parse_cpumask(text: str) -> Tuple[int, ...]:
    """``"00000000,0000ff00"`` -> (8, ..., 15). Words may carry ``0x``; an empty
    word is 0; raises ValueError on anything that is not hex."""
    value = 0
    for word in text.strip().split(","):
        word = word.strip()
        if word.lower().startswith("0x"):
            word = word[2:]
        value = (value << 32) | (int(word, 16) if word else 0)
    return tuple(i for i in range(value.bit_length()) if value >> i & 1)


def format_cpumask(ids: Iterable[int]) -> str:
    """(8, ..., 15) -> ``"0000ff00"``; the inverse of parse_cpumask."""
    value = 0
    for i in ids:
        value |= 1 << i
    words = []
    while True:
        words.append(f"{value & 0xffffffff:08x}")
        value >>= 32
        if not value:
            break
    return ",".join(reversed(words))
