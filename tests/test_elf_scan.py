"""`mltools elf scan` on hermetic trees: a wheel-like layout, bad files, duplicates, runtimes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mltools.elf.runtimes import duplicate_family
from mltools.elf.scan import scan_paths

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def cc(out: Path, src: str, *args):
    out.parent.mkdir(parents=True, exist_ok=True)
    c = out.parent / (out.name + ".c")
    c.write_text(src)
    subprocess.run(["gcc", "-o", str(out), str(c), *args], check=True, capture_output=True)
    c.unlink()
    return out


def so(out: Path, *args, soname=None, src="int f(void){return 0;}"):
    return cc(out, src, "-shared", "-fPIC", f"-Wl,-soname,{soname or out.name}", "-Wl,--no-as-needed", *args)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("scan")
    site = base / "site"
    libs = site / "pkg.libs"
    dep = so(libs / "libdep-5678abcd.so")
    graft = so(libs / "libgraft-1234abcd.so", str(dep))                 # no RPATH of its own
    gomp = so(libs / "libgomp-a34b3233.so.1")
    iomp = so(libs / "libiomp5.so")
    so(site / "pkg" / "_ext.cpython-311-x86_64-linux-gnu.so", str(graft), str(gomp), str(iomp),
       "-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN/../pkg.libs")
    build = base / "build"
    missing_lib = so(base / "elsewhere" / "libgone.so")
    cc(build / "bin" / "tool", "int main(void){return 0;}", "-Wl,--no-as-needed", str(missing_lib))
    shutil.copy(dep, build / "copy-of-dep.so")
    (build / "libbroken.so").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    data = (site / "pkg" / "_ext.cpython-311-x86_64-linux-gnu.so").read_bytes()
    (build / "libtrunc.so").write_bytes(data[:700])
    (build / "notes.txt").write_text("not an ELF")
    (build / "libdev.so").write_text("/* GNU ld script */\nINPUT(libdev.so.1 -lm)\n")   # for the linker
    os.symlink("copy-of-dep.so", build / "libalias.so")
    return base, site, build


def _codes(report):
    return [(f.code, f.details.get("path") or f.details.get("family")) for f in report.findings]


def test_findings_on_a_wheel_and_a_build_dir(tree):
    base, site, build = tree
    r = scan_paths([str(site), str(build)])
    codes = _codes(r)
    assert ("MISSING", str(build / "bin" / "tool")) in codes
    assert ("NOT_ELF", str(build / "libbroken.so")) in codes
    assert ("MALFORMED_ELF", str(build / "libtrunc.so")) in codes
    assert not [c for c in codes if c[1] == str(build / "libdev.so")]     # a linker script is fine
    assert ("GRAFT_NEEDS_LOADER_RPATH", str(site / "pkg.libs" / "libgraft-1234abcd.so")) in codes
    assert any(c == "DUP_RUNTIME" and "openmp" in f.message for f, (c, _) in zip(r.findings, codes))
    kinds = {f.path: f.kind for f in r.files}
    assert kinds[str(site / "pkg" / "_ext.cpython-311-x86_64-linux-gnu.so")] == "extension"
    assert kinds[str(site / "pkg.libs" / "libgraft-1234abcd.so")] == "grafted"
    assert kinds[str(build / "bin" / "tool")] == "executable"
    groups = [g for g in r.duplicates if g.identical]
    assert any(set(g.paths) == {str(build / "copy-of-dep.so"), str(site / "pkg.libs" / "libdep-5678abcd.so")}
               for g in groups)
    dep = next(f for f in r.files if f.path == str(build / "copy-of-dep.so"))
    assert dep.aliases == (str(build / "libalias.so"),)


def test_output_does_not_depend_on_argument_order(tree, cli):
    _base, site, build = tree
    a = cli("elf", "scan", "--json", site, build)
    b = cli("elf", "scan", "--json", build, site, "-j", "1")
    assert a.exit_code == b.exit_code == 1
    assert json.loads(a.stdout) == json.loads(b.stdout)
    assert json.loads(a.stdout)["schema"] == "mltools.elf.scan"


def test_text_output_and_fail_on(tree, cli):
    _base, site, _build = tree
    res = cli("elf", "scan", site)           # the wheel alone: info and warnings, no error
    assert res.exit_code == 0, res.stdout
    assert "GRAFT_NEEDS_LOADER_RPATH" in res.stdout and "DUP_RUNTIME" in res.stdout
    assert cli("elf", "scan", "--fail-on", "warning", site).exit_code == 1


def test_missing_path_is_exit_2(cli, tmp_path):
    res = cli("elf", "scan", tmp_path / "nope")
    assert res.exit_code == 2


def test_runtime_family_names():
    assert duplicate_family("/x/libgomp-a34b3233.so.1") == "openmp"
    assert duplicate_family("/x/libiomp5.so") == "openmp"
    assert duplicate_family("/x/libopenblas.so.0") == "blas"
    assert duplicate_family("/x/libscipy_openblas64_-32a4b2a6.so") is None   # prefixed: made to coexist
    assert duplicate_family("/x/libomptarget.so") is None
    assert duplicate_family("/usr/lib/libstdc++.so.6") == "libstdc++"
    assert duplicate_family("/x/libcudart.so.12") == "cuda-runtime"


def test_real_numpy_install_has_no_errors():
    import numpy
    site = os.path.dirname(os.path.dirname(numpy.__file__))
    paths = [os.path.join(site, "numpy")] + ([os.path.join(site, "numpy.libs")]
                                             if os.path.isdir(os.path.join(site, "numpy.libs")) else [])
    r = scan_paths(paths)
    assert r.files and not [f for f in r.findings if f.severity.value == "error"]


def test_scan_shows_progress_on_a_terminal_only():
    import json
    import re

    from terminal import run_on_terminal

    args = ["elf", "scan", "--json", "--fail-on", "none", "/usr/bin"]
    proc, err = run_on_terminal(args)
    assert proc.returncode == 0 and json.loads(proc.stdout)["schema"] == "mltools.elf.scan"   # stdout: the document
    lines = [x for x in err.split("\r\x1b[K") if x]
    counts = [tuple(map(int, m.groups())) for m in (re.match(r"elf scan: (\d+)/(\d+) \(\d+%\)", x) for x in lines) if m]
    assert counts and counts[-1][0] == counts[-1][1] > 100, lines      # done/total, ending complete
    assert any(re.search(r", \d+[smh]\S* left$", x) for x in lines), lines
    _, quiet = run_on_terminal(args + ["--quiet"])
    assert "elf scan" not in quiet
