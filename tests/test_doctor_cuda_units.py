"""The small pieces of the CUDA pass: the NVIDIA library table, the names in read-only data,
the trace parser on a dlopen of an already-loaded file, dlsym probes, programs shipped in
packages, and the static pass's progress."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from mltools.doctor import diagnose
from mltools.doctor.cuda_libs import (complete_name, cuda_major_of_file, cuda_majors_of, is_driver_library,
                                      wheel_names)
from mltools.doctor.fixes import install_hint, missing_library_fix
from mltools.findings import Severity


# SONAME majors per CUDA major, read from the installed wheels of CUDA 11, 12 and 13
@pytest.mark.parametrize("soname,majors", [
    ("libcufft.so.11", {12}), ("libcufft.so.12", {13}), ("libcufft.so.10", {11}),
    ("libcusolver.so.11", {11, 12}), ("libcusparse.so.12", {12, 13}), ("libcurand.so.10", {11, 12, 13}),
    ("libcudart.so.11.0", {11}), ("libcudart.so.13", {13}), ("libnvrtc-builtins.so.13.0", {13}),
    ("libnvJitLink.so.12", {12}), ("libcudnn_ops.so.9", {12, 13}), ("libgomp.so.1", set()),
])
def test_cuda_majors_of(soname, majors):
    assert cuda_majors_of(soname) == majors


def test_wheel_for_a_soname():
    # the classic wrong advice: libcufft.so.11 is CUDA 12's, not nvidia-cufft-cu11
    assert wheel_names("libcufft.so.11") == ("nvidia-cufft-cu12",)
    assert "nvidia-cufft-cu12" in install_hint("libcufft.so.11") and "cu11" not in install_hint("libcufft.so.11")
    assert wheel_names("libcusparse.so.12", 13) == ("nvidia-cusparse",)        # CUDA 13 wheels drop -cu13
    assert wheel_names("libcudnn.so.9", 13) == ("nvidia-cudnn-cu13",)          # not a toolkit part
    assert wheel_names("libcutensor.so.2", 12) == ("cutensor-cu12",)
    assert "NVIDIA driver" in install_hint("libcuda.so.1") and "pip install" not in install_hint("libcuda.so.1")
    assert missing_library_fix("libcudnn.so.9", None, required="nvidia-cudnn-cu13==9.24.0.43").startswith(
        "pip install 'nvidia-cudnn-cu13==9.24.0.43'")


def test_names_the_holder_completes():
    assert complete_name("libcudnn_ops.so", "libcudnn.so.9") == "libcudnn_ops.so.9"
    assert complete_name("libcufile_rdma.so", "libcufile.so.0") is None      # another major (.so.1)
    assert complete_name("libcudnn.so", "libtorch_python.so") is None        # text in a message
    assert is_driver_library("libcuda.so.1") and is_driver_library("libnvidia-ml.so.1")
    assert not is_driver_library("libnvidia-glcore.so.580.65.06") and not is_driver_library("libcudart.so.12")
    assert cuda_major_of_file("/x/nvidia/cu13/lib/libcublasLt.so.13") == 13
    assert cuda_major_of_file("/x/cupy/cuda/cufft.so", package_name="cupy-cuda12x") == 12
    assert cuda_major_of_file("/x/libfoo.so", needed=("libcudart.so.12", "libc.so.6")) == 12


NAMES_C = r"""
#include <stdio.h>
const char *mlt_names[] = {"libcudnn_ops.so", "libcuda.so.1", "zlib.so.1", "libnvrtc-builtins.so.13.0"};
int mlt_tmpl(char *out, int major) { return sprintf(out, "libnvrtc.so.%d", major); }
"""


def test_names_in_read_only_data(cbuild):
    """Oracle: the string literals the compiler put in .rodata (readelf -p .rodata)."""
    from mltools.elf.dlnames import dlopen_names_of
    from mltools.elf.sections import mapped_sections

    lib = cbuild.build("libnames.so", NAMES_C, shared=True)
    rodata = subprocess.run(["readelf", "-p", ".rodata", str(lib)], capture_output=True, text=True).stdout
    for literal in ("libcudnn_ops.so", "libcuda.so.1", "libnvrtc.so.%d"):
        assert literal in rodata
    with mapped_sections(str(lib)) as m:
        found = dlopen_names_of(m)
    assert set(found.names) == {"libcudnn_ops.so", "libcuda.so.1", "libnvrtc-builtins.so.13.0"}
    assert found.templates == ("libnvrtc.so.%d",)       # zlib.so.1 is inside a longer word: not a name


LOADER = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    /* the same file through two paths: the second dlopen returns the first object */
    void *a = dlopen(argv[1], RTLD_NOW), *b = dlopen(argv[2], RTLD_NOW);
    /* a failed lookup: glibc logs a 'symbol lookup error' for it under LD_DEBUG */
    void *c = dlsym(a, "mlt_no_such_symbol");
    printf("%d %d %d\n", a != NULL, a == b, c == NULL);
    return 0;
}
"""


def test_trace_of_a_dlopen_of_an_already_loaded_file(cbuild, tmp_path):
    from mltools.elf.trace import trace_command

    lib = cbuild.build("libtwice.so", "int mlt_twice(void) { return 2; }\n", shared=True)
    (tmp_path / "alias").symlink_to(lib.parent)
    prog = cbuild.build("twice", LOADER, libs=["-ldl"])
    first, second = str(tmp_path / "alias" / lib.name), str(lib)
    out = subprocess.run([str(prog), first, second], capture_output=True, text=True)
    assert out.stdout.split() == ["1", "1", "1"]        # oracle: the loader returned the same object
    report = trace_command([str(prog), first, second], categories=("libs", "files"))
    loads = [x for p in report.programs for x in p.libraries if x.name in (first, second)]
    assert [(x.name, x.path is not None) for x in loads] == [(first, True), (second, True)]
    assert not [f for f in report.findings if f.code == "DLOPEN_FAILED"]


PROBE_MODULE = r"""
import ctypes
lib = ctypes.CDLL(%r)
assert not hasattr(lib, "mlt_no_such_symbol")      # a dlsym that fails, as libraries probe options
"""


def test_failed_dlsym_probe_is_a_note(cbuild, tmp_path):
    lib = cbuild.build("libprobed.so", "int mlt_here(void) { return 1; }\n", shared=True)
    (tmp_path / "mltprobe.py").write_text(PROBE_MODULE % str(lib))
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    r = diagnose(sys.executable, imports=("mltprobe",), environ=env, environment_checks=False, scan_sys_path=False,
                 paths=[str(tmp_path)])
    assert not r.failed
    probes = [f for f in r.findings if f.code == "DLSYM_PROBE"]
    assert probes and probes[0].severity == Severity.INFO and probes[0].details["symbol"] == "mlt_no_such_symbol"
    assert not [f for f in r.findings if f.code == "UNDEFINED"]


def test_programs_shipped_in_a_package_are_notes(tmp_path, cbuild):
    """A test program inside a package that finds its libraries only from a launcher (torch's
    test_shim): the real loader cannot start it alone, and doctor says so as a note, with no
    LD_LIBRARY_PATH advice."""
    pkg = tmp_path / "mltpkg"
    (pkg / "lib").mkdir(parents=True)
    (pkg / "bin").mkdir()
    lib = cbuild.build("libmltcore.so", "int mlt_core(void) { return 0; }\n", shared=True)
    (pkg / "lib" / "libmltcore.so").write_bytes(lib.read_bytes())
    prog = cbuild.build("mlt_test", "int mlt_core(void); int main(void) { return mlt_core(); }\n",
                        flags=[f"-L{pkg / 'lib'}"], libs=["-lmltcore"])
    (pkg / "bin" / "mlt_test").write_bytes(prog.read_bytes())
    (pkg / "bin" / "mlt_test").chmod(0o755)
    start = subprocess.run([str(pkg / "bin" / "mlt_test")], capture_output=True, text=True)
    assert start.returncode == 127 and "libmltcore.so" in start.stderr      # oracle: ld.so
    r = diagnose(sys.executable, paths=[str(tmp_path)], scan_sys_path=False, environment_checks=False)
    miss = [f for f in r.findings if f.code == "MISSING_LIBRARY"]
    assert len(miss) == 1 and miss[0].severity == Severity.INFO and miss[0].details["loaded_by"] == "program"
    assert "LD_LIBRARY_PATH" not in miss[0].fix


def test_progress_callback(tmp_path, cbuild):
    lib = cbuild.build("libprog.so", "int mlt_p(void) { return 0; }\n", shared=True)
    (tmp_path / "libprog.so").write_bytes(lib.read_bytes())
    seen = []
    diagnose(sys.executable, paths=[str(tmp_path)], scan_sys_path=False, environment_checks=False,
             progress=lambda done, total=None, detail="": seen.append((done, total)))
    assert seen and all(d <= t for d, t in seen) and seen[-1][0] == seen[-1][1]
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_progress_on_a_terminal_only(tmp_path):
    from terminal import run_on_terminal

    progress = re.compile(r"doctor: \d+/\d+ \(\d+%\)")
    _, shown = run_on_terminal(["doctor", "--fail-on", "none"])
    assert progress.search(shown), shown[-300:]
    _, quiet = run_on_terminal(["doctor", "--fail-on", "none", "--quiet"])
    assert not progress.search(quiet)
    piped = subprocess.run([sys.executable, "-m", "mltools", "doctor", "--fail-on", "none"], capture_output=True,
                           text=True, timeout=300)
    assert not progress.search(piped.stderr)
