"""The struct/mmap ELF reader against binutils (readelf, nm) on real files."""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

import pytest

from mltools.elf.reader import ElfFormatError, read_elf, read_notes, read_symbols

LIBDIR = "/usr/lib/x86_64-linux-gnu"


def _sample(n=25):
    files = sorted(f for f in glob.glob("/usr/bin/*") + glob.glob(f"{LIBDIR}/*.so*")
                   if os.path.isfile(f) and not os.path.islink(f))
    elves = []
    for f in files:
        with open(f, "rb") as fh:
            if fh.read(4) == b"\x7fELF":
                elves.append(f)
    step = max(1, len(elves) // n)
    return elves[::step][:n]


def _readelf(args, path):
    return subprocess.run(["readelf", *args, path], capture_output=True, text=True,
                          env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "")}).stdout


needs_binutils = pytest.mark.skipif(shutil.which("readelf") is None or shutil.which("nm") is None,
                                    reason="binutils not installed")


@needs_binutils
@pytest.mark.parametrize("path", _sample())
def test_dynamic_section_matches_readelf(path):
    out = _readelf(["-dhlW"], path)
    info = read_elf(path)
    assert list(info.needed) == re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", out)
    soname = re.findall(r"\(SONAME\)\s+Library soname: \[(.*)\]", out)
    assert info.soname == (soname[0] if soname else None)
    runpath = re.findall(r"\(RUNPATH\)\s+Library runpath: \[(.*)\]", out)
    assert info.runpath == (runpath[0] if runpath else None)
    rpath = re.findall(r"\(RPATH\)\s+Library rpath: \[(.*)\]", out)
    assert info.rpath == (rpath[0] if rpath else None)
    interp = re.findall(r"\[Requesting program interpreter: (.*)\]", out)
    assert info.interp == (interp[0] if interp else None)
    assert ("Class:                             ELF64" in out) == (info.elf_class == 64)
    assert "X86-64" in out and info.machine == 62


@needs_binutils
@pytest.mark.parametrize("path", [f"{LIBDIR}/libstdc++.so.6", "/usr/bin/ls", f"{LIBDIR}/libm.so.6"])
def test_symbols_and_versions_match_nm_and_readelf(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} not installed")
    syms = read_symbols(path)
    nm = subprocess.run(["nm", "-D", "--with-symbol-versions", path], capture_output=True, text=True).stdout
    expected = set()
    for line in nm.splitlines():
        parts = line.split()
        name = parts[-1]
        kind = parts[-2]
        expected.add((name, kind in "Uw"))
    ours = set()
    for s in syms.symbols:
        if not s.name:
            continue
        ours.add((s.versioned_name, not s.defined))
    assert ours == expected
    out = _readelf(["-VW"], path)
    needed_versions = set(re.findall(r"Name: (\S+)\s+Flags: \S+\s+Version: \d+", out))
    ours_needed = {v for vn in syms.version_needs for v in vn.versions + vn.weak}
    assert ours_needed == needed_versions
    defs = set(re.findall(r"Index: \d+\s+Cnt: \d+\s+Name: (\S+)", out))
    assert {d.name for d in syms.version_defs} == defs


@needs_binutils
def test_build_id_matches_readelf():
    path = "/usr/bin/ls"
    out = _readelf(["-nW"], path)
    m = re.search(r"Build ID: ([0-9a-f]+)", out)
    assert m and read_notes(path).build_id == m.group(1)


def test_bad_inputs_raise_one_clear_error(tmp_path):
    lfs = tmp_path / "libx.so"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n")
    with pytest.raises(ElfFormatError) as ei:
        read_elf(str(lfs))
    assert ei.value.kind == "not-elf" and "Git LFS" in ei.value.message
    empty = tmp_path / "empty.so"
    empty.write_bytes(b"")
    with pytest.raises(ElfFormatError) as ei:
        read_elf(str(empty))
    assert "too short" in ei.value.message
    with pytest.raises(ElfFormatError) as ei:
        read_elf(str(tmp_path))
    assert ei.value.kind == "directory"
    real = open("/usr/bin/ls", "rb").read()
    short = tmp_path / "short"
    short.write_bytes(real[:3000])
    with pytest.raises(ElfFormatError) as ei:
        read_elf(str(short))
    assert ei.value.kind == "truncated" and "truncated" in ei.value.message


@needs_binutils
def test_x86_isa_level_matches_readelf(cbuild):
    lib = cbuild.build("libisa4.so", "int f(void){return 1;}", shared=True, flags=["-Wl,-z,x86-64-v4"])
    for path in (str(lib), "/usr/bin/ls"):
        out = _readelf(["-nW"], path)
        m = re.search(r"x86 ISA needed: (x86-64-(baseline|v\d))", out)
        level = read_notes(path).x86_isa_needed
        assert read_elf(path).x86_isa_needed == level
        if m is None:
            assert level is None
        else:
            assert m.group(1) == ("x86-64-baseline" if level == 1 else f"x86-64-v{level}")
    assert read_notes(str(lib)).x86_isa_needed == 4
