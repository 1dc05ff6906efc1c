"""The static pass on ``--path`` dirs of gcc-built extension modules, each broken
in one way. Oracle: the real interpreter importing the module fails with the
loader's own message, and doctor must name the same library, version or symbol."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from mltools.doctor import diagnose
from mltools.findings import Severity

PY_INCLUDE = sysconfig.get_paths()["include"]


def compile_(compiler: str, *args: str) -> None:
    proc = subprocess.run([compiler, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def module_source(name: str, body: str = "", decls: str = "") -> str:
    return (f"#include <Python.h>\n{decls}\n"
            f"static struct PyModuleDef def_ = {{PyModuleDef_HEAD_INIT, \"{name}\", NULL, -1, NULL}};\n"
            f"PyMODINIT_FUNC PyInit_{name}(void) {{ {body} return PyModule_Create(&def_); }}\n")


def import_error(directory: Path, module: str) -> str:
    code = f"import sys; sys.path.insert(0, {str(directory)!r})\nimport {module}"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return "" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]


def by_code(report, code):
    return [f for f in report.findings if f.code == code]


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    """One dir on --path with four broken modules and one healthy one."""
    d = tmp_path_factory.mktemp("broken")
    src = d.parent / (d.name + "-src")
    src.mkdir()
    # 1. a missing library: built against libgone.so, which is then removed
    (src / "gone.c").write_text("int mlt_gone(void) { return 1; }\n")
    compile_("gcc", "-shared", "-fPIC", "-o", str(src / "libgone.so"), str(src / "gone.c"))
    (src / "needgone.c").write_text(module_source("needgone", "mlt_gone();", "int mlt_gone(void);"))
    compile_("gcc", "-shared", "-fPIC", "-I", PY_INCLUDE, "-o", str(d / "needgone.so"), str(src / "needgone.c"),
             "-L", str(src), "-lgone")
    # 2. a version the system glibc lacks: linked against a stub libc.so.6 whose
    #    version script defines GLIBC_2.99
    (src / "stub").mkdir()
    (src / "stub.c").write_text("void mlt_future_fn(void) {}\n")
    (src / "v.map").write_text("GLIBC_2.99 { global: mlt_future_fn; };\n")
    compile_("gcc", "-shared", "-fPIC", "-nostdlib", "-o", str(src / "stub" / "libc.so.6"), str(src / "stub.c"),
             f"-Wl,--version-script={src / 'v.map'}", "-Wl,-soname,libc.so.6")
    (src / "newglibc.c").write_text(module_source("newglibc", "mlt_future_fn();", "void mlt_future_fn(void);"))
    compile_("gcc", "-shared", "-fPIC", "-I", PY_INCLUDE, "-o", str(d / "newglibc.so"), str(src / "newglibc.c"),
             str(src / "stub" / "libc.so.6"))
    # 3. an undefined C++ symbol (declared, never defined anywhere)
    cxx = ("#include <string>\nnamespace mlt { int lookup(const std::string &key); }\n"
           "extern \"C\" int mlt_call(void) { return mlt::lookup(\"x\"); }\n")
    (src / "undef.cc").write_text(cxx)
    (src / "undefcxx.c").write_text(module_source("undefcxx", "mlt_call();", "int mlt_call(void);"))
    compile_("g++", "-c", "-fPIC", "-o", str(src / "undef.o"), str(src / "undef.cc"))
    compile_("gcc", "-c", "-fPIC", "-I", PY_INCLUDE, "-o", str(src / "undefcxx.o"), str(src / "undefcxx.c"))
    compile_("g++", "-shared", "-o", str(d / "undefcxx.so"), str(src / "undefcxx.o"), str(src / "undef.o"))
    # 4. the same symbol provided with the old std::string ABI: a CXX11-ABI mismatch
    (src / "prov.cc").write_text("#include <string>\nnamespace mlt { int lookup(const std::string &k) "
                                 "{ return (int)k.size(); } }\n")
    (d / "abi.libs").mkdir()
    compile_("g++", "-shared", "-fPIC", "-D_GLIBCXX_USE_CXX11_ABI=0", "-o", str(d / "abi.libs" / "libmltprov.so"),
             str(src / "prov.cc"))
    (src / "abimod.c").write_text(module_source("abimod", "mlt_call();", "int mlt_call(void);"))
    compile_("gcc", "-c", "-fPIC", "-I", PY_INCLUDE, "-o", str(src / "abimod.o"), str(src / "abimod.c"))
    compile_("g++", "-shared", "-o", str(d / "abimod.so"), str(src / "abimod.o"), str(src / "undef.o"),
             "-L", str(d / "abi.libs"), "-Wl,--no-as-needed", "-lmltprov", "-Wl,-rpath,$ORIGIN/abi.libs")
    # 5. healthy: uses the Python C API (resolved from the interpreter) and libm
    (src / "fine.c").write_text(module_source("fine", "PyLong_FromLong((long)sqrt(4.0));", "#include <math.h>"))
    compile_("gcc", "-shared", "-fPIC", "-I", PY_INCLUDE, "-o", str(d / "fine.so"), str(src / "fine.c"), "-lm")
    return d


@pytest.fixture(scope="module")
def report(broken):
    return diagnose(paths=[str(broken)], environment_checks=False, scan_sys_path=False)


def test_oracle_real_imports(broken):
    assert "libgone.so: cannot open shared object file" in import_error(broken, "needgone")
    assert "version `GLIBC_2.99' not found" in import_error(broken, "newglibc")
    assert "undefined symbol: _ZN3mlt6lookup" in import_error(broken, "undefcxx")
    assert "undefined symbol: _ZN3mlt6lookup" in import_error(broken, "abimod")
    assert import_error(broken, "fine") == ""


def test_missing_library(report, broken):
    [f] = [f for f in by_code(report, "MISSING_LIBRARY") if f.details["soname"] == "libgone.so"]
    assert f.severity == Severity.ERROR
    assert f.details["needed_by"] == [str(broken / "needgone.so")]
    assert "libgone.so" in f.fix or "LD_LIBRARY_PATH" in f.fix


def test_version_the_system_glibc_lacks(report, broken):
    [f] = [f for f in by_code(report, "VERSION_MISSING") if f.details["path"].endswith("newglibc.so")]
    assert f.severity == Severity.ERROR and "GLIBC_2.99" in f.message
    assert "mlt_future_fn" in f.details["symbols"]
    assert "manylinux" in f.fix


def test_undefined_cxx_symbol(report, broken):
    [f] = [f for f in by_code(report, "UNDEFINED") if f.details["path"].endswith("undefcxx.so")]
    assert f.severity == Severity.ERROR and "mlt::lookup(std::__cxx11::basic_string" in f.message


def test_cxx11_abi_mismatch(report, broken):
    [f] = [f for f in by_code(report, "ABI_MISMATCH") if f.details["path"].endswith("abimod.so")]
    assert "mlt::lookup" in f.message and "_GLIBCXX_USE_CXX11_ABI" in f.fix


def test_healthy_module_is_clean_in_the_interpreters_context(report, broken):
    # PyLong_FromLong and PyModule_Create2 come from the interpreter: not undefined in its context
    about_fine = [f for f in report.findings if str(f.details.get("path", "")).endswith("fine.so")]
    assert about_fine == []


def test_findings_are_sorted_worst_first_and_fail_on(broken, cli):
    res = cli("doctor", "--path", str(broken), "--json")
    assert res.exit_code == 1
    doc = res.json()
    ranks = {"error": 2, "warning": 1, "info": 0}
    sev = [ranks[f["severity"]] for f in doc["findings"]]
    assert sev == sorted(sev, reverse=True) and doc["failed"] is True
    codes = {f["code"] for f in doc["findings"]}
    assert {"MISSING_LIBRARY", "VERSION_MISSING", "UNDEFINED", "ABI_MISMATCH"} <= codes
    res = cli("doctor", "--path", str(broken))
    assert "Errors" in res.stdout and "MISSING_LIBRARY: libgone.so not found" in res.stdout


def test_dynamic_pass_reports_the_failed_import(broken):
    env = dict(os.environ, PYTHONPATH=str(broken))
    r = diagnose(paths=[str(broken)], imports=["fine", "needgone"], environ=env, environment_checks=False,
                 scan_sys_path=False)
    [f] = by_code(r, "IMPORT_FAILED")
    assert f.details["module"] == "needgone" and "libgone.so" in f.message
    assert any(lib.path.endswith("fine.so") for lib in r.loaded)


def test_glibcxx_not_found_through_an_older_libstdcxx_first_on_the_path(tmp_path):
    """The classic: an older libstdc++.so.6 wins by SONAME (here through LD_LIBRARY_PATH; in a
    conda env through python's RPATH). The stand-in defines only the old version nodes."""
    old = tmp_path / "old"
    old.mkdir()
    (tmp_path / "s.c").write_text("int mlt_old_stdcxx_marker(void) { return 0; }\n")
    (tmp_path / "v.map").write_text("GLIBCXX_3.4 { global: mlt_old_stdcxx_marker; };\n"
                                    "CXXABI_1.3 { global: *; } GLIBCXX_3.4;\n")
    compile_("gcc", "-shared", "-fPIC", "-nostdlib", "-o", str(old / "libstdc++.so.6"), str(tmp_path / "s.c"),
             f"-Wl,--version-script={tmp_path / 'v.map'}", "-Wl,-soname,libstdc++.so.6")
    mods = tmp_path / "mods"
    mods.mkdir()
    (tmp_path / "m.cc").write_text(
        "#include <Python.h>\n#include <string>\n"
        "static std::string make(int n) { return std::string(n, 'x'); }\n"
        "static struct PyModuleDef def_ = {PyModuleDef_HEAD_INIT, \"usesstr\", NULL, -1, NULL};\n"
        "PyMODINIT_FUNC PyInit_usesstr(void) { (void)make(3).size(); return PyModule_Create(&def_); }\n")
    compile_("g++", "-shared", "-fPIC", "-I", PY_INCLUDE, "-o", str(mods / "usesstr.so"), str(tmp_path / "m.cc"))
    env = {"LD_LIBRARY_PATH": str(old)}
    proc = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(mods)!r}); import usesstr"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert "version `GLIBCXX_3.4.21' not found" in proc.stderr      # the oracle
    r = diagnose(paths=[str(mods)], environ=env, environment_checks=False, scan_sys_path=False)
    [f] = [f for f in by_code(r, "VERSION_MISSING") if f.details["path"].endswith("usesstr.so")]
    assert "GLIBCXX_3.4.21" in f.message and f.details["library"] == str(old / "libstdc++.so.6")
    assert "libstdc++" in f.fix
    assert diagnose(paths=[str(mods)], environ={}, environment_checks=False, scan_sys_path=False).findings == ()


def test_extension_that_needs_its_framework_imported_first(tmp_path):
    """As torch's C++ extensions: NEEDED libc10.so without a RUNPATH to torch/lib.
    Alone the import fails; after the framework's import it works."""
    site = tmp_path / "site"
    (site / "fw" / "lib").mkdir(parents=True)
    (site / "myext").mkdir()
    (site / "fw" / "__init__.py").write_text("from fw import _C\n")
    (site / "myext" / "__init__.py").write_text("")
    (tmp_path / "core.c").write_text("int fw_core_version(void) { return 3; }\n")
    compile_("gcc", "-shared", "-fPIC", "-Wl,-soname,libfwcore.so", "-o", str(site / "fw" / "lib" / "libfwcore.so"),
             str(tmp_path / "core.c"))
    (tmp_path / "c.c").write_text(module_source("_C", "fw_core_version();", "int fw_core_version(void);"))
    compile_("gcc", "-shared", "-fPIC", "-I", PY_INCLUDE, "-o", str(site / "fw" / "_C.so"), str(tmp_path / "c.c"),
             "-L", str(site / "fw" / "lib"), "-lfwcore", "-Wl,-rpath,$ORIGIN/lib")
    (tmp_path / "e.c").write_text(module_source("_ext", "fw_core_version();", "int fw_core_version(void);"))
    compile_("gcc", "-shared", "-fPIC", "-I", PY_INCLUDE, "-o", str(site / "myext" / "_ext.so"), str(tmp_path / "e.c"),
             "-L", str(site / "fw" / "lib"), "-lfwcore")
    alone = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(site)!r}); import myext._ext"],
                           capture_output=True, text=True, timeout=60)
    assert "libfwcore.so: cannot open shared object file" in alone.stderr      # the oracle, both ways
    subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(site)!r}); import fw, myext._ext"],
                   check=True, timeout=60)
    r = diagnose(paths=[str(site)], environ={}, environment_checks=False, scan_sys_path=False)
    assert [f.code for f in r.findings if f.severity != Severity.INFO] == []
    [f] = by_code(r, "NEEDS_IMPORT_FIRST")
    assert f.details["path"].endswith("myext/_ext.so") and f.details["modules"] == ["fw"]
    assert f.details["missing_alone"] == ["libfwcore.so"]


def test_every_finding_has_a_fix_and_an_owner_where_one_exists(report):
    assert report.findings and all(f.fix for f in report.findings)
    assert all("path" in f.details for f in report.findings)


def test_an_older_libstdcxx_shipped_next_to_a_module(tmp_path):
    """One module ships its own (older) libstdc++.so.6; the first loaded wins by SONAME."""
    site = tmp_path / "site"
    (site / "old.libs").mkdir(parents=True)
    (tmp_path / "s.c").write_text("int mlt_old_stdcxx_marker(void) { return 0; }\n")
    (tmp_path / "v.map").write_text("GLIBCXX_3.4 { global: mlt_old_stdcxx_marker; };\n"
                                    "CXXABI_1.3 { global: *; } GLIBCXX_3.4;\n")
    compile_("gcc", "-shared", "-fPIC", "-nostdlib", "-o", str(site / "old.libs" / "libstdc++.so.6"),
             str(tmp_path / "s.c"), f"-Wl,--version-script={tmp_path / 'v.map'}", "-Wl,-soname,libstdc++.so.6")
    (tmp_path / "b.c").write_text(module_source("bundler"))
    compile_("gcc", "-shared", "-fPIC", "-I", PY_INCLUDE, "-o", str(site / "bundler.so"), str(tmp_path / "b.c"),
             "-L", str(site / "old.libs"), "-Wl,--no-as-needed", "-l:libstdc++.so.6", "-Wl,-rpath,$ORIGIN/old.libs")
    (tmp_path / "m.cc").write_text(
        "#include <Python.h>\n#include <string>\n"
        "static std::string make(int n) { return std::string(n, 'x'); }\n"
        "static struct PyModuleDef def_ = {PyModuleDef_HEAD_INIT, \"usesstr\", NULL, -1, NULL};\n"
        "PyMODINIT_FUNC PyInit_usesstr(void) { (void)make(3).size(); return PyModule_Create(&def_); }\n")
    compile_("g++", "-shared", "-fPIC", "-I", PY_INCLUDE, "-o", str(site / "usesstr.so"), str(tmp_path / "m.cc"))

    def imports(order):
        code = f"import sys; sys.path.insert(0, {str(site)!r})\n" + "".join(f"import {m}\n" for m in order)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert imports(["usesstr", "bundler"]).returncode == 0                      # the oracle: order decides
    assert "version `GLIBCXX_3.4.21' not found" in imports(["bundler", "usesstr"]).stderr
    r = diagnose(paths=[str(site)], environ={}, environment_checks=False, scan_sys_path=False)
    [f] = by_code(r, "OLDER_LIBSTDCXX")
    assert f.details["path"].endswith("old.libs/libstdc++.so.6") and f.details["has"] == "GLIBCXX_3.4"
    assert by_code(r, "DUP_LIBSTDCXX") == []          # one SONAME: never both in one process
