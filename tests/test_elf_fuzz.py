"""Fuzzing: byte flips and truncations of real libraries never give a traceback or a hang.

Every reader entry point, inspect, the resolver (the bad file as the root and as
a candidate on a search path) and scan must either work or raise an
MltoolsError (one-line message, exit 2 in the CLI). Seeded and time-bounded.
"""
from __future__ import annotations

import os
import random
import shutil
import sys
import time

import pytest

from mltools.elf.inspect import inspect_file
from mltools.elf.ldtree import Resolver, resolve_tree
from mltools.elf.reader import read_elf, read_notes, read_symbols
from mltools.elf.scan import scan_paths
from mltools.errors import MltoolsError

LIBDIR = "/usr/lib/x86_64-linux-gnu"
SEEDS = [p for p in (f"{LIBDIR}/libz.so.1", os.path.realpath(sys.executable), "/usr/bin/true",
                     f"{LIBDIR}/libpcre2-8.so.0") if os.path.exists(p)]
BUDGET_S = 6.0


def _mutants(data: bytes, rng: random.Random, n: int):
    size = len(data)
    for i in range(n):
        buf = bytearray(data)
        mode = i % 4
        if mode == 0:                                   # truncation
            cut = rng.choice([rng.randrange(0, 128), rng.randrange(0, 4096), rng.randrange(0, size)])
            yield bytes(buf[:cut])
            continue
        if mode == 1:                                   # flips in the headers
            lo, hi = 0, min(size, 4096)
        elif mode == 2:                                 # flips anywhere
            lo, hi = 0, size
        else:                                           # 32-bit words set to extremes in the headers
            for _ in range(rng.randrange(1, 6)):
                off = rng.randrange(0, min(size, 1024) - 8) & ~3
                buf[off:off + 4] = rng.choice([b"\xff\xff\xff\xff", b"\0\0\0\0", b"\xff\xff\xff\x7f"])
            yield bytes(buf)
            continue
        for _ in range(rng.randrange(1, 24)):
            buf[rng.randrange(lo, hi)] = rng.randrange(256)
        yield bytes(buf)


def _check(fn, *args, **kw):
    t0 = time.perf_counter()
    try:
        fn(*args, **kw)
    except MltoolsError as exc:
        assert "\n" not in exc.message
    took = time.perf_counter() - t0
    assert took < 5.0, f"{fn.__name__} took {took:.1f}s"


@pytest.mark.skipif(not SEEDS, reason="no seed libraries")
def test_fuzzed_elves_never_traceback_or_hang(tmp_path):
    rng = random.Random(20261127)
    target = tmp_path / "libfuzz.so.1"
    cand_dir = tmp_path / "cand"
    cand_dir.mkdir()
    start = time.perf_counter()
    done = 0
    per_seed = 250
    for seed in SEEDS:
        data = open(seed, "rb").read()
        for mutant in _mutants(data, rng, per_seed):
            if time.perf_counter() - start > BUDGET_S:
                break
            target.write_bytes(mutant)
            for fn in (read_elf, read_notes, read_symbols):
                _check(fn, str(target))
            if done % 8 == 0:
                _check(inspect_file, str(target), symbols=True)
            _check(resolve_tree, str(target), resolver=Resolver(), use_etc_preload=False)
            done += 1
    assert done >= 100


@pytest.mark.skipif(not SEEDS, reason="no seed libraries")
def test_fuzzed_candidates_and_scan(tmp_path, cbuild):
    """A mutated copy as a search-path candidate: skipped, fatal or used, never an exception."""
    rng = random.Random(7)
    lib = cbuild.build("libcand.so", "int f(void){return 1;}", shared=True, flags=["-Wl,-soname,libcand.so"])
    exe = cbuild.build("candmain", "int f(void);int main(void){return f();}",
                       flags=[str(lib), f"-Wl,-rpath,{tmp_path}/cand", "-Wl,--enable-new-dtags"])
    (tmp_path / "cand").mkdir()
    data = lib.read_bytes()
    for i, mutant in enumerate(_mutants(data, rng, 120)):
        (tmp_path / "cand" / "libcand.so").write_bytes(mutant)
        tree = resolve_tree(str(exe), resolver=Resolver(), use_etc_preload=False)
        assert [lib for lib in tree.libraries if "libcand.so" in lib.requested_as]
        if i % 20 == 0:
            report = scan_paths([str(tmp_path / "cand")])
            assert report is not None
    shutil.rmtree(tmp_path / "cand")
