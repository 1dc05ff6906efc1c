"""One hermetic fixture per ld.so rule, each checked against the real loader.

The oracle is glibc itself: the fixture program is run (does it start, which
copy of a library answered?) or listed with ``ld.so --list`` (what ldd does),
and ``mltools elf tree`` must agree. Libraries are tiny gcc builds made in a
temporary directory; nothing on the system is changed.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from mltools.elf.ldso import host_loader_config
from mltools.elf.ldtree import Resolver, resolve_tree

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

LDSO = host_loader_config().interpreter


class Layout:
    """Builds libraries and programs at chosen relative paths under one directory."""

    def __init__(self, base: Path):
        self.base = base

    def p(self, rel: str) -> Path:
        return self.base / rel

    def _cc(self, out: Path, src: str, args):
        out.parent.mkdir(parents=True, exist_ok=True)
        c = out.with_name(out.name.replace("/", "_") + ".c")
        c.write_text(src)
        cmd = ["gcc", "-o", str(out), str(c), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        c.unlink()
        return out

    @staticmethod
    def _path_flags(runpath, rpath):
        flags = []
        if runpath:
            flags += ["-Wl,--enable-new-dtags", f"-Wl,-rpath,{runpath}"]
        if rpath:
            flags += ["-Wl,--disable-new-dtags", f"-Wl,-rpath,{rpath}"]
        return flags

    def so(self, rel, src="int dummy(void){return 0;}", soname=None, deps=(), runpath=None, rpath=None,
           flags=()):
        out = self.p(rel)
        args = ["-shared", "-fPIC", f"-Wl,-soname,{soname or out.name}", "-Wl,--no-as-needed",
                *[str(self.p(d)) for d in deps], *self._path_flags(runpath, rpath),
                "-Wl,--allow-shlib-undefined", *flags]
        return self._cc(out, src, args)

    def exe(self, rel, src="int main(void){return 0;}", deps=(), runpath=None, rpath=None, flags=()):
        out = self.p(rel)
        args = ["-Wl,--no-as-needed", *[str(self.p(d)) for d in deps], *self._path_flags(runpath, rpath),
                "-Wl,--allow-shlib-undefined", *flags]
        return self._cc(out, src, args)


def run(exe, env=None, cwd=None):
    """Run the fixture program: (exit status, stdout, stderr)."""
    e = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    e.update(env or {})
    proc = subprocess.run([str(exe)], capture_output=True, text=True, env=e, cwd=cwd, timeout=30)
    return proc.returncode, proc.stdout, proc.stderr


def ld_list(exe, env=None, cwd=None, extra=()):
    """The loader in trace mode, as ldd runs it. Returns ({name: realpath or None}, stderr, status)."""
    e = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "LD_TRACE_LOADED_OBJECTS": "1"}
    e.update(env or {})
    proc = subprocess.run([LDSO, *extra, str(exe)], capture_output=True, text=True, env=e,
                          cwd=cwd, timeout=30)
    found = {}
    for line in proc.stdout.splitlines():
        line = line.strip()
        m = re.match(r"(\S+) => not found", line)
        if m:
            found.setdefault(m.group(1), None)
            continue
        m = re.match(r"(\S+) => (\S+) \(0x", line)
        if m:
            found[m.group(1)] = os.path.realpath(os.path.join(cwd or ".", m.group(2)))
    return found, proc.stderr, proc.returncode


def ours(tree):
    out = {}
    for lib in tree.libraries:
        if lib.via == "interpreter" or lib.soname.startswith("lib") is False and lib.path is None:
            pass
        for name in lib.requested_as:
            if lib.found:
                out[name] = lib.path
            else:
                out.setdefault(name, None)
    return out


def only_fixture(mapping, base):
    return {k: v for k, v in mapping.items() if v is None or str(base) in v}


@pytest.fixture(scope="module")
def lay(tmp_path_factory):
    return Layout(tmp_path_factory.mktemp("ldrules"))


def tree_of(path, **kw):
    kw.setdefault("use_etc_preload", False)
    return resolve_tree(str(path), **kw)


# --- RPATH versus RUNPATH --------------------------------------------------------------------

def test_runpath_is_not_inherited(lay):
    """F1: the program's RUNPATH names d/, its library (no paths) needs libdd from d/: not found."""
    b = "f1"
    lay.so(f"{b}/d/libdd.so")
    lay.so(f"{b}/l/libchild.so", deps=[f"{b}/d/libdd.so"])
    exe = lay.exe(f"{b}/main", deps=[f"{b}/l/libchild.so"], runpath=f"{lay.p(b)}/l:{lay.p(b)}/d")
    status, _, err = run(exe)
    assert status == 127 and "libdd.so" in err
    tree = tree_of(exe)
    assert not tree.ok
    missing = [lib for lib in tree.libraries if lib.path is None]
    assert [m.soname for m in missing] == ["libdd.so"]
    assert any(str(lay.p(f"{b}/d")) in nm.path for nm in missing[0].near_misses)
    assert only_fixture(ours(tree), lay.base) == only_fixture(ld_list(exe)[0], lay.base)


def test_rpath_is_inherited_down_the_loader_chain(lay):
    """The same layout with DT_RPATH in the program: the library's search uses it."""
    b = "rpchain"
    lay.so(f"{b}/d/libdd.so")
    lay.so(f"{b}/l/libchild.so", deps=[f"{b}/d/libdd.so"])
    exe = lay.exe(f"{b}/main", deps=[f"{b}/l/libchild.so"], rpath=f"{lay.p(b)}/l:{lay.p(b)}/d")
    assert run(exe)[0] == 0
    tree = tree_of(exe)
    assert tree.ok
    dd = tree.by_soname()["libdd.so"]
    assert dd.via == "rpath" and dd.via_object == str(exe) and dd.loader.endswith("libchild.so")
    assert only_fixture(ours(tree), lay.base) == only_fixture(ld_list(exe)[0], lay.base)


def test_requester_with_runpath_ignores_inherited_rpath(lay):
    """An object with DT_RUNPATH searches no DT_RPATH at all, not even the program's."""
    b = "rpblock"
    lay.so(f"{b}/d/libdd.so")
    lay.so(f"{b}/l/libchild.so", deps=[f"{b}/d/libdd.so"], runpath="/nonexistent")
    exe = lay.exe(f"{b}/main", deps=[f"{b}/l/libchild.so"], rpath=f"{lay.p(b)}/l:{lay.p(b)}/d")
    assert run(exe)[0] == 127
    tree = tree_of(exe)
    assert [lib.soname for lib in tree.libraries if lib.path is None] == ["libdd.so"]
    assert only_fixture(ours(tree), lay.base) == only_fixture(ld_list(exe)[0], lay.base)


def _retag_soname_as_runpath(path: Path) -> None:
    """Turn the DT_SONAME entry into DT_RUNPATH (gcc cannot emit RPATH and RUNPATH together)."""
    data = bytearray(path.read_bytes())
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        p_type, _f, p_offset, _v, _p, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 2:
            for off in range(p_offset, p_offset + p_filesz, 16):
                tag, = struct.unpack_from("<q", data, off)
                if tag == 14:
                    struct.pack_into("<q", data, off, 29)
                    path.write_bytes(bytes(data))
                    return
    raise AssertionError("no DT_SONAME to retag")


def test_rpath_ignored_when_runpath_present(lay):
    """F11: the program has RPATH $ORIGIN/z and RUNPATH $ORIGIN/y; its child needs a library in z."""
    b = "f11"
    lay.so(f"{b}/z/libzz.so")
    lay.so(f"{b}/y/libyy.so", deps=[f"{b}/z/libzz.so"])
    exe = lay.exe(f"{b}/main", deps=[f"{b}/y/libyy.so"], rpath="$ORIGIN/z",
                  flags=["-Wl,-soname,$ORIGIN/y"])
    _retag_soname_as_runpath(exe)
    assert run(exe)[0] == 127
    tree = tree_of(exe)
    assert [lib.soname for lib in tree.libraries if lib.path is None] == ["libzz.so"]
    assert any(f.code == "RPATH_IGNORED" for f in tree.findings)
    assert only_fixture(ours(tree), lay.base) == only_fixture(ld_list(exe)[0], lay.base)


# --- breadth-first order and reuse -------------------------------------------------------------

def test_bfs_reuse_by_soname_makes_a_load_order_dependency(lay):
    """F2: NEEDED [libbb (RUNPATH d), libcc]; both need libdd: runs, and says it is fragile."""
    b = "f2"
    lay.so(f"{b}/d/libdd.so")
    lay.so(f"{b}/l/libbb.so", deps=[f"{b}/d/libdd.so"], runpath=f"{lay.p(b)}/d")
    lay.so(f"{b}/l/libcc.so", deps=[f"{b}/d/libdd.so"])
    exe = lay.exe(f"{b}/main", deps=[f"{b}/l/libbb.so", f"{b}/l/libcc.so"], runpath=f"{lay.p(b)}/l")
    assert run(exe)[0] == 0
    tree = tree_of(exe)
    assert tree.ok
    assert any(f.code == "LOAD_ORDER_DEPENDENT" and "libcc.so" in f.message for f in tree.findings)
    dd = tree.by_soname()["libdd.so"]
    assert len(dd.needed_by) == 2 and dd.depth == 2
    assert only_fixture(ours(tree), lay.base) == only_fixture(ld_list(exe)[0], lay.base)


def test_bfs_order_reversed_fails(lay):
    """F3: NEEDED [libcc, libbb]: libcc's libdd search comes first and fails."""
    b = "f3"
    lay.so(f"{b}/d/libdd.so")
    lay.so(f"{b}/l/libbb.so", deps=[f"{b}/d/libdd.so"], runpath=f"{lay.p(b)}/d")
    lay.so(f"{b}/l/libcc.so", deps=[f"{b}/d/libdd.so"])
    exe = lay.exe(f"{b}/main", deps=[f"{b}/l/libcc.so", f"{b}/l/libbb.so"], runpath=f"{lay.p(b)}/l")
    assert run(exe)[0] == 127
    tree = tree_of(exe)
    assert not tree.ok
    missing = [lib for lib in tree.libraries if lib.path is None]
    assert [m.soname for m in missing] == ["libdd.so"] and missing[0].needed_by[0].endswith("libcc.so")
    listed, _, _ = ld_list(exe)
    # ldd prints libdd twice (not found, then found for libbb); the found copy is ours too
    assert str(lay.p(f"{b}/d/libdd.so")) in {lib.path for lib in tree.libraries}
    assert str(lay.p(f"{b}/d/libdd.so")) in set(listed.values()) | {None}


def test_dedup_by_soname_reuses_a_different_file(lay):
    """A NEEDED name equal to a loaded object's SONAME reuses it: a same-named file elsewhere is never opened."""
    if shutil.which("patchelf") is None:
        pytest.skip("needs patchelf")
    b = "dedup"
    first = lay.so(f"{b}/a/libfirst.so", "int which(void){return 1;}")
    lay.so(f"{b}/c/libcommon.so.1", "int which(void){return 2;}", soname="libcommon.so.1")
    lay.so(f"{b}/b/libuser.so", deps=[f"{b}/c/libcommon.so.1"], runpath=f"{lay.p(b)}/c")
    exe = lay.exe(f"{b}/main", '#include <stdio.h>\nint which(void);\nint main(void){printf("%d\\n", which());return 0;}',
                  deps=[f"{b}/a/libfirst.so", f"{b}/b/libuser.so"], runpath=f"{lay.p(b)}/a:{lay.p(b)}/b")
    # NEEDED says libfirst.so; the file then calls itself libcommon.so.1
    subprocess.run(["patchelf", "--set-soname", "libcommon.so.1", str(first)], check=True)
    status, out, _ = run(exe)
    assert status == 0 and out.strip() == "1"
    tree = tree_of(exe)
    paths = {lib.path for lib in tree.libraries}
    assert str(lay.p(f"{b}/a/libfirst.so")) in paths
    assert str(lay.p(f"{b}/c/libcommon.so.1")) not in paths
    common = tree.by_soname()["libcommon.so.1"]
    assert set(common.requested_as) == {"libfirst.so", "libcommon.so.1"}
    listed = only_fixture(ld_list(exe)[0], lay.base)
    assert set(only_fixture(ours(tree), lay.base).values()) == set(listed.values())


# --- $ORIGIN -------------------------------------------------------------------------------------

def test_origin_of_a_library_is_the_symlink_directory(lay):
    """F4: b/libg.so -> ../a/libg.so with RUNPATH $ORIGIN needs libf from a/: not found."""
    b = "f4"
    lay.so(f"{b}/a/libf.so")
    lay.so(f"{b}/a/libg.so", deps=[f"{b}/a/libf.so"], runpath="$ORIGIN")
    (lay.p(f"{b}/b")).mkdir(parents=True, exist_ok=True)
    link = lay.p(f"{b}/b/libg.so")
    if not link.exists():
        link.symlink_to("../a/libg.so")
    exe = lay.exe(f"{b}/main", deps=[f"{b}/b/libg.so"], runpath=f"{lay.p(b)}/b")
    assert run(exe)[0] == 127
    tree = tree_of(exe)
    assert [lib.soname for lib in tree.libraries if lib.path is None] == ["libf.so"]
    assert only_fixture(ours(tree), lay.base) == only_fixture(ld_list(exe)[0], lay.base)


def test_origin_of_a_symlinked_program_is_its_realpath(lay):
    """F5: other/main -> ../real/main with RUNPATH $ORIGIN/b runs; ldd (argv path) disagrees."""
    b = "f5"
    lay.so(f"{b}/real/b/libbar.so")
    lay.exe(f"{b}/real/main", deps=[f"{b}/real/b/libbar.so"], runpath="$ORIGIN/b")
    (lay.p(f"{b}/other")).mkdir(parents=True, exist_ok=True)
    link = lay.p(f"{b}/other/main")
    if not link.exists():
        link.symlink_to("../real/main")
    assert run(link)[0] == 0
    tree = tree_of(link)
    assert tree.ok and tree.by_soname()["libbar.so"].path == str(lay.p(f"{b}/real/b/libbar.so"))
    assert any(f.code == "ORIGIN_OF_SYMLINKED_PROGRAM" for f in tree.findings)
    assert ld_list(link)[0]["libbar.so"] is None     # ldd's known miss


def test_lib_token_expands_to_the_multiarch_dir(lay):
    """F9: RUNPATH $ORIGIN/$LIB finds lib/x86_64-linux-gnu (Debian's $LIB)."""
    b = "f9"
    dst_lib = host_loader_config().dst_lib
    lay.so(f"{b}/{dst_lib}/libl.so")
    exe = lay.exe(f"{b}/main", deps=[f"{b}/{dst_lib}/libl.so"], runpath="$ORIGIN/$LIB")
    assert run(exe)[0] == 0
    tree = tree_of(exe)
    assert tree.ok and tree.by_soname()["libl.so"].path == str(lay.p(f"{b}/{dst_lib}/libl.so"))


def test_needed_with_a_slash_is_a_path(lay):
    b = "slash"
    lay.so(f"{b}/sub/libq.so", soname="$ORIGIN/sub/libq.so")
    exe = lay.exe(f"{b}/main", deps=[f"{b}/sub/libq.so"])
    assert run(exe)[0] == 0
    tree = tree_of(exe)
    q = tree.by_soname()["$ORIGIN/sub/libq.so"]
    assert q.via == "path" and q.path == str(lay.p(f"{b}/sub/libq.so"))


# --- LD_LIBRARY_PATH -----------------------------------------------------------------------------

def test_ld_library_path_empty_element_is_the_cwd(lay):
    b = "llp"
    lay.so(f"{b}/cwd/libw.so")
    exe = lay.exe(f"{b}/main", deps=[f"{b}/cwd/libw.so"])
    cwd = str(lay.p(f"{b}/cwd"))
    env = {"LD_LIBRARY_PATH": "/nonexistent::/also-not"}
    assert run(exe, env=env, cwd=cwd)[0] == 0
    assert run(exe, env={"LD_LIBRARY_PATH": "/nonexistent"}, cwd=cwd)[0] == 127
    tree = tree_of(exe, env=env, cwd=cwd)
    w = tree.by_soname()["libw.so"]
    assert w.via == "ld_library_path" and w.path == str(lay.p(f"{b}/cwd/libw.so"))
    assert any(f.code == "EMPTY_PATH_ELEMENT" for f in tree.findings)
    assert not tree_of(exe, env={"LD_LIBRARY_PATH": "/nonexistent"}, cwd=cwd).ok


def test_ld_library_path_semicolon_separator(lay):
    b = "llpsemi"
    lay.so(f"{b}/x/libsemi.so")
    exe = lay.exe(f"{b}/main", deps=[f"{b}/x/libsemi.so"])
    env = {"LD_LIBRARY_PATH": f"/nonexistent;{lay.p(b)}/x"}
    assert run(exe, env=env)[0] == 0
    tree = tree_of(exe, env=env)
    assert tree.ok and tree.by_soname()["libsemi.so"].via == "ld_library_path"


def test_rpath_beats_ld_library_path_beats_runpath(lay):
    b = "order"
    lay.so(f"{b}/r/libo.so", "int which(void){return 1;}")
    lay.so(f"{b}/e/libo.so", "int which(void){return 2;}")
    src = '#include <stdio.h>\nint which(void);\nint main(void){printf("%d\\n", which());return 0;}'
    exe_rp = lay.exe(f"{b}/main_rpath", src, deps=[f"{b}/r/libo.so"], rpath=f"{lay.p(b)}/r")
    exe_run = lay.exe(f"{b}/main_runpath", src, deps=[f"{b}/r/libo.so"], runpath=f"{lay.p(b)}/r")
    env = {"LD_LIBRARY_PATH": f"{lay.p(b)}/e"}
    assert run(exe_rp, env=env)[1].strip() == "1"
    assert run(exe_run, env=env)[1].strip() == "2"
    assert tree_of(exe_rp, env=env).by_soname()["libo.so"].path == str(lay.p(f"{b}/r/libo.so"))
    assert tree_of(exe_run, env=env).by_soname()["libo.so"].path == str(lay.p(f"{b}/e/libo.so"))


# --- NODEFLIB, hwcaps ----------------------------------------------------------------------------

def test_nodeflib_skips_cache_and_default_dirs(lay):
    b = "nodeflib"
    lay.so(f"{b}/l/libn.so", "int n(void){return 0;}", deps=(), flags=["-lz", "-Wl,-z,nodefaultlib"])
    exe = lay.exe(f"{b}/main", deps=[f"{b}/l/libn.so"], runpath=f"{lay.p(b)}/l")
    tree = tree_of(exe)
    listed, _, _ = ld_list(exe)
    assert listed.get("libz.so.1", "absent") is None          # the loader: not found
    assert "libz.so.1" in {lib.soname for lib in tree.libraries if lib.path is None}
    assert any(c.source == "ld.so.cache" and "NODEFLIB" in (c.reason or "")
               for lib in tree.libraries if lib.soname == "libz.so.1" for c in lib.tried)


def test_nodeflib_advice_names_the_flag_and_its_fix_works(lay):
    """The cache does list libz: the advice is about -z nodefaultlib, never "run ldconfig",
    and the fix it gives (a DT_RUNPATH to the library's directory) makes the real loader agree."""
    if shutil.which("patchelf") is None:
        pytest.skip("needs patchelf")
    b = "nodeflib_fix"
    exe = lay.exe(f"{b}/main", flags=["-lz", "-Wl,-z,nodefaultlib"],
                  src="int zlibVersion(void); int main(void){return zlibVersion() == 0;}")
    tree = tree_of(exe)
    missing = [f for f in tree.findings if f.code == "MISSING" and "libz" in f.message]
    assert missing and "nodefaultlib" in missing[0].fix and "ldconfig" not in missing[0].fix
    libz = tree.by_soname()["libz.so.1"]
    assert libz.near_misses and all("lacks it" not in nm.reason for nm in libz.near_misses)
    assert run(exe)[0] == 127                                # the real loader: not found
    zdir = os.path.dirname(libz.near_misses[0].path)
    subprocess.run(["patchelf", "--set-rpath", zdir, str(exe)], check=True)
    assert run(exe)[0] == 0                                  # the advice works
    assert "libz.so.1" not in {lib.soname for lib in tree_of(exe).libraries if lib.path is None}


def test_glibc_hwcaps_subdir_is_preferred(lay):
    """F6: lib/glibc-hwcaps/x86-64-v2/libh.so beats lib/libh.so; --hwcaps-mask turns it off."""
    if "x86-64-v2" not in host_loader_config().hwcaps_subdirs:
        pytest.skip("this CPU does not support x86-64-v2")
    b = "f6"
    lay.so(f"{b}/lib/libh.so", "int which(void){return 1;}")
    lay.so(f"{b}/lib/glibc-hwcaps/x86-64-v2/libh.so", "int which(void){return 2;}")
    src = '#include <stdio.h>\nint which(void);\nint main(void){printf("%d\\n", which());return 0;}'
    exe = lay.exe(f"{b}/main", src, deps=[f"{b}/lib/libh.so"], runpath=f"{lay.p(b)}/lib")
    assert run(exe)[1].strip() == "2"
    tree = tree_of(exe)
    h = tree.by_soname()["libh.so"]
    assert h.path == str(lay.p(f"{b}/lib/glibc-hwcaps/x86-64-v2/libh.so"))
    assert h.hwcaps_subdir == "glibc-hwcaps/x86-64-v2"
    masked, _, _ = ld_list(exe, extra=["--glibc-hwcaps-mask", "x86-64-v3"])
    assert masked["libh.so"] == str(lay.p(f"{b}/lib/libh.so"))
    tree_masked = resolve_tree(str(exe), resolver=Resolver(hwcaps_mask=["x86-64-v3"]), use_etc_preload=False)
    assert tree_masked.by_soname()["libh.so"].path == masked["libh.so"]


# --- bad candidates ------------------------------------------------------------------------------

def _patched_copy(src: Path, dst: Path, offset: int, value: bytes) -> None:
    data = bytearray(src.read_bytes())
    data[offset:offset + len(value)] = value
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["machine", "class"])
def test_wrong_machine_or_class_candidate_is_skipped(lay, kind):
    """F8: an AArch64 (or ELFCLASS32) copy first on the path is skipped; the good copy loads."""
    b = f"f8{kind}"
    good = lay.so(f"{b}/good/libm8.so")
    if kind == "machine":
        _patched_copy(good, lay.p(f"{b}/bad/libm8.so"), 18, struct.pack("<H", 183))
    else:
        _patched_copy(good, lay.p(f"{b}/bad/libm8.so"), 4, b"\x01")
    exe = lay.exe(f"{b}/main", deps=[f"{b}/good/libm8.so"], runpath=f"{lay.p(b)}/bad:{lay.p(b)}/good")
    assert run(exe)[0] == 0
    tree = tree_of(exe)
    lib = tree.by_soname()["libm8.so"]
    assert tree.ok and lib.path == str(good)
    assert only_fixture(ours(tree), lay.base) == only_fixture(ld_list(exe)[0], lay.base)


@pytest.mark.parametrize("bad", ["lfs", "short", "directory", "script"])
def test_non_elf_candidate_is_fatal(lay, bad):
    """F7: a Git LFS pointer (or a short file, a directory) named libh.so before a good copy stops the loader."""
    b = f"f7{bad}"
    lay.so(f"{b}/good/libh7.so")
    badp = lay.p(f"{b}/bad/libh7.so")
    badp.parent.mkdir(parents=True, exist_ok=True)
    if not badp.exists():
        if bad == "lfs":
            badp.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 16000\n")
        elif bad == "short":
            badp.write_bytes(b"\x7fELF\x02\x01\x01")
        elif bad == "directory":
            badp.mkdir()
        else:
            badp.write_text("#!/bin/sh\necho not a library, but long enough to be read as a header\n")
    exe = lay.exe(f"{b}/main", deps=[f"{b}/good/libh7.so"], runpath=f"{lay.p(b)}/bad:{lay.p(b)}/good")
    status, _, err = run(exe)
    assert status == 127
    tree = tree_of(exe)
    assert not tree.ok
    (lib,) = [lib for lib in tree.libraries if lib.error]
    assert lib.found_as == str(badp)
    expected = {"lfs": "invalid ELF header", "short": "file too short", "directory": "cannot read file data",
                "script": "invalid ELF header"}[bad]
    assert expected in err and expected in lib.error.replace("a Git LFS pointer", "invalid ELF header") \
        or expected in lib.error
    assert any(f.code == "FATAL_CANDIDATE" for f in tree.findings)


# --- preload -------------------------------------------------------------------------------------

def test_preload_comes_first_and_answers_needed(lay):
    b = "preload"
    lay.so(f"{b}/p/libpre.so", "int which(void){return 7;}", soname="libo2.so")
    lay.so(f"{b}/o/libo2.so", "int which(void){return 1;}")
    src = '#include <stdio.h>\nint which(void);\nint main(void){printf("%d\\n", which());return 0;}'
    exe = lay.exe(f"{b}/main", src, deps=[f"{b}/o/libo2.so"], runpath=f"{lay.p(b)}/o")
    pre = str(lay.p(f"{b}/p/libpre.so"))
    assert run(exe, env={"LD_PRELOAD": pre})[1].strip() == "7"
    tree = tree_of(exe, env={"LD_PRELOAD": pre})
    assert tree.libraries[0].path == pre and tree.libraries[0].via == "preload"
    assert tree.by_soname()["libo2.so"].path == pre
    tree2 = tree_of(exe, preload=[pre])
    assert tree2.by_soname()["libo2.so"].path == pre


# --- a process context: libraries already loaded -------------------------------------------------

def test_already_loaded_objects_answer_first(lay):
    """With main= and loaded=, the root's NEEDED names match objects loaded before it."""
    b = "ctx"
    lay.so(f"{b}/early/libshared.so", "int which(void){return 1;}")
    lay.so(f"{b}/early/libearly.so", deps=[f"{b}/early/libshared.so"], runpath="$ORIGIN")
    lay.so(f"{b}/ext/libshared.so", "int which(void){return 2;}")
    ext = lay.so(f"{b}/ext/libext.so", deps=[f"{b}/ext/libshared.so"])   # no path: alone it is missing
    host = lay.exe(f"{b}/host")
    alone = tree_of(ext)
    assert not alone.ok
    tree = resolve_tree(str(ext), main=str(host), loaded=[str(lay.p(f"{b}/early/libearly.so"))],
                        use_etc_preload=False)
    shared = tree.by_soname()["libshared.so"]
    assert tree.ok and shared.via == "loaded" and shared.path == str(lay.p(f"{b}/early/libshared.so"))
    assert str(lay.p(f"{b}/early/libearly.so")) in tree.context


@pytest.mark.parametrize("pie", [True, False])
def test_an_executable_as_a_library_is_fatal(lay, pie):
    """A program (PIE or not) found for a NEEDED name stops the loader."""
    b = f"exe{'pie' if pie else 'nopie'}"
    prog = lay.exe(f"{b}/lib/libprog.so", flags=[] if pie else ["-no-pie"])
    # link against a real library of that name, then put the program in its place
    lay.so(f"{b}/real/libprog.so")
    exe = lay.exe(f"{b}/main", deps=[f"{b}/real/libprog.so"], runpath=f"{lay.p(b)}/lib")
    status, _, err = run(exe)
    assert status == 127
    expected = "position-independent executable" if pie else "cannot dynamically load executable"
    assert expected in err
    tree = tree_of(exe)
    (lib,) = [lib for lib in tree.libraries if lib.error]
    assert expected in lib.error and lib.found_as == str(prog)


def test_sysroot_resolves_inside_the_root_only(lay, tmp_path):
    """--root: system directories and the cache are the root's; the host's libc is not used."""
    root = tmp_path / "sysroot"
    dst = host_loader_config().dst_lib            # lib/x86_64-linux-gnu on Debian
    lib = lay.so("sysroot-src/libfoo.so.1")
    exe = lay.exe("sysroot-src/prog", deps=["sysroot-src/libfoo.so.1"])
    (root / "usr" / dst).mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    shutil.copy(lib, root / "usr" / dst / "libfoo.so.1")
    shutil.copy(exe, root / "usr" / "bin" / "prog")
    tree = resolve_tree("/usr/bin/prog", root=str(root), use_etc_preload=False)
    foo = tree.by_soname()["libfoo.so.1"]
    assert foo.path == str(root / "usr" / dst / "libfoo.so.1") and foo.via == "system_dir"
    assert foo.found_as == f"/usr/{dst}/libfoo.so.1"
    libc = tree.by_soname()["libc.so.6"]
    assert libc.path is None                       # the root has no libc: not the host's
    assert all(c.path.startswith("/") for c in libc.tried)
    same = resolve_tree(str(root / "usr" / "bin" / "prog"), root=str(root), use_etc_preload=False)
    assert same.by_soname()["libfoo.so.1"].path == foo.path


def test_isa_level_above_the_cpu_is_fatal(lay):
    """A library marked for a higher x86-64 level than the CPU's fails to load (dl-prop.h)."""
    level = host_loader_config().isa_level
    if not level or level >= 4:
        pytest.skip("needs a known CPU level below x86-64-v4")
    b = "isa"
    lay.so(f"{b}/l/libisa.so", flags=[f"-Wl,-z,x86-64-v{level + 1}"])
    exe = lay.exe(f"{b}/main", deps=[f"{b}/l/libisa.so"], runpath=f"{lay.p(b)}/l")
    status, _, err = run(exe)
    assert status == 127 and "CPU ISA level is lower than required" in err
    tree = tree_of(exe)
    (lib,) = [lib for lib in tree.libraries if lib.error]
    assert "CPU ISA level is lower than required" in lib.error


def test_python_context_matches_what_dlopen_maps(lay):
    """resolve_tree(ext, main=python): the libraries it says are new are those dlopen maps.

    The oracle is the running interpreter: /proc/self/maps before and after
    ctypes.CDLL(ext) in a fresh `python -I -S`.
    """
    import sys
    b = "pyctx"
    lay.so(f"{b}/deps/libctxdep.so", "int dep(void){return 3;}")
    ext = lay.so(f"{b}/pkg/libctxext.so", "#include <math.h>\nint dep(void);\n"
                 "double ext(double x){return dep() + cos(x);}",
                 deps=[f"{b}/deps/libctxdep.so"], runpath="$ORIGIN/../deps", flags=["-lm"])
    code = ("import ctypes, os\n"
            "def maps():\n"
            "    out = set()\n"
            "    for line in open('/proc/self/maps'):\n"
            "        p = line.split(None, 5)[-1].strip()\n"
            "        if p.startswith('/') and '.so' in p: out.add(os.path.realpath(p))\n"
            "    return out\n"
            f"before = maps(); ctypes.CDLL({str(ext)!r}); after = maps()\n"
            "print('\\n'.join(sorted(after - before)))\n")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    new_in_process = set(proc.stdout.split())
    tree = resolve_tree(str(ext), main=os.path.realpath(sys.executable), use_etc_preload=False)
    assert tree.ok
    ours_new = {lib.path for lib in tree.libraries if lib.via not in ("loaded", "interpreter")} | {str(ext)}
    assert ours_new == new_in_process
    assert tree.by_soname()["libm.so.6"].via == "loaded"
    assert tree.by_soname()["libctxdep.so"].via == "runpath"


def test_loaded_objects_match_a_real_import_sequence():
    """numpy's linalg extension dlopen'ed after _multiarray_umath: what is new, per /proc/self/maps."""
    import glob
    import sys

    import numpy
    base = os.path.dirname(numpy.__file__)
    first = (glob.glob(f"{base}/_core/_multiarray_umath*.so") or [None])[0]
    second = (glob.glob(f"{base}/linalg/_umath_linalg*.so") or [None])[0]
    if not first or not second:
        pytest.skip("numpy layout not recognised")
    code = ("import ctypes, os, sys\n"
            "def maps():\n"
            "    out = set()\n"
            "    for line in open('/proc/self/maps'):\n"
            "        p = line.split(None, 5)[-1].strip()\n"
            "        if p.startswith('/') and '.so' in p: out.add(os.path.realpath(p))\n"
            "    return out\n"
            "ctypes.CDLL(sys.argv[1]); before = maps(); ctypes.CDLL(sys.argv[2]); after = maps()\n"
            "print('\\n'.join(sorted(after - before)))\n")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code, first, second], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    tree = resolve_tree(second, main=os.path.realpath(sys.executable), loaded=[first], use_etc_preload=False)
    assert tree.ok and first in tree.context
    ours_new = {lib.path for lib in tree.libraries if lib.via not in ("loaded", "interpreter")} | {second}
    assert ours_new == set(proc.stdout.split())


def test_shared_resolver_reuses_trees_only_when_equivalent(lay):
    """Two copies of a program share a tree only where nothing about the root changes the answer."""
    b = "memo"
    lay.so(f"{b}/one/lib/libm1.so", "int w(void){return 1;}")
    lay.so(f"{b}/two/lib/libm1.so", "int w(void){return 2;}")
    exe1 = lay.exe(f"{b}/one/main", deps=[f"{b}/one/lib/libm1.so"], runpath="$ORIGIN/lib")
    exe2 = lay.p(f"{b}/two/main")
    shutil.copy(exe1, exe2)
    r = Resolver()
    t1 = resolve_tree(str(exe1), resolver=r, use_etc_preload=False)
    t2 = resolve_tree(str(exe2), resolver=r, use_etc_preload=False)
    assert t1.by_soname()["libm1.so"].path == str(lay.p(f"{b}/one/lib/libm1.so"))
    assert t2.by_soname()["libm1.so"].path == str(lay.p(f"{b}/two/lib/libm1.so"))
    plain1 = lay.exe(f"{b}/one/plain")
    plain2 = lay.p(f"{b}/two/plain")
    shutil.copy(plain1, plain2)
    p1 = resolve_tree(str(plain1), resolver=r, use_etc_preload=False)
    p2 = resolve_tree(str(plain2), resolver=r, use_etc_preload=False)
    assert p2.root == str(plain2) and p2.libraries[0].needed_by == (str(plain2),)
    assert [lib.path for lib in p1.libraries] == [lib.path for lib in p2.libraries]
    fresh = resolve_tree(str(plain2), use_etc_preload=False)
    assert fresh == p2


def test_tree_json_writer_equals_json_dumps_of_tree_json(lay):
    """The fast many-tree JSON text is byte for byte json.dumps of tree_json, memoized trees included."""
    import json

    from mltools.elf.treejson import TreeJsonWriter, tree_json
    b = "jsonw"
    lay.so(f"{b}/lib/libj1.so", "int j(void){return 1;}")
    exe1 = lay.exe(f"{b}/one", deps=[f"{b}/lib/libj1.so"], runpath="$ORIGIN/lib")
    exe2 = lay.p(f"{b}/two \"quoted\" \u00e9")   # a root that JSON must escape
    shutil.copy(exe1, exe2)
    missing = lay.exe(f"{b}/missing", deps=[f"{b}/lib/libj1.so"])     # no runpath: libj1 not found
    r = Resolver()
    trees = [resolve_tree(str(p), resolver=r, use_etc_preload=False) for p in (exe1, exe2, missing, exe1)]
    assert not trees[2].ok
    assert any("_template" in vars(lib) for lib in trees[1].libraries)    # the memoized copy is exercised
    writer = TreeJsonWriter()
    for t in trees:
        assert writer.tree_text(t) == json.dumps(tree_json(t), separators=(",", ":"))


def test_read_elf_builds_the_same_info_as_the_record():
    from mltools._record import fields
    from mltools.elf.reader import ElfInfo, read_elf
    info = read_elf(os.path.realpath("/bin/ls"))
    again = ElfInfo(**{n: getattr(info, n) for n in fields(ElfInfo)})
    assert info == again and hash(info) == hash(again) and vars(info) == vars(again)


def test_an_empty_needed_name_is_the_main_program(lay):
    """DT_NEEDED "" matches the main program's link-map name (""): the loader loads nothing for it."""
    lay.so("emptyneeded/libzz.so")
    exe = lay.exe("emptyneeded/main", deps=["emptyneeded/libzz.so"])
    data = bytearray(exe.read_bytes())
    data[data.find(b"libzz.so\0")] = 0
    patched = lay.p("emptyneeded/main2")
    patched.write_bytes(bytes(data))
    patched.chmod(0o755)
    assert run(patched)[0] == 0
    listing, _err, status = ld_list(patched)
    assert status == 0 and "" not in listing and None not in listing.values()
    tree = tree_of(patched)
    assert tree.ok and all(lib.soname != "" for lib in tree.libraries)
    assert [f.code for f in tree.findings] == ["EMPTY_NEEDED"]
    assert only_fixture(ours(tree), lay.base) == only_fixture(listing, lay.base)
