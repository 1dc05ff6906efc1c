"""The GPU-code listing (mltools.elf.fatbin) against its oracles.

- libraries built here with nvcc for chosen targets (skipped without nvcc):
  what nvcc was asked for is what the listing must say;
- ``cuobjdump --list-elf --list-ptx`` (PyPI's nvidia-cuda-cuobjdump) on the same
  files and on a real wheel's library;
- NVIDIA's compatibility rules, for which code runs on which GPU.
"""
from __future__ import annotations

import collections
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mltools.elf.fatbin import GpuCodeEntry, entry_runs_on, parse_arch, read_gpu_code
import cuda_wheels

NVCC = shutil.which("nvcc")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="needs nvcc (the CUDA toolkit) to build fixtures")

KERNELS = r"""
#include <cuda_runtime.h>
__global__ void scale(float a, float *y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] *= a;
}
__global__ void shift(float b, float *y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += b;
}
extern "C" int mlt_scale(float a, float *y, int n) {
    scale<<<(n + 255) / 256, 256>>>(a, y, n);
    return (int)cudaGetLastError();
}
"""

SM80_PTX90 = ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=compute_90"]
# name -> (nvcc arguments, the (kind, target) entries of .nv_fatbin)
BUILDS = {
    "libsm80_ptx90.so": (["-shared", "-Xcompiler", "-fPIC", *SM80_PTX90],
                         {("sass", "sm_80"): 2, ("ptx", "compute_90"): 1}),
    "libsm80_ptx90_all.so": (["-shared", "-Xcompiler", "-fPIC", *SM80_PTX90, "-Xfatbin", "-compress-all"],
                             {("sass", "sm_80"): 2, ("ptx", "compute_90"): 1}),
    "libsm80_ptx90_lz4.so": (["-shared", "-Xcompiler", "-fPIC", *SM80_PTX90, "-Xfatbin", "-compress-all",
                              "-Xfatbin", "-compress-mode=speed"],
                             {("sass", "sm_80"): 2, ("ptx", "compute_90"): 1}),
    "libsm80_ptx90_plain.so": (["-shared", "-Xcompiler", "-fPIC", *SM80_PTX90, "-Xfatbin", "-compress=false"],
                               {("sass", "sm_80"): 2, ("ptx", "compute_90"): 1}),
    "libptx75.so": (["-shared", "-Xcompiler", "-fPIC", "-gencode", "arch=compute_75,code=compute_75"],
                    {("ptx", "compute_75"): 1}),
    "libsm75_sm86.so": (["-shared", "-Xcompiler", "-fPIC", "-gencode", "arch=compute_75,code=sm_75",
                         "-gencode", "arch=compute_86,code=sm_86"],
                        {("sass", "sm_75"): 2, ("sass", "sm_86"): 2}),
    "libsm90a_sm120f.so": (["-shared", "-Xcompiler", "-fPIC", "-gencode", "arch=compute_90a,code=sm_90a",
                            "-gencode", "arch=compute_120f,code=[sm_120f,compute_120f]"],
                           {("sass", "sm_90a"): 2, ("sass", "sm_120f"): 2, ("ptx", "compute_120f"): 1}),
    "kern.fatbin": (["-fatbin", *SM80_PTX90], {("sass", "sm_80"): 1, ("ptx", "compute_90"): 1}),
    "kern_sm80.cubin": (["-cubin", "-arch=sm_80"], {("sass", "sm_80"): 1}),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    if NVCC is None:
        pytest.skip("needs nvcc")
    d = tmp_path_factory.mktemp("nvcc")
    (d / "kern.cu").write_text(KERNELS)
    for name, (args, _want) in BUILDS.items():
        # -cudart shared: libcudart.so as DT_NEEDED keeps each library at some 20 KB
        proc = subprocess.run([NVCC, "-cudart", "shared", *args, "-o", str(d / name), str(d / "kern.cu")],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.skip(f"nvcc cannot build {name}: {proc.stderr.strip()[-300:]}")
    return d


def _listing(path: Path) -> collections.Counter:
    code = read_gpu_code(str(path))
    return collections.Counter((e.kind, e.target) for e in code.entries) if code else collections.Counter()


@needs_nvcc
@pytest.mark.parametrize("name", sorted(BUILDS))
def test_listing_is_what_nvcc_was_asked_for(built, name):
    assert _listing(built / name) == collections.Counter(BUILDS[name][1])


@needs_nvcc
def test_compression_and_kernels(built):
    def entries(name):
        return read_gpu_code(str(built / name)).entries
    # nvcc 13 compresses PTX by default (zstd), -compress-all the cubins too, speed mode is LZ4
    assert {e.compression for e in entries("libsm80_ptx90.so") if e.kind == "ptx"} == {"zstd"}
    assert {e.compression for e in entries("libsm80_ptx90_all.so")} == {"zstd"}
    assert {e.compression for e in entries("libsm80_ptx90_lz4.so")} == {"lz4"}
    assert {e.compression for e in entries("libsm80_ptx90_plain.so")} == {None}
    # PTX ISA of nvcc 13.0 is 9.0
    assert {e.version for e in entries("libsm80_ptx90_plain.so") if e.kind == "ptx"} >= {(9, 0)}
    # of the two sm_80 cubins one is nvlink's device-link stub, without kernels
    plain = sorted(e.kernels for e in entries("libsm80_ptx90_plain.so") if e.kind == "sass")
    assert plain == [False, True]
    squeezed = [e.kernels for e in entries("libsm80_ptx90_all.so") if e.kind == "sass"]
    assert False in squeezed and None in squeezed      # the small one is judged by size, the other unknown


def _cuobjdump_listing(exe: Path, path: Path) -> collections.Counter:
    proc = subprocess.run([str(exe), "--list-elf", "--list-ptx", str(path)], capture_output=True, text=True,
                          timeout=600)
    out = collections.Counter()
    for line in proc.stdout.splitlines():
        m = re.match(r"(ELF|PTX) file\s+\d+: .*\.(sm_\d+[af]?)\.(cubin|ptx)$", line)
        if m:
            out[(m.group(1), m.group(2))] += 1
    return out


def _as_cuobjdump_names(c: collections.Counter) -> collections.Counter:
    # cuobjdump names PTX sm_XY and prints a family cubin (sm_120f) as plain sm_120
    out = collections.Counter()
    for (kind, target), n in c.items():
        num = target.split("_", 1)[1]
        if kind == "sass":
            out[("ELF", "sm_" + num.rstrip("f"))] += n
        else:
            out[("PTX", "sm_" + num)] += n
    return out


@needs_nvcc
@pytest.mark.parametrize("name", [n for n in sorted(BUILDS) if n.endswith(".so")])
def test_listing_matches_cuobjdump_on_nvcc_builds(built, name):
    exe = cuda_wheels.cuobjdump()
    assert _as_cuobjdump_names(_listing(built / name)) == _cuobjdump_listing(exe, built / name)


def test_listing_matches_cuobjdump_on_a_real_wheel(tmp_path):
    """nvidia-cufile-cu12 1.14.1.1: libcufile.so.0 carries SASS for sm_60 to sm_86 and PTX for compute_80."""
    import zipfile

    with zipfile.ZipFile(cuda_wheels.wheel("cufile")) as zf:
        zf.extract("nvidia/cufile/lib/libcufile.so.0", tmp_path)
    lib = tmp_path / "nvidia/cufile/lib/libcufile.so.0"
    mine = _listing(lib)
    assert _as_cuobjdump_names(mine) == _cuobjdump_listing(cuda_wheels.cuobjdump(), lib)
    assert {t for k, t in mine if k == "sass"} == {"sm_60", "sm_61", "sm_62", "sm_70", "sm_72", "sm_75",
                                                    "sm_80", "sm_86"}
    code = read_gpu_code(str(lib))
    assert code.ptx == ("compute_80",) and code.newest_ptx_isa == (7, 1)


def test_files_without_gpu_code(tmp_path):
    assert read_gpu_code("/bin/ls") is None
    (tmp_path / "empty").write_bytes(b"")
    assert read_gpu_code(str(tmp_path / "empty")) is None
    (tmp_path / "junk.so").write_bytes(b"\x7fELF" + b"\0" * 40)     # truncated: no section table
    assert read_gpu_code(str(tmp_path / "junk.so")) is None


def test_truncated_fatbin_stops_cleanly(built, tmp_path):
    data = (built / "kern.fatbin").read_bytes() if NVCC else b""
    if not data:
        pytest.skip("needs nvcc")
    cut = tmp_path / "cut.fatbin"
    cut.write_bytes(data[: len(data) // 2])
    code = read_gpu_code(str(cut))      # the container no longer fits: nothing listed, no exception
    assert code is None or len(code.entries) < 2


# NVIDIA's rules (CUDA compatibility guides; the family/arch-specific targets of CUDA 12.9):
# sm_XY runs on X.Z for Z >= Y, same major; sm_XYa only on X.Y; sm_XYf within the family;
# compute_XY JITs for any X.Y or newer; compute_XYa only X.Y; compute_XYf within the family.
@pytest.mark.parametrize("target,cc,runs", [
    ("sm_80", (8, 0), True), ("sm_80", (8, 6), True), ("sm_80", (8, 9), True), ("sm_86", (8, 0), False),
    ("sm_80", (9, 0), False), ("sm_90", (9, 0), True), ("sm_90", (10, 0), False),
    ("sm_90a", (9, 0), True), ("sm_100a", (10, 3), False), ("sm_100f", (10, 3), True),
    ("sm_120f", (12, 1), True), ("sm_120f", (12, 0), True), ("sm_121", (12, 0), False),
    ("compute_80", (9, 0), True), ("compute_80", (12, 0), True), ("compute_90", (8, 9), False),
    ("compute_90a", (9, 0), True), ("compute_90a", (10, 0), False), ("compute_100f", (10, 3), True),
    ("compute_100f", (12, 0), False), ("compute_75", (7, 5), True),
])
def test_runs_on(target, cc, runs):
    arch, variant = parse_arch(target)
    entry = GpuCodeEntry("ptx" if target.startswith("compute") else "sass", arch, variant)
    assert entry.target == target
    assert entry_runs_on(entry, cc) is runs


@pytest.mark.parametrize("text,want", [("sm_90", (90, "")), ("sm_120a", (120, "a")), ("compute_100f", (100, "f")),
                                       ("8.6", (86, "")), ("90", (90, "")), ("12.1", (121, ""))])
def test_parse_arch(text, want):
    assert parse_arch(text) == want


@pytest.mark.parametrize("bad", ["", "sm_", "gfx90a", "9.10", "sm_9", "ampere"])
def test_parse_arch_rejects(bad):
    with pytest.raises(ValueError):
        parse_arch(bad)
