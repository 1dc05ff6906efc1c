"""``mltools.elf.check``: static version and symbol checks against the real loader.

Oracle: running each gcc-built fixture and reading ld.so's own error message.
The objects are given in the loader's order here (the resolver's job is tested
with ``elf tree``); the CLI tests below run the whole path.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from mltools.elf.check import ScopeObject, _abi_normal, _innermost_identifier, check_objects
from mltools.elf.runtimes import duplicate_family
from test_elf_trace import build_elf_fixtures

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
LDSO = "/lib64/ld-linux-x86-64.so.2"
GXX = shutil.which("g++")


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    if not os.path.exists(LIBC):
        pytest.skip("needs a Debian-style x86-64 glibc")
    return build_elf_fixtures(tmp_path_factory.mktemp("elfcheck"))


@pytest.fixture(scope="module")
def abi_fx(tmp_path_factory):
    """``user`` was built with the old std::string ABI against a stub; the
    library its RUNPATH finds was built with the C++11 ABI."""
    if GXX is None:
        pytest.skip("needs g++")
    root = tmp_path_factory.mktemp("abi")
    (root / "old").mkdir()
    (root / "new").mkdir()
    (root / "lib.cc").write_text("#include <string>\nvoid greet(const std::string& s) { (void)s; }\n")
    (root / "user.cc").write_text("#include <string>\nvoid greet(const std::string& s);\n"
                                  "int main() { greet(\"hi\"); return 0; }\n")
    r = str(root)
    for argv in (
        ["-shared", "-fPIC", "-D_GLIBCXX_USE_CXX11_ABI=1", "-o", f"{r}/new/libgreet.so", f"{r}/lib.cc"],
        ["-shared", "-fPIC", "-D_GLIBCXX_USE_CXX11_ABI=0", "-o", f"{r}/old/libgreet.so", f"{r}/lib.cc"],
        ["-D_GLIBCXX_USE_CXX11_ABI=0", "-o", f"{r}/user", f"{r}/user.cc", f"-L{r}/old", "-lgreet",
         "-Wl,-rpath,$ORIGIN/new"],
    ):
        subprocess.run([GXX, *argv], check=True, capture_output=True, timeout=120)
    return root


def _run(path) -> subprocess.CompletedProcess:
    return subprocess.run([f"./{path.name}"], cwd=path.parent, capture_output=True, text=True, timeout=60)


def _libc_pair():
    return [ScopeObject(LIBC, (("ld-linux-x86-64.so.2", LDSO),)), ScopeObject(LDSO)]


def test_version_missing_wording_matches_ld_so(fx):
    real = _run(fx["m2"])
    v1 = str(fx["m2"].parent / "v1" / "libver.so.1")
    objs = [ScopeObject(str(fx["m2"]), (("libver.so.1", v1), ("libc.so.6", LIBC))), ScopeObject(v1)] + _libc_pair()
    findings, stats = check_objects(objs)
    (f,) = [f for f in findings if f.code == "VERSION_MISSING"]
    # ld.so: "./m2: /…/v1/libver.so.1: version `FOO_2' not found (required by ./m2)"
    expected = f"{v1}: version `FOO_2' not found (required by {fx['m2']})"
    assert expected.replace(str(fx["m2"]), "./m2") in real.stderr
    assert f.message == expected + "; used by foo2"
    assert f.details["symbols"] == ["foo2"] and f.details["available"] == ["FOO_1"]
    # foo2@FOO_2 is not reported a second time as undefined
    assert [f.code for f in findings] == ["VERSION_MISSING"]
    assert stats.versions_checked >= 2


def test_version_present_is_clean(fx):
    v2 = str(fx["m2"].parent / "v2" / "libver.so.1")
    objs = [ScopeObject(str(fx["m2"]), (("libver.so.1", v2), ("libc.so.6", LIBC))), ScopeObject(v2)] + _libc_pair()
    findings, _ = check_objects(objs)
    assert findings == []
    # and the loader agrees: with v2 first on the path, m2 runs
    env = dict(os.environ, LD_LIBRARY_PATH=str(fx["m2"].parent / "v2"))
    assert subprocess.run([str(fx["m2"])], env=env, timeout=60).returncode == 0


def test_undefined_symbol_matches_ld_so(fx):
    real = _run(fx["m3"])
    u1 = str(fx["m3"].parent / "u1" / "libu.so")
    assert f"{u1}: undefined symbol: baz" in real.stderr
    objs = [ScopeObject(str(fx["m3"]), (("libu.so", u1), ("libc.so.6", LIBC))),
            ScopeObject(u1, (("libc.so.6", LIBC),))] + _libc_pair()
    findings, _ = check_objects(objs)
    (f,) = findings
    assert f.code == "UNDEFINED" and f.message == f"{u1}: undefined symbol: baz"
    # the same library with baz defined (u2) is clean, and runs
    u2 = str(fx["m3"].parent / "u2" / "libu.so")
    objs = [ScopeObject(str(fx["m3"]), (("libu.so", u2), ("libc.so.6", LIBC))),
            ScopeObject(u2, (("libc.so.6", LIBC),))] + _libc_pair()
    assert check_objects(objs)[0] == []
    env = dict(os.environ, LD_LIBRARY_PATH=str(fx["m3"].parent / "u2"))
    assert subprocess.run([str(fx["m3"])], env=env, timeout=60).returncode == 0


def test_symbol_outside_the_scope_is_fragile_order(fx):
    u1 = str(fx["m3"].parent / "u1" / "libu.so")
    u2 = str(fx["m3"].parent / "u2" / "libu.so")
    objs = [ScopeObject(u2, context=True, in_scope=False),        # loaded earlier, RTLD_LOCAL
            ScopeObject(str(fx["m3"]), (("libu.so", u1), ("libc.so.6", LIBC))),
            ScopeObject(u1, (("libc.so.6", LIBC),))] + _libc_pair()
    findings, _ = check_objects(objs)
    (f,) = findings
    assert f.code == "FRAGILE_ORDER" and f.details["provider"] == u2


def test_abi_mismatch_matches_ld_so(abi_fx):
    real = _run(abi_fx / "user")
    assert "undefined symbol: _Z5greetRKSs" in real.stderr
    new = str(abi_fx / "new" / "libgreet.so")
    stdcxx = "/lib/x86_64-linux-gnu/libstdc++.so.6"
    if not os.path.exists(stdcxx):
        pytest.skip("no libstdc++ at the Debian path")
    objs = [ScopeObject(str(abi_fx / "user"), (("libgreet.so", new), ("libstdc++.so.6", stdcxx),
                                              ("libc.so.6", LIBC))),
            ScopeObject(new), ScopeObject(stdcxx),
            ScopeObject("/lib/x86_64-linux-gnu/libm.so.6"), ScopeObject("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
            ] + _libc_pair()
    findings, _ = check_objects(objs)
    codes = [f.code for f in findings]
    assert codes == ["ABI_MISMATCH"], findings
    f = findings[0]
    assert "greet(std::string const&)" in f.message or "greet(std::basic_string" in f.message
    twin = f.details["defined_as"]["_Z5greetRKSs"]
    assert twin["symbol"] == "_Z5greetRKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE"
    assert twin["in"] == new


def test_abi_normalisation():
    assert _abi_normal("f(std::__cxx11::basic_string<char>)") == "f(std::basic_string<char>)"
    assert _abi_normal("c10::Error::msg[abi:cxx11]() const") == "c10::Error::msg() const"
    assert _innermost_identifier("c10::detail::torchCheckFail(char const*, unsigned int)") == "torchCheckFail"
    assert _innermost_identifier("std::vector<int>::push_back(int const&)") == "push_back"
    assert _innermost_identifier("c10::Error::msg[abi:cxx11]() const") == "msg"


def test_runtime_families():
    assert duplicate_family("/x/libgomp-a34b3233.so.1") == "openmp"
    assert duplicate_family("/usr/lib/libgomp.so.1") == "openmp"
    assert duplicate_family("/x/libgompx.so") is None
    from mltools.elf.check import _dup_runtimes

    objs = [ScopeObject("/a/libgomp-a34b3233.so.1", context=True), ScopeObject("/usr/lib/libgomp.so.1")]
    (f,) = _dup_runtimes(objs)
    assert f.code == "DUP_RUNTIME" and f.details["runtime"] == "openmp"
    # two different OpenMP runtimes are the classic crash (OMP Error #15 or worse)
    objs = [ScopeObject("/a/libiomp5.so"), ScopeObject("/usr/lib/libgomp.so.1")]
    (f,) = _dup_runtimes(objs)
    assert f.details["runtime"] == "openmp" and len(f.details["paths"]) == 2


# ---------------------------------------------------------------------------
# The command: resolver + checks, compared with running the fixtures

def test_cli_matches_the_loader_on_fixtures(cli, fx, monkeypatch):
    monkeypatch.chdir(fx["m2"].parent)
    res = cli("elf", "check", "--json", "./m2", "./m3", "./m4", "./mi")
    assert res.exit_code == 1, res.stderr
    doc = res.json()
    assert doc["schema"] == "mltools.elf.check" and doc["version"] == 1
    by_file = {fc["file"]: fc for fc in doc["files"]}
    for name, code, loader_says in (
            ("./m2", "VERSION_MISSING", "version `FOO_2' not found (required by ./m2)"),
            ("./m3", "UNDEFINED", "undefined symbol: baz"),
            ("./m4", "MISSING", "libu.so: cannot open shared object file")):
        real = _run(fx[name[2:]])
        assert real.returncode != 0 and loader_says in real.stderr
        codes = [f["code"] for f in by_file[name]["findings"] if f["severity"] == "error"]
        assert codes == [code], (name, by_file[name]["findings"])
    # mi runs, and check finds nothing wrong
    assert _run(fx["mi"]).returncode == 0
    assert [f for f in by_file["./mi"]["findings"] if f["severity"] != "info"] == []
    text = cli("elf", "check", "./m2").stdout
    assert "version `FOO_2' not found (required by ./m2)" in text


def test_cli_fail_on(cli, fx, monkeypatch):
    monkeypatch.chdir(fx["m2"].parent)
    assert cli("elf", "check", "./mi").exit_code == 0
    assert cli("elf", "check", "--fail-on", "UNDEFINED", "./m2").exit_code == 0     # VERSION_MISSING only
    assert cli("elf", "check", "--fail-on", "VERSION_MISSING", "./m2").exit_code == 1
    assert cli("elf", "check", "--fail-on", "none", "./m2").exit_code == 0
    res = cli("elf", "check", "--fail-on", "bogus!", "./m2")
    assert res.exit_code == 2 and "--fail-on" in res.stderr


def test_cli_bad_input_exits_2(cli, tmp_path):
    f = tmp_path / "notelf.so"
    f.write_text("version https://git-lfs.github.com/spec/v1\n")
    res = cli("elf", "check", str(f))
    assert res.exit_code == 2 and res.stdout == "" and res.stderr.startswith("Error:")
    assert len(res.stderr.strip().splitlines()) == 1
    assert cli("elf", "check", str(tmp_path / "nope")).exit_code == 2


def _ext_suffix() -> str:
    import sysconfig

    return sysconfig.get_config_var("EXT_SUFFIX") or ".so"


@pytest.fixture(scope="module")
def pyext(tmp_path_factory, fx):
    """``needs_baz`` needs libbaz.so by SONAME with no RPATH; the package
    ``preload_baz`` loads that library (ctypes, by path) when imported."""
    import sysconfig

    inc = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(inc, "Python.h")):
        pytest.skip("no Python.h")
    root = tmp_path_factory.mktemp("pyext")
    (root / "lib").mkdir()
    (root / "baz.c").write_text("int baz(void){return 42;}\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(root / "lib" / "libbaz.so"), str(root / "baz.c"),
                    "-Wl,-soname,libbaz.so"], check=True, timeout=120)
    src = ('#include <Python.h>\nint baz(void);\n'
           'static PyObject* f(PyObject* s, PyObject* a){return PyLong_FromLong(baz());}\n'
           'static PyMethodDef M[] = {{"f", f, METH_NOARGS, ""}, {0}};\n'
           'static struct PyModuleDef D = {PyModuleDef_HEAD_INIT, "%s", 0, -1, M};\n'
           'PyMODINIT_FUNC PyInit_%s(void){return PyModule_Create(&D);}\n')
    (root / "needs_baz.c").write_text(src % ("needs_baz", "needs_baz"))
    (root / "undef_ext.c").write_text(src % ("undef_ext", "undef_ext"))
    suffix = _ext_suffix()
    subprocess.run(["gcc", "-shared", "-fPIC", f"-I{inc}", "-o", str(root / f"needs_baz{suffix}"),
                    str(root / "needs_baz.c"), f"-L{root / 'lib'}", "-lbaz"], check=True, timeout=120)
    # undefined baz, no DT_NEEDED for it at all
    subprocess.run(["gcc", "-shared", "-fPIC", f"-I{inc}", "-o", str(root / f"undef_ext{suffix}"),
                    str(root / "undef_ext.c")], check=True, timeout=120)
    (root / "preload_baz.py").write_text(
        "import ctypes, os\n"
        "ctypes.CDLL(os.path.join(os.path.dirname(__file__), 'lib', 'libbaz.so'))\n")
    return root


def _py(root, code):
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    env["PYTHONPATH"] = str(root)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120, cwd=str(root))


def test_extension_undefined_symbol_in_python_context(cli, pyext):
    ext = pyext / f"undef_ext{_ext_suffix()}"
    real = _py(pyext, "import undef_ext")
    assert real.returncode != 0 and "undefined symbol: baz" in real.stderr
    res = cli("elf", "check", "--json", str(ext))      # an extension: python context automatically
    assert res.exit_code == 1
    (fc,) = res.json()["files"]
    assert fc["python"]
    errors = [f for f in fc["findings"] if f["severity"] == "error"]
    assert [f["code"] for f in errors] == ["UNDEFINED"]
    # only baz: every Py* symbol is found in the interpreter
    assert [s["name"] for s in errors[0]["details"]["symbols"]] == ["baz"]


def test_after_module_supplies_a_loaded_library(cli, pyext, monkeypatch):
    ext = pyext / f"needs_baz{_ext_suffix()}"
    alone = _py(pyext, "import needs_baz")
    assert alone.returncode != 0 and "libbaz.so: cannot open shared object file" in alone.stderr
    after = _py(pyext, "import preload_baz, needs_baz; assert needs_baz.f() == 42")
    assert after.returncode == 0, after.stderr
    res = cli("elf", "check", "--json", "--as-python", str(ext))
    assert res.exit_code == 1
    assert "MISSING" in [f["code"] for f in res.json()["findings"]]
    monkeypatch.setenv("PYTHONPATH", str(pyext))
    res = cli("elf", "check", "--json", "--after", "preload_baz", str(ext))
    assert res.exit_code == 0, res.json()["findings"]
    (fc,) = res.json()["files"]
    assert fc["after"] == ["preload_baz"] and fc["loaded_before"] >= 1
    baz = [o for o in fc["objects"] if o["path"].endswith("/lib/libbaz.so")]
    assert baz and baz[0]["context"]


def test_after_a_module_that_fails_to_import_is_exit_2(cli, pyext):
    ext = pyext / f"needs_baz{_ext_suffix()}"
    res = cli("elf", "check", "--after", "no_such_module_xyz", str(ext))
    assert res.exit_code == 2 and "could not import no_such_module_xyz" in res.stderr


def test_default_and_hidden_versions_follow_the_loader(cli, tmp_path, monkeypatch):
    """An unversioned reference binds to the oldest version (even a hidden
    ``foo@FOO_1``); one whose only definition is a later hidden version
    (``bar@FOO_2``) is undefined. The programs were linked against an
    unversioned copy and run against the versioned one."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    (tmp_path / "plain").mkdir()
    (tmp_path / "ver").mkdir()
    (tmp_path / "ver.map").write_text("FOO_1 { global: foo; local: *; };\nFOO_2 { global: foo; bar; } FOO_1;\n")
    (tmp_path / "ver.c").write_text(
        "int foo_old(void) { return 1; }\nint foo_new(void) { return 2; }\nint bar_hidden(void) { return 3; }\n"
        '__asm__(".symver foo_old, foo@FOO_1");\n__asm__(".symver foo_new, foo@@FOO_2");\n'
        '__asm__(".symver bar_hidden, bar@FOO_2");\n')
    (tmp_path / "plain.c").write_text("int foo(void){return 0;} int bar(void){return 0;}\n")
    (tmp_path / "usefoo.c").write_text("int foo(void); int main(void){return foo();}\n")
    (tmp_path / "usebar.c").write_text("int bar(void); int main(void){return bar();}\n")
    t = str(tmp_path)
    for argv in (["-shared", "-fPIC", "-o", f"{t}/plain/libsv.so", f"{t}/plain.c", "-Wl,-soname,libsv.so"],
                 ["-shared", "-fPIC", "-o", f"{t}/ver/libsv.so", f"{t}/ver.c", "-Wl,-soname,libsv.so",
                  f"-Wl,--version-script,{t}/ver.map"],
                 ["-o", f"{t}/usefoo", f"{t}/usefoo.c", f"-L{t}/plain", "-lsv", "-Wl,-rpath,$ORIGIN/ver"],
                 ["-o", f"{t}/usebar", f"{t}/usebar.c", f"-L{t}/plain", "-lsv", "-Wl,-rpath,$ORIGIN/ver",
                  "-Wl,-z,now"]):
        subprocess.run(["gcc", *argv], check=True, capture_output=True, timeout=120)
    assert _run(tmp_path / "usefoo").returncode == 1               # foo@FOO_1 answered
    real = _run(tmp_path / "usebar")
    assert real.returncode == 127 and "undefined symbol: bar" in real.stderr
    monkeypatch.chdir(tmp_path)
    doc = cli("elf", "check", "--json", "./usefoo", "./usebar").json()
    by_file = {fc["file"]: [f["code"] for f in fc["findings"] if f["severity"] == "error"] for fc in doc["files"]}
    assert by_file == {"./usefoo": [], "./usebar": ["UNDEFINED"]}


def test_fatal_candidate_from_the_resolver(cli, fx, tmp_path, monkeypatch):
    """A Git LFS pointer named like the library, first on the RUNPATH: ld.so stops there."""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "libu.so").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    shutil.copy(fx["m3"].parent / "u2" / "libu.so", tmp_path / "libu.so")
    (tmp_path / "m.c").write_text("int bar(void); int main(void){return bar();}\n")
    subprocess.run(["gcc", "-o", str(tmp_path / "m"), str(tmp_path / "m.c"), f"-L{tmp_path}", "-lu",
                    "-Wl,-rpath,$ORIGIN/bad:$ORIGIN"], check=True, capture_output=True, timeout=120)
    real = _run(tmp_path / "m")
    assert real.returncode == 127 and "bad/libu.so" in real.stderr
    monkeypatch.chdir(tmp_path)
    res = cli("elf", "check", "--json", "./m")
    assert res.exit_code == 1
    assert "FATAL_CANDIDATE" in [f["code"] for f in res.json()["findings"]]


def test_glibcxx_version_missing_with_an_older_libstdcxx(cli, tmp_path, monkeypatch):
    """A copy of the system libstdc++ with GLIBCXX_3.4.30 renamed stands in for an
    older one; a program that uses condition_variable::wait needs 3.4.30."""
    stdcxx = "/lib/x86_64-linux-gnu/libstdc++.so.6"
    if GXX is None or not os.path.exists(stdcxx):
        pytest.skip("needs g++ and the Debian libstdc++")
    data = open(stdcxx, "rb").read()
    if data.count(b"GLIBCXX_3.4.30\x00") != 1:
        pytest.skip("this libstdc++ does not define exactly one GLIBCXX_3.4.30")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "libstdc++.so.6").write_bytes(data.replace(b"GLIBCXX_3.4.30\x00", b"GLIBCXX_0.0.30\x00"))
    (tmp_path / "cv.cc").write_text(
        "#include <condition_variable>\n#include <mutex>\nstd::mutex m; std::condition_variable cv; bool ready = true;\n"
        "int main() { std::unique_lock<std::mutex> lk(m); cv.wait(lk, []{ return ready; }); return 0; }\n")
    subprocess.run([GXX, "-o", str(tmp_path / "cv"), str(tmp_path / "cv.cc"), "-Wl,-rpath,$ORIGIN/old"],
                   check=True, capture_output=True, timeout=120)
    real = _run(tmp_path / "cv")
    if "GLIBCXX_3.4.30" not in real.stderr:
        pytest.skip("this compiler's condition_variable::wait does not need GLIBCXX_3.4.30")
    monkeypatch.chdir(tmp_path)
    res = cli("elf", "check", "--json", "./cv")
    assert res.exit_code == 1
    (f,) = [f for f in res.json()["findings"] if f["severity"] == "error"]
    head = f"{tmp_path}/old/libstdc++.so.6: version `GLIBCXX_3.4.30' not found (required by ./cv)"
    assert head in real.stderr and f["message"].startswith(head)
    assert f["details"]["symbols"] == ["_ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE"]


def test_one_bad_file_among_many_is_a_finding(cli, fx, tmp_path, monkeypatch):
    script = tmp_path / "libfoo.so"
    script.write_text("/* GNU ld script */\nINPUT(libfoo.so.1)\n")
    junk = tmp_path / "libjunk.so"
    junk.write_bytes(b"\x00\x01 not an object")
    monkeypatch.chdir(fx["mi"].parent)
    res = cli("elf", "check", "--json", "./mi", str(script))
    assert res.exit_code == 0                       # a linker script is for ld, not ld.so
    assert [(f["code"], f["severity"]) for f in res.json()["findings"]
            if f["code"] == "UNREADABLE"] == [("UNREADABLE", "info")]
    res = cli("elf", "check", "--json", "./mi", str(junk))
    assert res.exit_code == 1
    assert [f["severity"] for f in res.json()["findings"] if f["code"] == "UNREADABLE"] == ["error"]
