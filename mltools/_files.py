"""Small file helpers shared by the parts."""
from __future__ import annotations

import hashlib


def sha256_file(path: str, block_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in blocks (libraries can be GBs)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(block_size), b""):
            h.update(block)
    return h.hexdigest()


def read_head(path: str, size: int = 4096) -> bytes:
    """The first ``size`` bytes of a file, or b"" when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""
