"""mltools doctor on environments built for real: a venv with numpy, and
``--path`` dirs of small gcc-built extension modules broken in one way each.

The oracle for every broken module is the real thing: importing it in a fresh
interpreter fails with the loader's own message (or, for runtimes, both copies
really end up in /proc/self/maps).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from mltools.doctor import diagnose
from mltools.findings import Severity

SITE = Path(__import__("numpy").__file__).resolve().parent.parent   # where numpy is installed


def gcc(*args: str) -> None:
    proc = subprocess.run(["gcc", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def gxx(*args: str) -> None:
    proc = subprocess.run(["g++", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def import_error(directory: Path, module: str, *, also: str = "") -> str:
    """The real interpreter's verdict on ``import module`` (empty when it works)."""
    code = f"import sys; sys.path.insert(0, {str(directory)!r}); {also}\nimport {module}"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return "" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]


PY_INCLUDE = sysconfig.get_paths()["include"]


def module_source(name: str, body: str = "", decls: str = "") -> str:
    """A real (empty) extension module whose init runs ``body``; compile with -I PY_INCLUDE."""
    return (f"#include <Python.h>\n{decls}\n"
            f"static struct PyModuleDef def_ = {{PyModuleDef_HEAD_INIT, \"{name}\", NULL, -1, NULL}};\n"
            f"PyMODINIT_FUNC PyInit_{name}(void) {{ {body} return PyModule_Create(&def_); }}\n")


def codes(report, severity=None):
    return sorted({f.code for f in report.findings if severity is None or f.severity == severity})


def static_findings(report):
    """Findings about files (the environment checks depend on the host)."""
    return [f for f in report.findings if "path" in f.details or "copies" in f.details or "paths" in f.details]


# ----------------------------------------------------------------------------- builders

@pytest.fixture(scope="module")
def numpy_venv(tmp_path_factory) -> Path:
    """A fresh venv (no system site-packages) whose site-packages holds numpy (symlinked)."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "v")], check=True, timeout=120)
    site = next((root / "v" / "lib").glob("python3*/site-packages"))
    for entry in SITE.iterdir():
        if entry.name in ("numpy", "numpy.libs") or (entry.name.startswith("numpy-") and entry.name.endswith(".dist-info")):
            (site / entry.name).symlink_to(entry)
    return root / "v" / "bin" / "python"


@pytest.fixture(scope="module")
def openmp_dir(tmp_path_factory) -> Path:
    """Two modules: one built with -fopenmp (libgomp.so.1), one pulling a renamed
    Intel-style runtime grafted into ``vendor.libs`` (recognised by its exports)."""
    d = tmp_path_factory.mktemp("omp")
    src = d / "src"
    src.mkdir()
    (src / "a.c").write_text(module_source("ompa", "int s = 0;\n#pragma omp parallel reduction(+:s)\ns += 1;\n(void)s;",
                                           "#include <omp.h>"))
    gcc("-shared", "-fPIC", "-fopenmp", "-I", PY_INCLUDE, "-o", str(d / "ompa.so"), str(src / "a.c"))
    (d / "vendor.libs").mkdir()
    (src / "rt.c").write_text("int __kmpc_fork_call(void) { return 0; }\n"
                              "int __kmpc_global_thread_num(void) { return 0; }\n"
                              "int omp_get_num_threads(void) { return 1; }\n")
    gcc("-shared", "-fPIC", "-Wl,-soname,libvendoromp-1a2b3c4d.so", "-o",
        str(d / "vendor.libs" / "libvendoromp-1a2b3c4d.so"), str(src / "rt.c"))
    (src / "b.c").write_text(module_source("ompb", "__kmpc_global_thread_num();", "int __kmpc_global_thread_num(void);"))
    gcc("-shared", "-fPIC", "-I", PY_INCLUDE, "-o", str(d / "ompb.so"), str(src / "b.c"),
        "-L", str(d / "vendor.libs"), "-l:libvendoromp-1a2b3c4d.so", "-Wl,-rpath,$ORIGIN/vendor.libs")
    return d


# ----------------------------------------------------------------------------- healthy

def test_clean_venv_with_numpy_has_no_findings(numpy_venv, cli):
    assert import_error(Path("/nonexistent"), "numpy", also=f"sys.path.insert(0, {str(SITE)!r})") == ""
    # threadpoolctl, once imported by another test, sets KMP_DUPLICATE_LIB_OK in this process
    res = cli("doctor", "--python", str(numpy_venv), "--json", "--fail-on", "warning",
              env={"KMP_DUPLICATE_LIB_OK": None})
    doc = res.json()
    assert doc["schema"] == "mltools.doctor" and doc["version"] == 1
    assert doc["python"]["in_virtualenv"] and doc["python"]["executable"].startswith(str(numpy_venv.parent))
    assert any(r["family"] == "blas" and r["package"].startswith("numpy ") for r in doc["runtimes"])
    file_findings = [f for f in doc["findings"] if f["code"] not in HOST_CODES]
    assert file_findings == []
    host_warnings = [f for f in doc["findings"] if f["severity"] != "info"]
    assert res.exit_code == (1 if host_warnings else 0), res.stdout


# codes that depend on the machine, not on the environment under test
HOST_CODES = {"THP_ALWAYS", "THP_NEVER", "THP_DEFRAG_ALWAYS", "NUMA_BALANCING_ON", "THREADS_EXCEED_CPU_QUOTA",
              "ISA_LEVEL_DISAGREES", "CUDA_DRIVER_TOO_OLD", "LIBRARY_NOT_IN_CACHE", "CACHE_ENTRY_MISSING_FILE",
              "LD_SO_PRELOAD"}


def test_owner_of_each_file_comes_from_record(numpy_venv):
    r = diagnose(str(numpy_venv), environment_checks=False)
    blas = [c for c in r.runtimes if c.family == "blas"]
    assert blas and all(c.package and c.package.startswith("numpy ") for c in blas)
    assert r.distributions >= 1 and r.elf_files > 10 and r.extension_modules > 5


def test_a_venv_reached_through_a_symlink_counts_each_file_once(numpy_venv, tmp_path):
    """The loader names what it reaches by real paths and the walk by the spelling given
    (``/home`` -> ``/data`` on many clusters): each needer is one file, spelled as given."""
    link = tmp_path / "link"
    link.symlink_to(numpy_venv.parent.parent)
    python = link / numpy_venv.relative_to(numpy_venv.parent.parent)
    direct = diagnose(str(numpy_venv), environment_checks=False)
    through = diagnose(str(python), environment_checks=False)
    assert through.python.site_dirs[0].startswith(str(link))
    by_soname = {c.soname: c for c in direct.runtimes}
    assert through.runtimes
    for copy in through.runtimes:
        assert len(copy.needed_by) == len(by_soname[copy.soname].needed_by), copy
        assert len({os.path.realpath(p) for p in copy.needed_by}) == len(copy.needed_by), copy


# ----------------------------------------------------------------------------- runtimes

def test_libgomp_and_renamed_intel_openmp_pulled_by_two_modules(openmp_dir):
    # oracle: importing both maps both runtimes into one process
    code = ("import sys; sys.path.insert(0, %r); import ompa, ompb; "
            "maps = open('/proc/self/maps').read(); "
            "print('libgomp' in maps, 'libvendoromp-1a2b3c4d.so' in maps)" % str(openmp_dir))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "True"], out.stderr
    r = diagnose(paths=[str(openmp_dir)], environment_checks=False, scan_sys_path=False)
    dup = [f for f in r.findings if f.code == "DUP_OPENMP"]
    assert len(dup) == 1 and dup[0].severity == Severity.WARNING
    sonames = {c["soname"] for c in dup[0].details["copies"]}
    assert sonames == {"libgomp.so.1", "libvendoromp-1a2b3c4d.so"}
    by_soname = {c.soname: c for c in r.runtimes if c.family == "openmp"}
    assert by_soname["libvendoromp-1a2b3c4d.so"].implementation == "intel-or-llvm"   # from its exports
    assert any(p.endswith("ompb.so") for p in by_soname["libvendoromp-1a2b3c4d.so"].needed_by)
    assert any(p.endswith("ompa.so") for p in by_soname["libgomp.so.1"].needed_by)


def test_dynamic_pass_sees_both_openmp_runtimes_mapped(openmp_dir, tmp_path):
    # the importing child finds the modules through PYTHONPATH
    env = dict(os.environ, PYTHONPATH=str(openmp_dir))
    r = diagnose(paths=[str(openmp_dir)], imports=["ompa", "ompb"], environ=env, environment_checks=False,
                 scan_sys_path=False)
    loaded = {os.path.basename(lib.path): lib for lib in r.loaded}
    assert "libvendoromp-1a2b3c4d.so" in loaded and any(n.startswith("libgomp") for n in loaded)
    assert loaded["ompa.so"].dlopened and loaded["ompa.so"].extension_module
    assert loaded["libvendoromp-1a2b3c4d.so"].runtime == "openmp/intel-or-llvm"   # from its exports
    assert loaded["libgomp.so.1"].runtime == "openmp/gnu"
    assert [f.severity for f in r.findings if f.code == "LOADED_DUP_OPENMP"] == [Severity.WARNING]
    assert r.imported == ("ompa", "ompb") and "IMPORT_FAILED" not in codes(r)
    names = [os.path.basename(lib.path) for lib in r.loaded]
    assert names.index("ompa.so") < names.index("ompb.so")          # load order kept


# ----------------------------------------------------------------------------- environment

def test_ld_library_path_with_empty_element(tmp_path, cli):
    # oracle: ld.so really searches the current directory for the empty element
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "l.c").write_text("int mlt_here(void) { return 7; }\n")
    (tmp_path / "src" / "m.c").write_text("int mlt_here(void); int main(void) { return mlt_here(); }\n")
    gcc("-shared", "-fPIC", "-o", str(tmp_path / "libmlthere.so"), str(tmp_path / "src" / "l.c"))
    gcc("-o", str(tmp_path / "prog"), str(tmp_path / "src" / "m.c"), "-L", str(tmp_path), "-lmlthere")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    assert subprocess.run([str(tmp_path / "prog")], cwd=tmp_path, env=env).returncode == 127
    env["LD_LIBRARY_PATH"] = ":/nonexistent-dir"
    assert subprocess.run([str(tmp_path / "prog")], cwd=tmp_path, env=env).returncode == 7

    res = cli("doctor", "--path", str(tmp_path / "src"), "--json", "--fail-on", "warning",
              env={"LD_LIBRARY_PATH": ":/nonexistent-dir"})
    found = {f["code"]: f for f in res.json()["findings"]}
    assert "LD_LIBRARY_PATH_EMPTY_ELEMENT" in found and found["LD_LIBRARY_PATH_EMPTY_ELEMENT"]["severity"] == "warning"
    assert found["LD_LIBRARY_PATH_EMPTY_ELEMENT"]["fix"]
    assert res.exit_code == 1


def test_thread_variable_above_cpu_count(tmp_path):
    r = diagnose(paths=[str(tmp_path)], environ={"OMP_NUM_THREADS": str(os.cpu_count() * 4 + 1)},
                 scan_sys_path=False)
    assert "THREAD_OVERSUBSCRIPTION" in codes(r, Severity.WARNING)


def test_cuda_driver_older_than_runtime():
    from mltools.doctor.host import cuda_driver_findings, kernel_driver_version
    assert kernel_driver_version("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19") \
        == "535.104.05"
    old = cuda_driver_findings("470.82.01", {12: ("torch 2.5.0",)})
    assert [f.code for f in old] == ["CUDA_DRIVER_TOO_OLD"] and "525.60.13" in old[0].message
    assert cuda_driver_findings("550.54.15", {12: ("torch",), 11: ("cupy",)}) == []
    assert cuda_driver_findings(None, {12: ("torch",)}) == []


def test_kernel_settings_are_explained():
    from mltools.doctor.host import kernel_findings
    f = kernel_findings("always", "always", "1", 2, read_system=False)
    assert [x.code for x in f] == ["THP_ALWAYS", "THP_DEFRAG_ALWAYS", "NUMA_BALANCING_ON"]
    assert all(x.fix for x in f)
    assert kernel_findings("madvise", "madvise", "1", 1, read_system=False) == []


# ----------------------------------------------------------------------------- bad files, bad input

def test_git_lfs_pointer_saved_as_so(tmp_path):
    (tmp_path / "libweights.so").write_text("version https://git-lfs.github.com/spec/v1\n"
                                            "oid sha256:" + "0" * 64 + "\nsize 1234\n")
    (tmp_path / "libtrunc.so").write_bytes(Path("/bin/true").read_bytes()[:100])
    r = diagnose(paths=[str(tmp_path)], environment_checks=False, scan_sys_path=False)
    bad = {os.path.basename(f.details["path"]): f for f in r.findings if f.code == "BAD_ELF"}
    assert bad["libtrunc.so"].severity == Severity.ERROR
    assert bad["libweights.so"].details["git_lfs_pointer"] is True and "git lfs pull" in bad["libweights.so"].fix
    # oracle: ld.so refuses both
    for name in ("libweights.so", "libtrunc.so"):
        code = f"import ctypes; ctypes.CDLL({str(tmp_path / name)!r})"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and ("invalid ELF header" in proc.stderr or "cannot read file data" in proc.stderr)
    # a GNU ld script named .so is for the link editor: not reported
    (tmp_path / "libscript.so").write_text("/* GNU ld script */\nINPUT(libtrunc.so)\n")
    r = diagnose(paths=[str(tmp_path)], environment_checks=False, scan_sys_path=False)
    assert not any(f.details.get("path", "").endswith("libscript.so") for f in r.findings)


def test_bad_arguments_exit_2(cli, tmp_path):
    res = cli("doctor", "--python", str(tmp_path / "nope"))
    assert res.exit_code == 2 and res.stderr.startswith("Error: --python") and res.stdout == ""
    (tmp_path / "notpython").write_text("#!/bin/sh\nexit 3\n")
    (tmp_path / "notpython").chmod(0o755)
    res = cli("doctor", "--python", str(tmp_path / "notpython"))
    assert res.exit_code == 2 and "not a working Python" in res.stderr
    res = cli("doctor", "--path", str(tmp_path / "missing"), "--json")    # reported; the rest goes on
    assert res.exit_code == 1 and any(f["code"] == "NO_SUCH_PATH" for f in json.loads(res.stdout)["findings"])
    res = cli("doctor", "--import", "not a module")
    assert res.exit_code == 2 and "not a module name" in res.stderr
    res = cli("doctor", "--fail-on", "sometimes")
    assert res.exit_code == 2


def test_human_output_groups_by_severity(cli, openmp_dir):
    res = cli("doctor", "--path", str(openmp_dir), "--fail-on", "warning")
    assert res.exit_code == 1
    assert "Runtime libraries" in res.stdout and "\nWarnings\n" in res.stdout
    assert "DUP_OPENMP:" in res.stdout and "fix:" in res.stdout
    res = cli("doctor", "--path", str(openmp_dir))        # default --fail-on error
    assert res.exit_code == 0


def _stub_runtime(d: Path, soname: str, exports: str) -> None:
    (d / "rt.c").write_text(exports)
    gcc("-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(d / soname), str(d / "rt.c"))


def _module_needing(d: Path, name: str, lib: str) -> None:
    (d / f"{name}.c").write_text(module_source(name))
    gcc("-shared", "-fPIC", "-I", PY_INCLUDE, "-o", str(d / f"{name}.so"), str(d / f"{name}.c"),
        "-L", str(d), "-Wl,--no-as-needed", f"-l:{lib}", "-Wl,-rpath,$ORIGIN")


def test_two_intel_openmp_copies_are_an_error(tmp_path):
    kmp = "int __kmpc_fork_call(void) { return 0; }\nint __kmpc_global_thread_num(void) { return 0; }\n"
    _stub_runtime(tmp_path, "libiomp5.so", kmp)
    _stub_runtime(tmp_path, "libomp-9f8e7d6c.so.5", kmp)
    (tmp_path / "a.c").write_text(module_source("kmpa"))
    gcc("-shared", "-fPIC", "-I", PY_INCLUDE, "-o", str(tmp_path / "kmpa.so"), str(tmp_path / "a.c"),
        "-Wl,--no-as-needed", "-L", str(tmp_path), "-l:libiomp5.so", "-Wl,-rpath,$ORIGIN")
    _module_needing(tmp_path, "kmpb", "libomp-9f8e7d6c.so.5")
    r = diagnose(paths=[str(tmp_path)], environment_checks=False, scan_sys_path=False)
    [f] = [f for f in r.findings if f.code == "DUP_OPENMP_INTEL"]
    assert f.severity == Severity.ERROR and "Error #15" in f.message


def test_two_cuda_runtime_majors(tmp_path, monkeypatch):
    # stand-ins with the real SONAMEs: the loader resolves by name, as with NVIDIA's wheels
    _stub_runtime(tmp_path, "libcudart.so.11.0", "int cudaGetDeviceCount(int *n) { *n = 0; return 0; }\n")
    _stub_runtime(tmp_path, "libcudart.so.12", "int cudaGetDeviceCount(int *n) { *n = 0; return 0; }\n")
    _module_needing(tmp_path, "cu11mod", "libcudart.so.11.0")
    _module_needing(tmp_path, "cu12mod", "libcudart.so.12")
    r = diagnose(paths=[str(tmp_path)], environment_checks=False, scan_sys_path=False)
    [f] = [f for f in r.findings if f.code == "DUP_CUDA_MAJOR"]
    assert f.details["majors"] == ["11", "12"] and f.severity == Severity.WARNING
    cudart = {c.major: c for c in r.runtimes if c.family == "cuda-runtime"}
    assert set(cudart) == {"11", "12"}
    assert [os.path.basename(p) for p in cudart["12"].needed_by] == ["cu12mod.so"]
    # with a driver that runs CUDA 11 but not 12 (no nvidia-smi here: the kernel module's version)
    import mltools.doctor.host as host
    import mltools.env.report as env_report
    monkeypatch.setattr(env_report, "collect_gpus", lambda: (None, ()))
    monkeypatch.setattr(host, "kernel_driver_version", lambda *a: "470.82.01")
    r = diagnose(paths=[str(tmp_path)], environ={}, scan_sys_path=False)
    [f] = [f for f in r.findings if f.code == "CUDA_DRIVER_TOO_OLD"]
    assert f.details["cuda_major"] == 12 and f.severity == Severity.ERROR


def test_dynamic_pass_survives_a_hang_and_a_crash(tmp_path):
    from mltools.doctor import dynamic
    from mltools.python import running_interpreter
    from mltools.doctor.owners import OwnerIndex

    (tmp_path / "hangs.py").write_text("import time\ntime.sleep(600)\n")
    (tmp_path / "crashes.py").write_text("import ctypes\nctypes.string_at(0)\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    interp, owners = running_interpreter(), OwnerIndex([])
    r = dynamic.dynamic_pass(interp, ["hangs"], owners, env, timeout_s=2)
    [f] = [f for f in r.findings if f.code == "IMPORT_CRASHED"]
    assert "did not finish within 2 s" in f.message
    r = dynamic.dynamic_pass(interp, ["crashes"], owners, env, timeout_s=60)
    [f] = [f for f in r.findings if f.code == "IMPORT_CRASHED"]
    assert f.details["signal"] == "SIGSEGV" and "exit status 139" in f.message


def test_stale_loader_cache_is_reported(tmp_path, monkeypatch):
    """A library in an ld.so.conf directory that ldconfig never indexed (here: a temporary
    ld.so.conf naming a temporary directory; the real cache cannot know that library)."""
    from mltools.elf import ldcache

    libdir = tmp_path / "lib"
    libdir.mkdir()
    (tmp_path / "l.c").write_text("int mlt_fresh(void) { return 0; }\n")
    gcc("-shared", "-fPIC", "-Wl,-soname,libmltfresh.so.1", "-o", str(libdir / "libmltfresh.so.1"),
        str(tmp_path / "l.c"))
    (tmp_path / "ld.so.conf").write_text(f"{libdir}\n")
    real = ldcache.ldcache_report
    monkeypatch.setattr(ldcache, "ldcache_report", lambda **kw: real(conf_path=str(tmp_path / "ld.so.conf")))
    r = diagnose(paths=[str(tmp_path)], environ={}, scan_sys_path=False)
    [f] = [f for f in r.findings if f.code == "LIBRARY_NOT_IN_CACHE" and "libmltfresh" in f.message]
    assert f.fix == "run ldconfig (as root)"


def test_reference_blas_and_an_alternative_pointing_at_openblas(tmp_path):
    """``libblas.so.3`` is reference BLAS unless it really is OpenBLAS (Debian's alternatives).
    Oracle: /proc/self/maps names the file the loader really mapped."""
    ref, alt = tmp_path / "ref", tmp_path / "alt"
    for d in (ref, alt, alt / "openblas-pthread"):
        d.mkdir()
    (tmp_path / "b.c").write_text("void dgemm_(void) {}\n")
    gcc("-shared", "-fPIC", "-Wl,-soname,libblas.so.3", "-o", str(ref / "libblas.so.3"), str(tmp_path / "b.c"))
    gcc("-shared", "-fPIC", "-Wl,-soname,libblas.so.3", "-o", str(alt / "openblas-pthread" / "libblas.so.3"),
        str(tmp_path / "b.c"))
    (alt / "libblas.so.3").symlink_to("openblas-pthread/libblas.so.3")
    for d in (ref, alt):
        _module_needing(d, "usesblas", "libblas.so.3")
    code = ("import sys; sys.path.insert(0, %r); import usesblas; "
            "print([l.split()[-1] for l in open('/proc/self/maps') if 'libblas' in l][0])" % str(alt))
    mapped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    assert mapped.endswith("openblas-pthread/libblas.so.3")
    r = diagnose(paths=[str(ref)], environment_checks=False, scan_sys_path=False)
    [f] = [f for f in r.findings if f.code == "REFERENCE_BLAS"]
    assert f.severity == Severity.WARNING and f.details["path"].endswith("ref/libblas.so.3")
    r = diagnose(paths=[str(alt)], environment_checks=False, scan_sys_path=False)
    assert "REFERENCE_BLAS" not in codes(r)
    assert [c.implementation for c in r.runtimes if c.family == "blas"] == ["openblas"]
