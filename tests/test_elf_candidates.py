"""Every outcome the resolver gives a search candidate, checked against the real loader.

One program needs ``libc8.so`` with RUNPATH ``bad:good``: ``good/`` holds a
working copy, ``bad/`` a candidate of one kind. The real loader either goes
on to ``good/`` (the program exits 0), takes the candidate, stops the
RUNPATH list there, or fails with its message (exit 127, or a signal); and
``mltools elf tree`` must say the same. Both run as an unprivileged user
(``nobody`` through setpriv when the tests run as root), since root may open
files no one else can.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mltools.elf.ldso import host_loader_config

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


def unprivileged(argv):
    if os.geteuid() != 0:
        return argv
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop root")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]


def _gcc(out: Path, src: str, *args):
    c = out.parent / (out.name + ".c")
    c.write_text(src)
    subprocess.run(["gcc", "-o", str(out), str(c), *args], check=True, capture_output=True)
    c.unlink()
    return out


def _patch(elf: bytes, **fields) -> bytes:
    """Patch ELF64 header fields by offset name."""
    offsets = {"class": (4, "B"), "data": (5, "B"), "ident_version": (6, "B"), "osabi": (7, "B"),
               "abiversion": (8, "B"), "pad": (12, "B"), "type": (16, "<H"), "machine": (18, "<H"),
               "version": (20, "<I"), "phentsize": (54, "<H")}
    out = bytearray(elf)
    for name, value in fields.items():
        off, fmt = offsets[name]
        struct.pack_into(fmt, out, off, value)
    return bytes(out)


def _dynamic_phdr(data: bytes):
    """(offset of the PT_DYNAMIC program header) in an ELF64 file."""
    phoff, = struct.unpack_from("<Q", data, 32)
    phnum, = struct.unpack_from("<H", data, 56)
    for i in range(phnum):
        if struct.unpack_from("<I", data, phoff + 56 * i)[0] == 2:
            return phoff + 56 * i
    raise AssertionError("no PT_DYNAMIC")


def _no_dynamic(data: bytes) -> bytes:
    out = bytearray(data)
    struct.pack_into("<I", out, _dynamic_phdr(data), 0)          # PT_NULL
    return bytes(out)


def _empty_dynamic(data: bytes) -> bytes:
    out = bytearray(data)
    struct.pack_into("<Q", out, _dynamic_phdr(data) + 32, 0)     # p_filesz
    return bytes(out)


GOOD = "int c8(void){return 0;}"
# kind -> how the loader treats it: ("on", None) goes on to good/; ("here", exit) takes the candidate;
# ("stop", None) ends the RUNPATH list (not found); ("fatal", message); ("signal", -N)
CASES = {
    "unreadable_file": ("on", None),
    "unsearchable_dir": ("on", None),
    "unlistable_dir": ("here", 3),
    "wrong_class": ("on", None),
    "wrong_machine": ("on", None),
    "class_zero": ("on", None),
    "symlink_loop": ("stop", None),
    "symlink_loop_in_hwcaps_subdir": ("on", None),
    "text": ("fatal", "invalid ELF header"),
    "lfs_pointer": ("fatal", "file too short"),
    "empty": ("fatal", "file too short"),
    "directory": ("fatal", "cannot read file data"),      # the loader adds "Error 21" (EISDIR)
    "big_endian": ("fatal", "ELF file data encoding not little-endian"),
    "ident_version": ("fatal", "ELF file version ident does not match current one"),
    "osabi": ("fatal", "ELF file OS ABI invalid"),
    "abiversion": ("fatal", "ELF file ABI version invalid"),
    "gnu_abiversion_3": ("on_here", 0),
    "padding": ("fatal", "nonzero padding in e_ident"),
    "e_version": ("fatal", "ELF file version does not match current one"),
    "relocatable": ("fatal", "only ET_DYN and ET_EXEC can be loaded"),
    "phentsize": ("fatal", "ELF file's phentsize not the expected size"),
    "executable": ("fatal", "cannot dynamically load executable"),
    "pie": ("fatal", "cannot dynamically load position-independent executable"),
    "no_dynamic": ("fatal", "object file has no dynamic section"),
    "empty_dynamic": ("fatal", "object file has no dynamic section"),
    "abi_note_other_os": ("on", None),
    "abi_note_newer_kernel": ("on", None),
    "abi_note_this_kernel": ("here", 0),
    "truncated_headers": ("fatal", "cannot read file data"),
    "truncated_segments": ("signal", -7),
}


@pytest.fixture(scope="module")
def base():
    top = Path(tempfile.mkdtemp(prefix="mltools-candidates-"))     # not under pytest's 0700 tree: nobody reads it
    src = top / "src"
    src.mkdir()
    good_lib = _gcc(src / "libc8.so", GOOD, "-shared", "-fPIC", "-Wl,-soname,libc8.so")
    other = _gcc(src / "libc8_other.so", "int c8(void){return 3;}", "-shared", "-fPIC", "-Wl,-soname,libc8.so")
    exe_nopie = _gcc(src / "exe_nopie", "int main(void){return 0;}", "-no-pie")
    exe_pie = _gcc(src / "exe_pie", "int main(void){return 0;}", "-pie", "-fPIE")
    class32 = None
    if subprocess.run(["gcc", "-m32", "-x", "c", "-", "-o", os.devnull], input="int main(void){return 0;}",
                      capture_output=True, text=True).returncode == 0:
        class32 = _gcc(src / "libc8_32.so", GOOD, "-m32", "-shared", "-fPIC", "-Wl,-soname,libc8.so")
    data = good_lib.read_bytes()
    noted = {}
    for kind, (os_id, major) in {"abi_note_other_os": (1, 3), "abi_note_newer_kernel": (0, 99),
                                 "abi_note_this_kernel": (0, 3)}.items():
        # an NT_GNU_ABI_TAG note (OS, kernel major.minor.sub), which gcc puts in programs only
        note = (f'__asm__(".section .note.ABI-tag,\\"a\\",@note\\n.p2align 2\\n.long 4, 16, 1\\n'
                f'.asciz \\"GNU\\"\\n.long {os_id}, {major}, 2, 0\\n.text\\n");\n')
        noted[kind] = _gcc(src / f"libc8_{kind}.so", note + GOOD, "-shared", "-fPIC", "-Wl,-soname,libc8.so")
    made = {}
    for kind in CASES:
        d = top / kind
        (d / "good").mkdir(parents=True)
        (d / "bad").mkdir()
        shutil.copy(good_lib, d / "good/libc8.so")
        bad = d / "bad/libc8.so"
        if kind == "unreadable_file":
            shutil.copy(good_lib, bad)
            bad.chmod(0o000)
        elif kind == "unsearchable_dir":
            shutil.copy(other, bad)
            (d / "bad").chmod(0o000)
        elif kind == "unlistable_dir":
            shutil.copy(other, bad)
            (d / "bad").chmod(0o111)
        elif kind == "wrong_class":
            if class32 is None:
                continue
            shutil.copy(class32, bad)
        elif kind == "wrong_machine":
            bad.write_bytes(_patch(data, machine=183))
        elif kind == "class_zero":
            bad.write_bytes(_patch(data, **{"class": 0}))
        elif kind == "symlink_loop":
            bad.symlink_to("libc8.so")
        elif kind == "symlink_loop_in_hwcaps_subdir":
            levels = host_loader_config().hwcaps_subdirs
            if not levels:
                continue
            sub = d / "bad/glibc-hwcaps" / levels[-1]
            sub.mkdir(parents=True)
            (sub / "libc8.so").symlink_to("libc8.so")
        elif kind == "text":
            bad.write_text("this is a text file long enough to be read as a whole ELF header by the loader\n")
        elif kind == "lfs_pointer":
            bad.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
        elif kind == "empty":
            bad.write_bytes(b"")
        elif kind == "directory":
            bad.mkdir()
        elif kind == "big_endian":
            bad.write_bytes(_patch(data, data=2))
        elif kind == "ident_version":
            bad.write_bytes(_patch(data, ident_version=2))
        elif kind == "osabi":
            bad.write_bytes(_patch(data, osabi=9))
        elif kind == "abiversion":
            bad.write_bytes(_patch(data, osabi=3, abiversion=4))
        elif kind == "gnu_abiversion_3":
            bad.write_bytes(_patch(data, osabi=3, abiversion=3))
        elif kind == "padding":
            bad.write_bytes(_patch(data, pad=1))
        elif kind == "e_version":
            bad.write_bytes(_patch(data, version=2))
        elif kind == "relocatable":
            bad.write_bytes(_patch(data, type=1))
        elif kind == "phentsize":
            bad.write_bytes(_patch(data, phentsize=40))
        elif kind == "executable":
            shutil.copy(exe_nopie, bad)
        elif kind == "pie":
            shutil.copy(exe_pie, bad)
        elif kind == "no_dynamic":
            bad.write_bytes(_no_dynamic(data))
        elif kind == "empty_dynamic":
            bad.write_bytes(_empty_dynamic(data))
        elif kind in noted:
            shutil.copy(noted[kind], bad)
        elif kind == "truncated_headers":
            bad.write_bytes(data[:100])
        elif kind == "truncated_segments":
            bad.write_bytes(data[:4096])
        prog = _gcc(d / "main", "int c8(void);int main(void){return c8();}", str(d / "good/libc8.so"),
                    "-Wl,--enable-new-dtags", f"-Wl,-rpath,{d}/bad:{d}/good")
        made[kind] = (d, prog)
    locked = {top / "unsearchable_dir/bad": 0o000, top / "unlistable_dir/bad": 0o111}
    for path in [top, *top.rglob("*")]:
        if path.is_dir() and not path.is_symlink() and path not in locked:
            path.chmod(0o755)
    for path, mode in locked.items():
        path.chmod(mode)
    yield made
    for path in locked:
        path.chmod(0o755)
    shutil.rmtree(top)


@pytest.fixture(scope="module")
def ours(base):
    """mltools elf tree --json of every case, as the same unprivileged user, in one run."""
    progs = [str(prog) for _d, prog in base.values()]
    proc = subprocess.run(unprivileged([sys.executable, "-m", "mltools", "elf", "tree", "--json", "--clean-env",
                                        *progs]), capture_output=True, text=True, timeout=300, cwd="/",
                          env={**ENV, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert proc.returncode in (0, 1), proc.stderr
    return {t["root"]: t for t in json.loads(proc.stdout)["trees"]}


@pytest.mark.parametrize("kind", list(CASES))
def test_candidate_outcome_matches_the_loader(base, ours, kind):
    if kind not in base:
        pytest.skip("needs gcc -m32 / a glibc-hwcaps level for this case")
    d, prog = base[kind]
    expect, detail = CASES[kind]
    real = subprocess.run(unprivileged([str(prog)]), capture_output=True, text=True, env=ENV, timeout=60)
    tree = ours[str(prog)]
    lib = next(lib for lib in tree["libraries"] if "libc8.so" in lib["requested_as"])
    codes = [f["code"] for f in tree["findings"]]
    if expect == "on":
        assert real.returncode == 0, real.stderr
        assert lib["path"] == str(d / "good/libc8.so") and lib["error"] is None
    elif expect in ("here", "on_here"):
        assert real.returncode == detail, real.stderr
        assert lib["path"] == str(d / "bad/libc8.so") and lib["error"] is None
    elif expect == "stop":
        assert real.returncode == 127 and "cannot open shared object file" in real.stderr
        assert lib["path"] is None and "MISSING" in codes
        assert str(d / "good/libc8.so") not in [c["path"] for c in lib["tried"]]     # the list ended at bad/
    elif expect == "fatal":
        assert real.returncode == 127 and f"libc8.so: {detail}" in real.stderr, real.stderr
        assert lib["error"] is not None and lib["error"].startswith(detail), lib
        assert lib["found_as"] == str(d / "bad/libc8.so") and "FATAL_CANDIDATE" in codes
    else:                                  # the loader dies of a signal mapping the file
        assert real.returncode == detail, (real.returncode, real.stderr)
        assert lib["error"] is not None and "SIGBUS" in lib["error"] and "FATAL_CANDIDATE" in codes


def test_fatal_candidate_finding_says_what_the_loader_does(base, ours):
    d, prog = base["text"]
    finding = next(f for f in ours[str(prog)]["findings"] if f["code"] == "FATAL_CANDIDATE")
    assert str(d / "bad/libc8.so") in finding["message"] and "invalid ELF header" in finding["message"]
    assert "does not search further" in finding["message"]
