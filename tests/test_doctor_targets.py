"""`doctor --target`, `doctor --wheel` and `doctor diff`.

Oracles: auditwheel (`auditwheel show --json`, installed with the test extras) on
the same wheels, gcc-built and real ones from PyPI; this Debian system's own
libc/libstdc++/libgcc_s for its row of the target data; and the loader for what
each fixture needs (readelf's version needs).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

AUDITWHEEL = shutil.which("auditwheel") or (
    os.path.join(os.path.dirname(sys.executable), "auditwheel")
    if os.path.exists(os.path.join(os.path.dirname(sys.executable), "auditwheel")) else None)
needs_auditwheel = pytest.mark.skipif(AUDITWHEEL is None, reason="auditwheel is not installed (pip install -e '.[test]')")

EXT = r"""
#include <unistd.h>
#include <sys/mman.h>
extern int helper(int);
int call_closefrom(int fd) { closefrom(fd); return helper(fd); }   /* GLIBC_2.34 */
"""
HELPER = r"""
#include <sys/mman.h>
int helper(int x) { return memfd_create("x", 0) + x; }            /* GLIBC_2.27 */
"""
CXX = r"""
#include <string>
#include <stdexcept>
std::string shout(const std::string &s) { if (s.empty()) throw std::runtime_error("empty"); return s + "!"; }
"""


def _glibc() -> tuple:
    return tuple(int(x) for x in os.confstr("CS_GNU_LIBC_VERSION").split()[1].split("."))


@pytest.fixture(scope="session")
def fixture_wheel(cbuild, tmp_path_factory):
    """A wheel laid out as auditwheel repair leaves one: an extension needing GLIBC_2.34, a grafted
    library in pkg.libs found through $ORIGIN, and a C++ library needing GLIBCXX."""
    if _glibc() < (2, 34):
        pytest.skip("needs glibc >= 2.34 to build the fixture")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    helper = cbuild.build("libhelper-1a2b3c4d.so", HELPER, shared=True, flags=["-O2", "-Wl,-soname,libhelper-1a2b3c4d.so"],
                          subdir="whl/mltwheel.libs")
    ext = cbuild.build(f"_ext{suffix}", EXT, shared=True,
                       flags=["-O2", f"-L{helper.parent}", "-Wl,-rpath,$ORIGIN/../mltwheel.libs"],
                       libs=["-l:libhelper-1a2b3c4d.so"], subdir="whl/mltwheel")
    cxx = cbuild.build("libshout.so", CXX, shared=True, flags=["-O2"], lang="c++", subdir="whl/mltwheel")
    out = tmp_path_factory.mktemp("wheels") / "mltwheel-0.1-cp311-cp311-linux_x86_64.whl"
    files = {f"mltwheel/{ext.name}": ext.read_bytes(), "mltwheel/libshout.so": cxx.read_bytes(),
             "mltwheel.libs/libhelper-1a2b3c4d.so": helper.read_bytes(), "mltwheel/__init__.py": b"",
             "mltwheel-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: mltwheel\nVersion: 0.1\n\n",
             "mltwheel-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n"
                                             b"Tag: cp311-cp311-linux_x86_64\n"}
    record = "".join(f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
                     f"{len(data)}\n" for name, data in files.items()) + "mltwheel-0.1.dist-info/RECORD,,\n"
    with zipfile.ZipFile(out, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("mltwheel-0.1.dist-info/RECORD", record)
    return out


def _auditwheel(wheel) -> dict:
    proc = subprocess.run([AUDITWHEEL, "show", "--json", str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _compare_with_auditwheel(cli, wheel):
    res = cli("doctor", "--wheel", str(wheel), "--json", "--no-isa", "--fail-on", "none")
    assert res.exit_code == 0, res.stderr
    ours = res.json()["wheels"][0]
    aw = _auditwheel(wheel)
    shipped = set(ours["shipped"])
    # auditwheel also lists needs on libraries inside the wheel and drops the dynamic loader
    theirs = {lib: sorted(v) for lib, v in aw["versioned_symbols"].items() if lib not in shipped}
    assert {lib: sorted(v) for lib, v in ours["needs"].items()} == theirs
    assert (ours["manylinux"] + "_x86_64" if ours["manylinux"] else None) == aw["sym_tag"]
    return ours, aw


@needs_auditwheel
def test_fixture_wheel_against_auditwheel(cli, fixture_wheel):
    ours, aw = _compare_with_auditwheel(cli, fixture_wheel)
    assert ours["newest"]["GLIBC"] == "GLIBC_2.34"
    assert "GLIBCXX" in ours["newest"] and ours["name"] == "mltwheel"
    assert "libhelper-1a2b3c4d.so" in ours["shipped"] and "libhelper-1a2b3c4d.so" not in ours["external"]


def test_wheel_targets(cli, fixture_wheel):
    res = cli("doctor", "--wheel", str(fixture_wheel), "--target", "manylinux_2_28,debian-11,ubuntu-22.04",
              "--json", "--no-isa")
    assert res.exit_code == 1
    w = res.json()["wheels"][0]
    failing = {f["details"]["target"]: f for f in w["findings"] if f["code"] == "TARGET_VERSION_MISSING"}
    assert set(failing) == {"manylinux_2_28", "debian-11"}
    need = failing["debian-11"]["details"]["needs"][0]
    assert need["version"] == "GLIBC_2.34" and "closefrom" in need["symbols"] and need["target_has"] == "glibc 2.31"
    assert "mltwheel/_ext" in failing["debian-11"]["details"]["path"]
    text = cli("doctor", "--wheel", str(fixture_wheel), "--target", "debian-11", "--no-isa")
    assert "needs GLIBC_2.34 (from libc.so.6, for closefrom)" in text.stdout and "debian-11 has glibc 2.31" in text.stdout


def test_wheel_default_target_is_this_machine(cli, fixture_wheel):
    res = cli("doctor", "--wheel", str(fixture_wheel), "--json")
    assert res.exit_code == 0, res.stdout
    w = res.json()["wheels"][0]
    assert w["targets"][0]["kind"] == "this-machine" and w["isa"]["scanned"] == 3


def test_wheel_batch_and_bad_input(cli, fixture_wheel, tmp_path):
    junk = tmp_path / "junk.whl"
    junk.write_text("not a zip")
    res = cli("doctor", "--wheel", str(fixture_wheel), "--wheel", str(junk), "--json", "--no-isa")
    assert res.exit_code == 1
    doc = res.json()
    assert len(doc["wheels"]) == 1 and doc["errors"][0]["path"] == str(junk)
    only_bad = cli("doctor", "--wheel", str(junk))
    assert only_bad.exit_code == 2 and only_bad.stderr.startswith("Error:")
    clash = cli("doctor", "--wheel", str(fixture_wheel), "--python", sys.executable)
    assert clash.exit_code == 2 and "--wheel checks a wheel" in clash.stderr


@pytest.fixture(scope="session")
def pypi_wheels(request):
    """Small real wheels from PyPI, kept in pytest's cache between runs."""
    pytest_cache = getattr(request.config, "cache", None)     # None under -p no:cacheprovider
    cache = (Path(pytest_cache.mkdir("pypi-wheels")) if pytest_cache is not None
             else Path.home() / ".cache" / "mltools-tests" / "pypi-wheels")
    cache.mkdir(parents=True, exist_ok=True)
    wanted = ["psutil==7.2.2", "orjson==3.11.5", "cryptography==46.0.3"]
    have = list(cache.glob("*.whl"))
    if len(have) < len(wanted):
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                               "-d", str(cache), *wanted], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.skip(f"could not download wheels from PyPI: {proc.stderr.strip()[-300:]}")
        have = list(cache.glob("*.whl"))
    return sorted(have)


@needs_auditwheel
def test_real_wheels_against_auditwheel(cli, pypi_wheels):
    assert pypi_wheels
    for wheel in pypi_wheels:
        _compare_with_auditwheel(cli, wheel)


def test_target_data_row_matches_this_debian_system():
    """The debian-12 row (read from Debian's packages) against the libraries of this system."""
    from mltools.doctor.targets import target, this_machine
    from mltools.doctor.wheel import _system_libs

    osrel = Path("/etc/os-release").read_text() if Path("/etc/os-release").exists() else ""
    if 'VERSION_ID="12"' not in osrel or "debian" not in osrel.lower():
        pytest.skip("not a Debian 12 system")
    here = this_machine(_system_libs())
    row = target("debian-12")
    assert {k: here.maxima.get(k) for k in ("GLIBC", "GLIBCXX", "CXXABI", "GCC")} == dict(row.maxima)


def test_target_rules():
    from mltools.doctor.targets import VersionedNeed, best_manylinux, judge, target

    def need(lib, v):
        return VersionedNeed("x.so", lib, v, ())
    assert judge(need("libc.so.6", "GLIBC_2.31"), target("debian-11")) is None
    assert judge(need("libc.so.6", "GLIBC_2.32"), target("debian-11")) == "glibc 2.31"
    assert judge(need("libstdc++.so.6", "GLIBCXX_3.4.29"), target("ubuntu-20.04")) == "GLIBCXX 3.4.28"
    assert judge(need("libgcc_s.so.1", "GCC_12.0.0"), target("rhel-9")) == "GCC 7.0.0"
    assert judge(need("libc.so.6", "GLIBC_ABI_DT_RELR"), target("debian-11")) is not None
    assert judge(need("libc.so.6", "GLIBC_ABI_DT_RELR"), target("debian-12")) is None
    assert judge(need("libfoo.so.1", "FOO_9"), target("debian-11")) is None       # not the target's library
    # manylinux is a set test: psutil's GLIBC_2.7 fails 2_5 although 2.7 > 2.5 only by one step
    assert judge(need("libc.so.6", "GLIBC_2.7"), target("manylinux_2_5")) is not None
    assert target("manylinux2014").name == "manylinux_2_17"
    assert best_manylinux([need("libc.so.6", "GLIBC_2.7")]) == "manylinux_2_12"
    assert best_manylinux([need("libc.so.6", "GLIBC_2.7")], external=["libcrypto.so.3"]) is None
    with pytest.raises(ValueError):
        target("windows-11")


def test_environment_target(cli, fixture_wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(fixture_wheel) as z:
        z.extractall(site)
    res = cli("doctor", "--path", str(site), "--target", "debian-11", "--target", "debian-12", "--json", "--no-isa",
              "--fail-on", "TARGET_VERSION_MISSING")
    doc = res.json()
    mine = [f for f in doc["findings"] if f["code"] == "TARGET_VERSION_MISSING" and str(site) in f["details"]["path"]]
    assert [f["details"]["target"] for f in mine] == ["debian-11"] and res.exit_code == 1
    assert [t["name"] for t in doc["targets"]] == ["debian-11", "debian-12"]
    # what readelf says the file needs is what the finding names
    ext = mine[0]["details"]["path"]
    readelf = subprocess.run(["readelf", "-V", ext], capture_output=True, text=True).stdout
    assert "GLIBC_2.34" in readelf and mine[0]["details"]["needs"][0]["version"] == "GLIBC_2.34"
    bad = cli("doctor", "--target", "solaris-2")
    assert bad.exit_code == 2 and bad.stderr.startswith("Error: --target: unknown target")


def _report(cli, tmp_path, name, env, extra_lib=None):
    d = tmp_path / name
    d.mkdir()
    if extra_lib:
        shutil.copy(extra_lib, d / "libextra.so")
    res = cli("doctor", "--path", str(d), "--json", "--fail-on", "none", env=env)
    assert res.exit_code == 0, res.stderr
    out = tmp_path / f"{name}.json"
    out.write_text(res.stdout)
    return out


def test_diff_two_reports(cli, cbuild, tmp_path):
    lib = cbuild.build("libextra.so", "int extra(void){return 1;}", shared=True)
    a = _report(cli, tmp_path, "a", {"OMP_NUM_THREADS": "4"})
    b = _report(cli, tmp_path, "b", {"OMP_NUM_THREADS": "8"}, extra_lib=lib)
    res = cli("doctor", "diff", str(a), str(b), "--json")
    assert res.exit_code == 1, res.stderr
    doc = res.json()
    assert doc["schema"] == "mltools.doctor.diff" and doc["differs"]
    got = {(i["category"], i["key"]): (i["a"], i["b"]) for i in doc["items"]}
    assert got[("environment", "OMP_NUM_THREADS")] == ("4", "8")
    # the same report twice: nothing differs, exit 0
    same = cli("doctor", "diff", str(a), str(a))
    assert same.exit_code == 0 and "Nothing that matters differs" in same.stdout
    text = cli("doctor", "diff", str(a), str(b))
    assert "OMP_NUM_THREADS" in text.stdout and text.exit_code == 1


def test_diff_ranks_cpu_library_package(tmp_path):
    from mltools.doctor.diff import diff_documents

    base = {"schema": "mltools.doctor", "python": {"prefix": "/venvA", "site_dirs": ["/venvA/lib/site-packages"],
                                                    "implementation": "CPython", "version": "3.11.7"},
            "runtimes": [], "findings": [],
            "isa": {"files": [{"path": "/venvA/lib/site-packages/numpy/x.so", "needs_level": 2,
                               "unguarded": ["SSE4_1"], "dispatched": ["AVX512F"]}]},
            "facts": {"hostname": "a", "isa_level": 4, "cpu_features": ["AVX2", "AVX512F", "SSE4_1"],
                      "packages": {"numpy": "2.4.6"}, "environment": {},
                      "libraries": [{"soname": "libgomp.so.1", "path": "/venvA/lib/site-packages/torch/lib/libgomp.so.1",
                                     "package": "torch 2.13.0", "size": 10}]}}
    other = json.loads(json.dumps(base).replace("/venvA", "/scratch/venvB"))
    other["facts"].update(hostname="b", isa_level=3, cpu_features=["AVX2", "SSE4_1"])
    d = diff_documents(base, other)
    assert d.differs and [i.category for i in d.items] == ["cpu", "cpu"]     # paths under the env prefix are equal
    assert d.items[0].a == ["AVX512F"] or d.items[1].a == ["AVX512F"]
    other["facts"]["packages"]["numpy"] = "2.3.0"
    other["facts"]["libraries"][0]["path"] = "/usr/lib/x86_64-linux-gnu/libgomp.so.1"
    cats = [i.category for i in diff_documents(base, other).items]
    assert cats == ["cpu", "cpu", "library", "package"]


def test_diff_bad_input(cli, tmp_path):
    notjson = tmp_path / "x.json"
    notjson.write_text("{")
    other = tmp_path / "env.json"
    other.write_text(json.dumps({"schema": "mltools.env", "version": 1}))
    for a, b in ((notjson, other), (other, other), (tmp_path / "missing.json", other)):
        res = cli("doctor", "diff", str(a), str(b))
        assert res.exit_code == 2 and res.stderr.startswith("Error:"), res.stderr
    res = cli("doctor", "--cpu", "haswell", "diff", str(other), str(other))
    assert res.exit_code == 2 and "--cpu belongs to `mltools doctor` itself" in res.stderr
