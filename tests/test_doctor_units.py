"""Small pieces of doctor: runtime names, install hints, owners, the interpreter probe."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from mltools.elf import runtimes as rt
from mltools.doctor.fixes import install_hint, missing_library_fix
from mltools.doctor.host import thread_quota_findings, torch_cuda_version
from mltools.python import probe_interpreter, running_interpreter
from mltools.doctor.owners import Owner, OwnerIndex


@pytest.mark.parametrize("name, family, impl, major", [
    ("libgomp-a34b3233.so.1", "openmp", "gnu", None),
    ("libgomp.so.1", "openmp", "gnu", None),
    ("libiomp5.so", "openmp", "intel", None),
    ("libomp.so.5", "openmp", "llvm", None),
    ("libscipy_openblas64_-32a4b2a6.so", "blas", "openblas", None),
    ("libopenblasp-r0-15028c96.3.21.so", "blas", "openblas", None),
    ("libmkl_rt.so.2", "blas", "mkl", None),
    ("libstdc++.so.6", "libstdc++", "gnu", None),
    ("libcudart.so.12", "cuda-runtime", "nvidia", "12"),
    ("libcudart-9335f6a2.so.12", "cuda-runtime", "nvidia", "12"),
    ("libcudnn.so.9", "cudnn", "nvidia", "9"),
    ("libnccl.so.2", "nccl", "nvidia", "2"),
])
def test_runtime_names(name, family, impl, major):
    kind = rt.classify_name(name)
    assert (kind.family, kind.implementation, kind.major) == (family, impl, major)


@pytest.mark.parametrize("name", ["libgfortran-040039e1-0352e75f.so.5.0.0", "libz.so.1", "libtorch_cpu.so",
                                  "libgompish.so"])
def test_not_runtimes(name):
    assert rt.classify_name(name) is None


def test_runtime_by_exports():
    assert rt.classify_symbols(["__kmpc_fork_call", "omp_get_num_threads"]).implementation == "intel-or-llvm"
    assert rt.classify_symbols(["GOMP_parallel", "omp_get_num_threads"]).implementation == "gnu"
    assert rt.classify_symbols(["openblas_get_config64_"]).family == "blas"
    assert rt.classify_symbols(["omp_get_num_threads"]) is None     # any program may define that one
    assert rt.strip_graft_hash("libgfortran-040039e1-0352e75f.so.5.0.0") == "libgfortran.so.5.0.0"


def test_install_hints():
    assert install_hint("libcudart.so.12") == "pip install nvidia-cuda-runtime-cu12   (CUDA 12)"
    assert install_hint("libcublas.so.11").startswith("pip install nvidia-cublas-cu11")
    assert install_hint("libcudart.so.13").startswith("pip install nvidia-cuda-runtime ")
    assert install_hint("libgomp.so.1") == "apt-get install libgomp1"
    assert "NVIDIA driver" in install_hint("libcuda.so.1")
    assert install_hint("libmadeup.so.3") is None
    fix = missing_library_fix("libmadeup.so.3", Owner("pip", "foo", "1.2"))
    assert "pip install --force-reinstall --no-deps foo==1.2" in fix
    assert "LD_LIBRARY_PATH" in missing_library_fix("libx.so", None, near_miss_dir="/opt/x/lib")


def test_thread_pools_against_cgroup_quota():
    [f] = thread_quota_findings({}, 64, 4.0, 64)
    assert f.code == "THREADS_EXCEED_CPU_QUOTA" and "OMP_NUM_THREADS=4" in f.fix
    assert thread_quota_findings({"OMP_NUM_THREADS": "4"}, 64, 4.0, 64) == []
    assert thread_quota_findings({}, 64, None, 64) == []


def test_torch_cuda_version_read_without_import(tmp_path):
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "version.py").write_text(
        "__version__ = '2.5.1+cu124'\ncuda: Optional[str] = '12.4'\ngit_version = 'x'\n")
    assert torch_cuda_version([str(tmp_path)]) == ("2.5.1+cu124", "12.4")
    assert torch_cuda_version([str(tmp_path / "none")]) is None


@pytest.mark.skipif(not os.path.isdir("/var/lib/dpkg/info") or not shutil.which("dpkg"), reason="needs dpkg")
def test_system_library_owner_matches_dpkg():
    libc = os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")
    if not os.path.exists(libc):
        pytest.skip("no x86-64 glibc here")
    oracle = subprocess.run(["dpkg", "-S", "/lib/x86_64-linux-gnu/libc.so.6"], capture_output=True, text=True)
    expected = oracle.stdout.split(":", 1)[0].strip()
    owner = OwnerIndex([]).owner("/lib/x86_64-linux-gnu/libc.so.6")
    assert owner is not None and owner.manager == "dpkg" and owner.name == expected


def test_pip_owner_from_record():
    import numpy
    site = os.path.dirname(os.path.dirname(numpy.__file__))
    owner = OwnerIndex([site]).owner(numpy.__file__)
    assert owner is not None and owner.manager == "pip" and owner.name == "numpy" and owner.version == numpy.__version__


def test_probe_matches_the_running_interpreter():
    mine = running_interpreter()
    other = probe_interpreter(sys.executable)
    assert other.is_running and other.version == mine.version and other.prefix == mine.prefix
    assert set(mine.site_dirs) == set(other.site_dirs)
    # pytest adds its own dirs to this process's sys.path; the probe's are all there
    assert other.sys_path and set(other.sys_path) <= set(mine.sys_path)


def test_conda_owner_from_conda_meta(tmp_path):
    (tmp_path / "conda-meta").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libgomp.so.1").write_bytes(b"\x7fELF")
    (tmp_path / "conda-meta" / "libgomp-13.2.0-h77fa898_7.json").write_text(
        '{"name": "libgomp", "version": "13.2.0", "files": ["lib/libgomp.so.1"]}')
    owner = OwnerIndex([], prefixes=[str(tmp_path)]).owner(str(tmp_path / "lib" / "libgomp.so.1"))
    assert owner == Owner("conda", "libgomp", "13.2.0")
    from mltools.doctor.fixes import reinstall_hint
    assert reinstall_hint(owner) == "conda install --force-reinstall libgomp"


def test_a_bug_on_one_file_leaves_the_rest_of_the_report(tmp_path, monkeypatch):
    import mltools.elf.ldtree as ldtree
    from mltools.doctor import diagnose

    (tmp_path / "m.c").write_text("int f(void) { return 0; }\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp_path / "odd.so"), str(tmp_path / "m.c")], check=True)
    (tmp_path / "LICENSE").write_text("x")
    real = ldtree.resolve_tree

    def flaky(path, **kw):
        if path.endswith("odd.so"):
            raise KeyError("boom")
        return real(path, **kw)

    monkeypatch.setattr(ldtree, "resolve_tree", flaky)
    r = diagnose(paths=[str(tmp_path)], environ={}, environment_checks=False, scan_sys_path=False)
    [f] = [f for f in r.findings if f.code == "INTERNAL_ERROR"]
    assert "odd.so" in f.message and "KeyError" in f.message


def test_two_cxx_runtimes_under_different_sonames():
    from mltools.doctor.model import RuntimeCopy
    from mltools.doctor.static import _libstdcxx_findings

    copies = [RuntimeCopy("libstdc++", "gnu", None, "libstdc++.so.6", "", "libstdc++6", ("a.so",)),
              RuntimeCopy("libstdc++", "gnu", None, "libstdc++-5a1b2c3d.so.6", "", "foo 1.0", ("b.so",))]
    [f] = _libstdcxx_findings(copies, lambda g: {"copies": [c.soname for c in g]})
    assert f.code == "DUP_LIBSTDCXX" and f.details["copies"] == ["libstdc++.so.6", "libstdc++-5a1b2c3d.so.6"]
