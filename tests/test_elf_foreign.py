"""32-bit and foreign loaders: i386 objects and an aarch64 sysroot, against the real loaders.

Oracles:
- i386 on this host: Debian's i386 loader (``/lib/ld-linux.so.2``, from
  gcc-12-multilib's libc6-i386) listing the fixture in trace mode, and the fixture
  program run natively;
- i386 multiarch (``libc6:i386`` unpacked in ``.sysroots/i386``): the same
  loader in trace mode under ``chroot`` (qemu-i386 ``-L`` does not redirect the
  ``statx`` calls the i386 loader checks directories with);
- aarch64 (``.sysroots/arm64``, Debian's arm64 packages): the root's own loader
  under ``qemu-aarch64 -L ROOT`` in trace mode.

Fixtures are built here: ``gcc -m32`` and ``aarch64-linux-gnu-gcc``. The
sysroots come from ``tests/make_sysroots.sh`` (``.ci/run`` makes them); each
part skips when its tool or root is missing.
"""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from mltools.elf.ldso import loader_config, loader_config_for_root, read_loader_file
from mltools.elf.ldtree import Resolver, resolve_tree
from mltools.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
ROOTS = REPO / ".sysroots"
ARM64, I386 = ROOTS / "arm64", ROOTS / "i386"
I386_LDSO = "/lib/ld-linux.so.2"
ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
RET = "int {n}(void){{return {v};}}\n"


def _can_m32() -> bool:
    if shutil.which("gcc") is None or not os.path.exists(I386_LDSO):
        return False
    probe = subprocess.run(["gcc", "-m32", "-x", "c", "-", "-o", os.devnull], input="int main(void){return 0;}",
                           capture_output=True, text=True)
    return probe.returncode == 0


HAVE_M32 = _can_m32()
HAVE_ARM = shutil.which("aarch64-linux-gnu-gcc") is not None and shutil.which("qemu-aarch64") is not None
need_m32 = pytest.mark.skipif(not HAVE_M32, reason="needs gcc -m32 (gcc-12-multilib) and the i386 loader")
need_arm = pytest.mark.skipif(not HAVE_ARM or not (ARM64 / "lib/ld-linux-aarch64.so.1").exists(),
                              reason="needs aarch64-linux-gnu-gcc, qemu-aarch64 and tests/make_sysroots.sh")
need_i386_root = pytest.mark.skipif(not HAVE_M32 or not (I386 / "lib/ld-linux.so.2").exists() or os.geteuid() != 0,
                                    reason="needs gcc -m32, tests/make_sysroots.sh and root (chroot)")


class Build:
    """Builds fixtures with one compiler under one directory."""

    def __init__(self, base: Path, cc, flags=()):
        self.base, self.cc, self.flags = base, cc, list(flags)

    def p(self, rel: str) -> Path:
        return self.base / rel

    def _cc(self, rel, src, args, cc=None, flags=None):
        out = self.p(rel)
        out.parent.mkdir(parents=True, exist_ok=True)
        c = out.parent / (out.name + ".c")
        c.write_text(src)
        proc = subprocess.run([*(cc or [self.cc]), *(self.flags if flags is None else flags), "-o", str(out), str(c),
                               *args], capture_output=True, text=True, timeout=120)
        c.unlink()
        assert proc.returncode == 0, proc.stderr
        return out

    @staticmethod
    def _paths(runpath, rpath):
        out = []
        if runpath:
            out += ["-Wl,--enable-new-dtags", f"-Wl,-rpath,{runpath}"]
        if rpath:
            out += ["-Wl,--disable-new-dtags", f"-Wl,-rpath,{rpath}"]
        return out

    def so(self, rel, src="int dummy(void){return 0;}", soname=None, deps=(), runpath=None, rpath=None,
           cc=None, flags=None):
        return self._cc(rel, src, ["-shared", "-fPIC", f"-Wl,-soname,{soname or Path(rel).name}",
                                   "-Wl,--no-as-needed", *[str(self.p(d)) for d in deps],
                                   *self._paths(runpath, rpath), "-Wl,--allow-shlib-undefined"], cc, flags)

    def exe(self, rel, src="int main(void){return 0;}", deps=(), runpath=None, rpath=None, extra=()):
        return self._cc(rel, src, ["-Wl,--no-as-needed", *[str(self.p(d)) for d in deps], *extra,
                                   *self._paths(runpath, rpath), "-Wl,--allow-shlib-undefined"])


def parse_trace(text: str, root: str = "") -> dict:
    """{name: path or None} from the loader's trace output (what ldd prints)."""
    found = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("linux-vdso.so", "linux-gate.so")):
            continue
        m = re.match(r"(\S+) => not found", line)
        if m:
            found.setdefault(m.group(1), None)
            continue
        m = re.match(r"(\S+) => (\S+) \(0x", line) or re.match(r"((/\S+)) \(0x", line)
        if m:
            name, path = m.group(1), m.group(2)
            if root and name.startswith(root + "/"):
                name = name[len(root):]
            found[name] = path
    return found


def oracle_sets(listing: dict, root: str = ""):
    """(realpaths found, names missing); a target path is looked up in ``root`` first (as qemu -L does)."""
    found, missing = set(), set()
    for name, path in listing.items():
        if path is None:
            missing.add(name)
            continue
        if root and not path.startswith(root + "/") and os.path.lexists(root + path):
            path = root + path
        found.add(os.path.realpath(path))
    return found, missing


def our_sets(tree):
    found = {lib.path for lib in tree.libraries if lib.found}
    missing = {n for lib in tree.libraries if lib.path is None for n in lib.requested_as}
    errors = [lib.error for lib in tree.libraries if lib.error]
    return found, missing, errors


def assert_same(tree, listing, status, stderr, root=""):
    found, missing, errors = our_sets(tree)
    if status == 127 and not listing:            # the loader stopped on a bad candidate
        assert errors, (stderr, tree)
        return
    ofound, omissing = oracle_sets(listing, root)
    assert (found, missing, errors) == (ofound, omissing, []), (stderr, listing)


# --- i386 on this host ----------------------------------------------------------------------------

def i386_trace(prog, env=None):
    proc = subprocess.run([I386_LDSO, str(prog)], capture_output=True, text=True, timeout=60,
                          env={**ENV, "LD_TRACE_LOADED_OBJECTS": "1", **(env or {})})
    return parse_trace(proc.stdout), proc.returncode, proc.stderr


def run(prog, env=None, runner=()):
    proc = subprocess.run([*runner, str(prog)], capture_output=True, text=True, timeout=120, env={**ENV, **(env or {})})
    return proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def fx32(tmp_path_factory):
    """i386 fixtures: name -> (program, env, expected exit status when run or None)."""
    b = Build(tmp_path_factory.mktemp("i386"), "gcc", ["-m32"])
    cases = {}
    cases["hello"] = (b.exe("hello/main", '#include <stdio.h>\nint main(void){puts("hi");return 0;}'), {}, 0)
    b.so("runpath/lib/liba.so")
    cases["runpath_origin"] = (b.exe("runpath/main", deps=["runpath/lib/liba.so"], runpath="$ORIGIN/lib"), {}, 0)
    b.so("rpathinh/r/libb.so")
    b.so("rpathinh/mid/liba.so", deps=["rpathinh/r/libb.so"])
    cases["rpath_inherited"] = (b.exe("rpathinh/main", deps=["rpathinh/mid/liba.so"], rpath="$ORIGIN/r:$ORIGIN/mid"),
                                {}, 0)
    lib32 = loader_config("i386").dst_lib
    b.so(f"dstlib/{lib32}/libl.so")
    cases["dst_lib"] = (b.exe("dstlib/main", deps=[f"dstlib/{lib32}/libl.so"], runpath="$ORIGIN/$LIB"), {}, 0)
    b.so("dstplat/i686/libp.so")
    cases["dst_platform"] = (b.exe("dstplat/main", deps=["dstplat/i686/libp.so"], runpath="$ORIGIN/$PLATFORM"), {}, 0)
    # the legacy subdirectories: tls, then the platform (i686), then the hwcap (sse2), then the directory
    main_h = "int h(void);int main(void){return h();}"
    for sub, v in (("", 0), ("sse2/", 2), ("i686/", 1)):
        b.so(f"legacy/h/{sub}libh.so", RET.format(n="h", v=v))
    cases["legacy_order"] = (b.exe("legacy/main", main_h, deps=["legacy/h/libh.so"], runpath="$ORIGIN/h"), {}, 1)
    for sub, v in (("", 0), ("i686/sse2/", 3), ("tls/", 4)):
        b.so(f"tls/h/{sub}libh.so", RET.format(n="h", v=v))
    cases["legacy_tls_first"] = (b.exe("tls/main", main_h, deps=["tls/h/libh.so"], runpath="$ORIGIN/h"), {}, 4)
    b.so("hwcaps/l/libq.so", RET.format(n="q", v=0))
    b.so("hwcaps/l/glibc-hwcaps/x86-64-v2/libq.so", RET.format(n="q", v=9))
    cases["no_glibc_hwcaps"] = (b.exe("hwcaps/main", "int q(void);int main(void){return q();}",
                                      deps=["hwcaps/l/libq.so"], runpath="$ORIGIN/l"), {}, 0)
    b.so("missing/tmp/libgone.so")
    cases["missing"] = (b.exe("missing/main", deps=["missing/tmp/libgone.so"]), {}, 127)
    b.p("missing/tmp/libgone.so").unlink()
    b.so("class/w/libw.so", flags=[])                           # an x86-64 copy first: skipped
    b.so("class/g/libw.so")
    cases["wrong_class_skipped"] = (b.exe("class/main", deps=["class/g/libw.so"], runpath="$ORIGIN/w:$ORIGIN/g"),
                                    {}, 0)
    b.so("llp/d/libdd.so")
    b.so("llp/c/libcc.so", deps=["llp/d/libdd.so"])
    prog = b.exe("llp/main", deps=["llp/c/libcc.so"], runpath="$ORIGIN/c:$ORIGIN/d")
    cases["runpath_not_inherited"] = (prog, {}, 127)
    cases["ld_library_path"] = (prog, {"LD_LIBRARY_PATH": str(b.p("llp/d"))}, 0)
    # 63 bytes: too short for an ELF64 header but not for ELF32's 52: "invalid ELF header", not "file too short"
    bad = b.p("fatal/bad/libf.so")
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n"[:63])
    b.so("fatal/good/libf.so")
    cases["fatal_candidate"] = (b.exe("fatal/main", deps=["fatal/good/libf.so"], runpath="$ORIGIN/bad:$ORIGIN/good"),
                                {}, 127)
    libstdcxx = "/usr/lib32/libstdc++.so.6"
    if os.path.exists(libstdcxx):
        cases["cxx_from_cache"] = (b.exe("cxx/main", extra=[libstdcxx]), {}, 0)
    return b, cases


I386_CASES = ["hello", "runpath_origin", "rpath_inherited", "dst_lib", "dst_platform", "legacy_order",
              "legacy_tls_first", "no_glibc_hwcaps", "missing", "wrong_class_skipped", "runpath_not_inherited",
              "ld_library_path", "fatal_candidate", "cxx_from_cache"]


@need_m32
@pytest.mark.parametrize("name", I386_CASES)
def test_i386_tree_matches_the_i386_loader(fx32, name):
    _b, cases = fx32
    if name not in cases:
        pytest.skip("no /usr/lib32/libstdc++.so.6")
    prog, env, expect = cases[name]
    status, err = run(prog, env)
    assert status == expect, err                        # the fixture does what the case says
    listing, tstatus, terr = i386_trace(prog, env)
    tree = resolve_tree(str(prog), env=env, use_etc_preload=False)
    assert_same(tree, listing, tstatus, terr)
    if name == "fatal_candidate":
        (lib,) = [lib for lib in tree.libraries if lib.error]
        assert lib.error.startswith("invalid ELF header") and "invalid ELF header" in err


@need_m32
def test_i386_config_is_the_i386_loaders(fx32):
    """System directories, $LIB and $PLATFORM as the i386 loader itself lists them."""
    cfg = loader_config("i386")
    diag = subprocess.run([I386_LDSO, "--list-diagnostics"], capture_output=True, text=True).stdout
    values = dict(line.split("=", 1) for line in diag.splitlines() if "=" in line)
    dirs = [v.strip('"').rstrip("/") for k, v in sorted(values.items()) if k.startswith("path.system_dirs[")]
    assert list(cfg.system_dirs) == dirs
    assert cfg.dst_lib == values["dl_dst_lib"].strip('"')
    assert cfg.platform == values["dl_platform"].strip('"')
    assert cfg.glibc_version == values["version.version"].strip('"')
    assert cfg.hwcaps_subdirs == () and cfg.cache_flags == (3, 1)


@need_m32
def test_i386_legacy_search_order_is_ld_debugs(fx32):
    """The subdirectories tried in one RUNPATH directory, in the order LD_DEBUG=libs prints them."""
    b, cases = fx32
    prog = cases["legacy_order"][0]
    err = subprocess.run([str(prog)], capture_output=True, text=True, env={**ENV, "LD_DEBUG": "libs"}).stderr
    m = re.search(r"search path=(\S+)\s+\(RUNPATH from file", err)
    assert m, err
    base = str(b.p("legacy/h"))
    assert m.group(1).split(":") == [f"{base}/{s}".rstrip("/") for s in loader_config("i386").legacy_subdirs + ("",)]


@need_m32
def test_i386_and_x86_64_programs_in_one_batch(cli, fx32):
    """One run resolves each program with its own loader (text and JSON)."""
    hello = str(fx32[1]["hello"][0])
    res = cli("elf", "tree", "--json", "--clean-env", hello, "/bin/ls")
    assert res.exit_code == 0, res.stderr
    trees = {t["root"]: t for t in res.json()["trees"]}
    libc32 = next(lib for lib in trees[hello]["libraries"] if lib["soname"] == "libc.so.6")
    libc64 = next(lib for lib in trees["/bin/ls"]["libraries"] if lib["soname"] == "libc.so.6")
    listing, _status, _err = i386_trace(hello)
    assert libc32["path"] == os.path.realpath(listing["libc.so.6"]) and libc32["path"] != libc64["path"]


@need_m32
def test_elf_check_on_an_i386_program_finds_a_missing_symbol(cli, fx32, tmp_path):
    """elf check resolves and reads 32-bit objects; the oracle is the loader's own symbol error."""
    b = Build(tmp_path, "gcc", ["-m32"])
    b.so("l/libs.so", "int gone(void){return 1;}")
    prog = b.exe("main", "int gone(void);int main(void){return gone();}", deps=["l/libs.so"], runpath="$ORIGIN/l")
    assert run(prog)[0] == 1
    assert cli("elf", "check", str(prog)).exit_code == 0
    b.so("l/libs.so", "int other(void){return 1;}")
    status, err = run(prog)
    assert status == 127 and "undefined symbol: gone" in err
    res = cli("elf", "check", "--json", str(prog))
    assert res.exit_code == 1
    assert any(f["code"] == "UNDEFINED" and "gone" in f["message"] for f in res.json()["findings"])


# --- i386 multiarch sysroot ------------------------------------------------------------------------

def _root_copy(src: Path, dst: Path) -> Path:
    """A copy of a sysroot made of hard links (cheap). ldconfig replaces the files it writes; a file
    the test changes must be replaced too (:func:`_write`), never written through its link."""
    subprocess.run(["cp", "-al", str(src), str(dst)], check=True)
    return dst


def _write(path: Path, text: str) -> None:
    path.unlink(missing_ok=True)
    path.write_text(text)


def chroot_trace(root: Path, prog: str, env=None):
    """The root's i386 loader in trace mode, chrooted (os.chroot in the child: a chroot(1) binary would
    itself be traced by LD_TRACE_LOADED_OBJECTS)."""
    def enter():
        os.chroot(root)
        os.chdir("/")

    proc = subprocess.run(["/lib/ld-linux.so.2", prog], capture_output=True, text=True, timeout=60,
                          env={**ENV, "LD_TRACE_LOADED_OBJECTS": "1", **(env or {})}, preexec_fn=enter)
    return parse_trace(proc.stdout), proc.returncode, proc.stderr


@need_i386_root
def test_i386_multiarch_sysroot_matches_its_loader(fx32, tmp_path):
    """The same fixtures inside a libc6:i386 root (lib/i386-linux-gnu, $LIB, the root's cache),
    plus a library the cache lists with flags 0x1 (ELF, no libc), which the i386 loader accepts."""
    b, cases = fx32
    root = _root_copy(I386, tmp_path / "root")
    shutil.copytree(b.base, root / "opt/fx", symlinks=True)
    lib32 = loader_config("i386").dst_lib
    multi = loader_config_for_root(str(root)).dst_lib
    assert multi == "lib/i386-linux-gnu"
    (root / f"opt/fx/dstlib/{multi}").mkdir(parents=True)
    shutil.copy(b.p(f"dstlib/{lib32}/libl.so"), root / f"opt/fx/dstlib/{multi}/libl.so")
    nolibc = Build(tmp_path / "nolibc", "gcc", ["-m32", "-nostdlib"])
    nolibc.so("libnolibc.so")
    (root / "usr/local/lib").mkdir(parents=True, exist_ok=True)
    shutil.copy(nolibc.p("libnolibc.so"), root / "usr/local/lib/libnolibc.so")
    _write(root / "etc/ld.so.conf", "/usr/local/lib\n")
    subprocess.run([str(root / "sbin/ldconfig"), "-r", str(root)], check=True)
    elf_main = Build(tmp_path / "elfflag", "gcc", ["-m32"]).exe("main", extra=[str(nolibc.p("libnolibc.so"))])
    shutil.copy(elf_main, root / "opt/fx/elfflag_main")
    flags = {e.name: e.flags for e in Resolver(root=str(root), config=loader_config("i386", str(root))).cache.entries}
    assert flags["libnolibc.so"] == 0x1
    names = [n for n in I386_CASES if n in cases and n != "cxx_from_cache"]
    progs = [(n, "/opt/fx/" + os.path.relpath(cases[n][0], b.base), cases[n][1]) for n in names]
    progs.append(("elf_flag", "/opt/fx/elfflag_main", {}))
    resolver = Resolver(root=str(root))
    for name, prog, env in progs:
        env = {k: v.replace(str(b.base), "/opt/fx") for k, v in env.items()}
        listing, status, err = chroot_trace(root, prog, env)
        tree = resolve_tree(prog, env=env, resolver=resolver, use_etc_preload=False)
        try:
            assert_same(tree, listing, status, err, str(root))
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


# --- aarch64 in a Debian arm64 sysroot ------------------------------------------------------------

def qemu_trace(prog, env=None, root: Path = ARM64, cpu=None):
    argv = ["qemu-aarch64", *(["-cpu", cpu] if cpu else []), "-L", str(root), "-E", "LD_TRACE_LOADED_OBJECTS=1"]
    for k, v in (env or {}).items():
        argv += ["-E", f"{k}={v}"]
    proc = subprocess.run([*argv, str(root / "lib/ld-linux-aarch64.so.1"), str(prog)], capture_output=True,
                          text=True, timeout=120, env=ENV)
    return parse_trace(proc.stdout, str(root)), proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def fx64(tmp_path_factory):
    b = Build(tmp_path_factory.mktemp("arm64"), "aarch64-linux-gnu-gcc")
    cases = {}
    cases["hello"] = (b.exe("hello/main", '#include <stdio.h>\nint main(void){puts("hi");return 0;}'), {})
    b.so("runpath/lib/liba.so")
    cases["runpath_origin"] = (b.exe("runpath/main", deps=["runpath/lib/liba.so"], runpath="$ORIGIN/lib"), {})
    b.so("rpathinh/r/libb.so")
    b.so("rpathinh/mid/liba.so", deps=["rpathinh/r/libb.so"])
    cases["rpath_inherited"] = (b.exe("rpathinh/main", deps=["rpathinh/mid/liba.so"],
                                      rpath="$ORIGIN/r:$ORIGIN/mid"), {})
    b.so("dstlib/lib/aarch64-linux-gnu/libl.so")
    cases["dst_lib"] = (b.exe("dstlib/main", deps=["dstlib/lib/aarch64-linux-gnu/libl.so"], runpath="$ORIGIN/$LIB"),
                        {})
    b.so("dstplat/aarch64/libp.so")
    cases["dst_platform"] = (b.exe("dstplat/main", deps=["dstplat/aarch64/libp.so"], runpath="$ORIGIN/$PLATFORM"),
                             {})
    for sub, v in (("", 0), ("atomics/", 2), ("aarch64/", 1)):
        b.so(f"legacy/h/{sub}libh.so", RET.format(n="h", v=v))
    cases["legacy_order"] = (b.exe("legacy/main", "int h(void);int main(void){return h();}", deps=["legacy/h/libh.so"],
                                   runpath="$ORIGIN/h"), {})
    b.so("hwcaps/l/libq.so", RET.format(n="q", v=0))
    for sub in ("x86-64-v2", "aarch64", "atomics"):
        b.so(f"hwcaps/l/glibc-hwcaps/{sub}/libq.so", RET.format(n="q", v=9))
    cases["no_glibc_hwcaps"] = (b.exe("hwcaps/main", "int q(void);int main(void){return q();}",
                                      deps=["hwcaps/l/libq.so"], runpath="$ORIGIN/l"), {})
    b.so("missing/tmp/libgone.so")
    cases["missing"] = (b.exe("missing/main", deps=["missing/tmp/libgone.so"]), {})
    b.p("missing/tmp/libgone.so").unlink()
    b.so("mach/w/libw.so", cc=["gcc"], flags=[])                 # x86-64 first: wrong machine, skipped
    b.so("mach/g/libw.so")
    cases["wrong_machine_skipped"] = (b.exe("mach/main", deps=["mach/g/libw.so"], runpath="$ORIGIN/w:$ORIGIN/g"), {})
    if HAVE_M32:
        b.so("class/w/libw.so", cc=["gcc"], flags=["-m32"])      # ELF32 i386 first: wrong class, skipped
        b.so("class/g/libw.so")
        cases["wrong_class_skipped"] = (b.exe("class/main", deps=["class/g/libw.so"],
                                              runpath="$ORIGIN/w:$ORIGIN/g"), {})
    b.so("llp/d/libdd.so")
    b.so("llp/c/libcc.so", deps=["llp/d/libdd.so"])
    prog = b.exe("llp/main", deps=["llp/c/libcc.so"], runpath="$ORIGIN/c:$ORIGIN/d")
    cases["runpath_not_inherited"] = (prog, {})
    cases["ld_library_path"] = (prog, {"LD_LIBRARY_PATH": str(b.p("llp/d"))})
    bad = b.p("fatal/bad/libf.so")
    bad.parent.mkdir(parents=True)
    bad.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    b.so("fatal/good/libf.so")
    cases["fatal_candidate"] = (b.exe("fatal/main", deps=["fatal/good/libf.so"], runpath="$ORIGIN/bad:$ORIGIN/good"),
                                {})
    # a wheel as auditwheel lays it out: an extension with RPATH $ORIGIN/../pkg.libs, a grafted library
    # there that needs the root's libgomp and libstdc++ (through the root's cache)
    gomp = ARM64 / "usr/lib/aarch64-linux-gnu/libgomp.so.1"
    cxx = ARM64 / "usr/lib/aarch64-linux-gnu/libstdc++.so.6"
    b._cc("wheel/pkg.libs/libkern-1a2b3c4d.so", "int kern(void){return 0;}",
          ["-shared", "-fPIC", "-Wl,-soname,libkern-1a2b3c4d.so", "-Wl,--no-as-needed", str(gomp), str(cxx),
           "-Wl,--allow-shlib-undefined"])
    cases["wheel_extension"] = (b.so("wheel/pkg/_core.cpython-311-aarch64-linux-gnu.so",
                                     deps=["wheel/pkg.libs/libkern-1a2b3c4d.so"], rpath="$ORIGIN/../pkg.libs"), {})
    return b, cases


ARM_CASES = ["hello", "runpath_origin", "rpath_inherited", "dst_lib", "dst_platform", "legacy_order",
             "no_glibc_hwcaps", "missing", "wrong_machine_skipped", "wrong_class_skipped", "runpath_not_inherited",
             "ld_library_path", "fatal_candidate", "wheel_extension"]
ROOT_FILES = ["usr/bin/python3.11", "usr/lib/aarch64-linux-gnu/libssl.so.3",
              "usr/lib/aarch64-linux-gnu/libstdc++.so.6", "usr/lib/aarch64-linux-gnu/libgomp.so.1"]


@need_arm
@pytest.mark.parametrize("name", ARM_CASES)
def test_aarch64_file_outside_the_root_matches_qemu(fx64, name):
    """FILE outside --root: read where it lies, its $ORIGIN neighbours too; the rest is the root's."""
    _b, cases = fx64
    if name not in cases:
        pytest.skip("needs gcc -m32")
    prog, env = cases[name]
    listing, status, err = qemu_trace(prog, env)
    tree = resolve_tree(str(prog), env=env, root=str(ARM64), use_etc_preload=False)
    assert_same(tree, listing, status, err, str(ARM64))


@need_arm
@pytest.mark.parametrize("rel", ROOT_FILES)
def test_aarch64_files_of_the_root_match_qemu(rel):
    listing, status, err = qemu_trace(ARM64 / rel)
    assert status == 0 and listing, err
    for given in ("/" + rel, str(ARM64 / rel)):          # as the target sees it, or as a host path
        tree = resolve_tree(given, root=str(ARM64), use_etc_preload=False)
        assert_same(tree, listing, status, err, str(ARM64))


@need_arm
@pytest.mark.skipif(os.geteuid() != 0, reason="ldconfig -r chroots: needs root")
def test_aarch64_fixtures_inside_a_root_match_qemu(fx64, tmp_path):
    """The fixtures copied inside the root and named as the target sees them, and a library only the
    root's cache knows (in /usr/local/lib, an ld.so.conf directory)."""
    b, cases = fx64
    root = _root_copy(ARM64, tmp_path / "root")
    shutil.copytree(b.base, root / "opt/fx", symlinks=True)
    only = Build(tmp_path / "cacheonly", "aarch64-linux-gnu-gcc")
    only.so("libcacheonly.so.1")
    (root / "usr/local/lib").mkdir(parents=True, exist_ok=True)
    shutil.copy(only.p("libcacheonly.so.1"), root / "usr/local/lib/")
    _write(root / "etc/ld.so.conf", "/usr/local/lib\n")
    subprocess.run(["qemu-aarch64", str(root / "sbin/ldconfig"), "-r", str(root)], check=True)
    shutil.copy(only.exe("main", deps=["libcacheonly.so.1"]), root / "opt/fx/cacheonly_main")
    resolver = Resolver(root=str(root))
    progs = [(n, "/opt/fx/" + os.path.relpath(cases[n][0], b.base), cases[n][1]) for n in ARM_CASES if n in cases]
    progs.append(("cache_only", "/opt/fx/cacheonly_main", {}))
    for name, prog, env in progs:
        env = {k: v.replace(str(b.base), "/opt/fx") for k, v in env.items()}
        listing, status, err = qemu_trace(prog, env, root=root)
        tree = resolve_tree(prog, env=env, resolver=resolver, use_etc_preload=False)
        try:
            assert_same(tree, listing, status, err, str(root))
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


@need_arm
def test_aarch64_config_is_the_roots_loaders():
    """System directories, $LIB, $PLATFORM and the legacy subdirectories the root's loader itself lists."""
    loader = ARM64 / "lib/ld-linux-aarch64.so.1"
    cfg = loader_config_for_root(str(ARM64))
    assert cfg.abi == "aarch64" and cfg.cache_flags == (0xA03,)
    diag = subprocess.run(["qemu-aarch64", "-L", str(ARM64), str(loader), "--list-diagnostics"],
                          capture_output=True, text=True).stdout
    values = dict(line.split("=", 1) for line in diag.splitlines() if "=" in line)
    dirs = [v.strip('"').rstrip("/") for k, v in sorted(values.items()) if k.startswith("path.system_dirs[")]
    assert list(cfg.system_dirs) == dirs
    assert cfg.dst_lib == values["dl_dst_lib"].strip('"')
    assert cfg.platform == values["dl_platform"].strip('"')
    helptext = subprocess.run(["qemu-aarch64", "-L", str(ARM64), str(loader), "--help"],
                              capture_output=True, text=True).stdout
    legacy = helptext.split("Legacy HWCAP subdirectories", 1)[1]
    searched = [line.split()[0] for line in legacy.splitlines()[1:] if "searched" in line]
    assert set(searched) == {"aarch64", "tls", "atomics"}
    assert cfg.hwcaps_subdirs == () and "glibc-hwcaps" not in " ".join(cfg.legacy_subdirs)


@need_arm
def test_static_reading_equals_list_diagnostics_for_every_loader_here():
    """read_loader_file on each loader that can be asked: the host's, the i386 ones, the root's aarch64."""
    loaders = [("/lib64/ld-linux-x86-64.so.2", [])]
    if os.path.exists(I386_LDSO):
        loaders.append((I386_LDSO, []))
    loaders.append((str(ARM64 / "lib/ld-linux-aarch64.so.1"), ["qemu-aarch64", "-L", str(ARM64)]))
    if (I386 / "lib/ld-linux.so.2").exists():
        loaders.append((str(I386 / "lib/ld-linux.so.2"), []))
    for path, runner in loaders:
        diag = subprocess.run([*runner, path, "--list-diagnostics"], capture_output=True, text=True).stdout
        values = dict(line.split("=", 1) for line in diag.splitlines() if "=" in line)
        dirs = tuple(v.strip('"').rstrip("/") for k, v in sorted(values.items()) if k.startswith("path.system_dirs["))
        static = read_loader_file(path)
        assert static is not None, path
        assert (static["system_dirs"], static["dst_lib"], static["glibc_version"]) == (
            dirs, values["dl_dst_lib"].strip('"'), values["version.version"].strip('"')), path


@need_arm
def test_aarch64_program_without_a_root_misses_its_loader(cli, fx64):
    """On this x86-64 host an aarch64 program cannot start: its loader is not here."""
    prog = str(fx64[1]["hello"][0])
    res = cli("elf", "tree", "--json", "--clean-env", prog)
    assert res.exit_code == 1
    doc = res.json()
    assert any(f["code"] == "INTERPRETER_MISSING" for f in doc["findings"]), doc["findings"]


# --- machines no modelled loader loads ------------------------------------------------------------

def _patched(src: Path, dst: Path, machine: int, e_flags=None) -> Path:
    data = bytearray(src.read_bytes())
    data[18:20] = struct.pack("<H", machine)
    if e_flags is not None:
        off = 36 if data[4] == 1 else 48
        data[off:off + 4] = struct.pack("<I", e_flags)
    dst.write_bytes(bytes(data))
    return dst


@need_m32
def test_an_unmodelled_machine_is_refused_in_one_line_naming_its_loader(cli, fx32, tmp_path):
    lib = fx32[0].p("runpath/lib/liba.so")
    armhf = _patched(lib, tmp_path / "libarmhf.so", 40, 0x05000400)
    res = cli("elf", "tree", str(armhf))
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert "/lib/ld-linux-armhf.so.3" in res.stderr and "ELF32 ARM (armhf)" in res.stderr, res.stderr
    with pytest.raises(UsageError, match="ld-linux-riscv64-lp64d"):
        riscv = _patched(Path("/bin/true").resolve(), tmp_path / "riscv", 243, 0x5)
        resolve_tree(str(riscv))
    # in a batch the refused file is an error item and the others go on
    res = cli("elf", "tree", "--json", str(armhf), "/bin/true")
    assert res.exit_code == 1
    doc = res.json()
    assert [t["root"] for t in doc["trees"]] == ["/bin/true"]
    assert doc["errors"][0]["path"] == str(armhf) and "ld-linux-armhf.so.3" in doc["errors"][0]["message"]


@pytest.mark.parametrize("arch", ["arm64", "i386"])
def test_the_sysroot_caches_read_as_their_own_ldconfig_lists_them(cli, arch):
    """elf ldcache --root: the same entries, names and flags (libc6,AArch64) as the root's ldconfig -p."""
    root = ROOTS / arch
    ldconfig = root / "sbin/ldconfig"
    runner = ["qemu-aarch64"] if arch == "arm64" else []
    if not ldconfig.exists() or (runner and shutil.which(runner[0]) is None):
        pytest.skip("needs tests/make_sysroots.sh (and qemu-user)")
    out = subprocess.run([*runner, str(ldconfig), "-p", "-C", str(root / "etc/ld.so.cache")], capture_output=True,
                         text=True, env={"LC_ALL": "C"}).stdout
    theirs = [m.groups() for line in out.splitlines() if (m := re.match(r"\s+(\S+) \(([^)]*)\) => (\S+)", line))]
    res = cli("elf", "ldcache", "--root", str(root), "--json")
    assert res.exit_code == 0, (res.stderr, res.stdout[-500:])
    from mltools.elf.ldcache import flags_description
    ours = [(e["name"], flags_description(e["flags"]), e["path"]) for e in res.json()["entries"]]
    assert ours == theirs and len(ours) > 10
