"""Identical libraries shipped twice (``numpy.libs`` and ``scipy.libs`` often
carry byte-identical grafted copies). Files are hashed only when another file
has exactly the same size, so the big ones (libtorch_cpu) are rarely read."""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, Iterable, List, Tuple

from mltools._files import sha256_file


def identical_groups(paths: Iterable[str]) -> List[Tuple[str, Tuple[str, ...]]]:
    """(sha256, paths) for every set of two or more distinct files with the same bytes."""
    by_size: Dict[int, List[str]] = defaultdict(list)
    seen_inodes = set()
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_inodes:            # hard links and symlinks are one file
            continue
        seen_inodes.add(key)
        by_size[st.st_size].append(p)
    groups = []
    for size, same in by_size.items():
        if len(same) < 2 or size == 0:
            continue
        by_hash: Dict[str, List[str]] = defaultdict(list)
        for p in same:
            try:
                by_hash[sha256_file(p)].append(p)
            except OSError:
                continue
        for digest, ps in by_hash.items():
            if len(ps) > 1:
                groups.append((digest, tuple(sorted(ps))))
    groups.sort(key=lambda g: g[1])
    return groups
