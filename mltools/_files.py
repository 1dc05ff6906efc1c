"""Small file helpers shared by the parts."""
from __future__ import annotations


def sha256_file(path: str, block_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in blocks (libraries can be GBs).

    Files under 256 KiB go through CPython's own _sha256: loading OpenSSL for
    hashlib costs more than hashing that much without it (a tenth of a
    one-file ``elf inspect``); bigger ones through hashlib's faster code."""
    with open(path, "rb") as fh:
        head = fh.read(1 << 18)
        small = _small_sha256() if len(head) < 1 << 18 else None
        if small is not None:
            return small(head).hexdigest()
        import hashlib

        h = hashlib.sha256(head)
        for block in iter(lambda: fh.read(block_size), b""):
            h.update(block)
    return h.hexdigest()


def _small_sha256():
    for name in ("_sha2", "_sha256"):      # _sha2 from Python 3.12
        try:
            return __import__(name).sha256
        except ImportError:
            continue
    return None


def read_head(path: str, size: int = 4096) -> bytes:
    """The first ``size`` bytes of a file, or b"" when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def check_writable(path: str, option: str) -> None:
    """Refuse, before any work starts, an output file that could not be written
    (``bench sum --plot /no/such/dir/x.png`` must not run the benchmark first)."""
    import os

    from mltools.errors import UsageError

    parent = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory")
    if not os.path.isdir(parent):
        raise UsageError(f"{option} {path}: no such directory {parent}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path}: not writable")
    if not os.path.exists(path) and not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot create files in {parent}")
