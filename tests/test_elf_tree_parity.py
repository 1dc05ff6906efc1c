"""Parity with the real loader: the set of resolved realpaths equals ldd's.

ldd runs the host's ld.so in trace mode; it is the oracle for real files.
For programs ldd is given the realpath, because ldd takes $ORIGIN from the
path it is given while a program the kernel starts uses its realpath (see
test_elf_tree_rules.py for that case).
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

from mltools.elf.ldtree import Resolver, resolve_tree
from mltools.elf.reader import ElfFormatError, read_elf

pytestmark = pytest.mark.skipif(shutil.which("ldd") is None, reason="needs ldd")

LIBDIR = "/usr/lib/x86_64-linux-gnu"


def ldd(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=60,
                         env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}).stdout
    found, missing = set(), set()
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("linux-vdso"):
            continue
        m = re.match(r"(\S+) => not found", line)
        if m:
            missing.add(m.group(1))
            continue
        m = re.match(r"\S+ => (\S+) \(0x", line) or re.match(r"(/\S+) \(0x", line)
        if m:
            found.add(os.path.realpath(m.group(1)))
    return found, missing


def _dynamic_elves(paths):
    out = []
    for p in paths:
        if not os.path.isfile(p):
            continue
        try:
            info = read_elf(p)
        except (ElfFormatError, OSError, Exception):
            continue
        if info.has_dynamic and info.elf_class == 64 and info.machine == 62:
            out.append((p, info))
    return out


def _sample(paths, n):
    elves = _dynamic_elves(sorted(paths))
    step = max(1, len(elves) // n)
    return elves[::step][:n]


def _site_packages_sos():
    import numpy
    base = os.path.dirname(os.path.dirname(numpy.__file__))
    files = glob.glob(f"{base}/numpy/**/*.so", recursive=True) + glob.glob(f"{base}/numpy.libs/*.so*")
    try:
        import importlib.util
        spec = importlib.util.find_spec("torch")
        if spec and spec.origin:
            tdir = os.path.dirname(spec.origin)
            files += sorted(glob.glob(f"{tdir}/lib/*.so*"))[:12] + glob.glob(f"{tdir}/*.so")
    except Exception:
        pass
    return files


CASES = (_sample(glob.glob("/usr/bin/*"), 40) + _sample(glob.glob(f"{LIBDIR}/*.so*"), 40)
         + _sample(_site_packages_sos(), 30))


@pytest.fixture(scope="module")
def resolver():
    return Resolver()


@pytest.mark.parametrize("path,info", CASES, ids=[os.path.basename(p) for p, _ in CASES])
def test_tree_matches_ldd(path, info, resolver):
    tree = resolve_tree(path, resolver=resolver)
    ours = {lib.path for lib in tree.libraries if lib.path}
    ours_missing = {lib.soname for lib in tree.libraries if lib.path is None}
    theirs, missing = ldd(os.path.realpath(path) if info.interp else path)
    assert ours == theirs
    assert ours_missing == missing


def test_the_sample_is_not_trivial():
    assert len(CASES) >= 60
    assert any("numpy" in p for p, _ in CASES)


def test_python_interpreter_matches_ldd(resolver):
    exe = os.path.realpath(sys.executable)
    tree = resolve_tree(exe, resolver=resolver)
    assert {lib.path for lib in tree.libraries if lib.path} == ldd(exe)[0]
