"""mltools env, checked against the kernel's files, os.sysconf and ldd --version."""
import os
import re
import subprocess

import pytest

from mltools.env import collect_env, environment_findings, isa_level_from_flags


def test_env_matches_kernel_and_sysconf():
    r = collect_env()
    assert r.cpu.logical_cpus == os.sysconf("SC_NPROCESSORS_ONLN")
    assert r.cpu.usable_cpus == len(os.sched_getaffinity(0))
    meminfo = open("/proc/meminfo").read()
    total_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))
    assert r.memory.total_bytes == total_kb * 1024
    model = re.search(r"^model name\s*:\s*(.*)$", open("/proc/cpuinfo").read(), re.M)
    if model:
        assert r.cpu.model_name == model.group(1).strip()
    online = open("/sys/devices/system/node/online").read().strip()
    assert len(r.numa_nodes) >= 1 and str(r.numa_nodes[0].node) == online.split("-")[0].split(",")[0]


def test_glibc_version_and_loader_match_ldd():
    r = collect_env()
    out = subprocess.run(["ldd", "--version"], capture_output=True, text=True).stdout
    version = re.search(r"(\d+\.\d+)\s*$", out.splitlines()[0]).group(1)
    assert r.libc.name == "glibc" and r.libc.version == version
    assert r.libc.loader_path and os.path.exists(r.libc.loader_path)
    # The loader really mapped here is the one that ldd names for the interpreter.
    ldd = subprocess.run(["ldd", "/bin/true"], capture_output=True, text=True).stdout
    interp = [ln.split()[0] for ln in ldd.splitlines() if "ld-linux" in ln][0]
    assert os.path.realpath(interp) == os.path.realpath(r.libc.loader_path)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86-64 levels")
def test_isa_level_flags_agree_with_compiled_check():
    from mltools import _cpu

    r = collect_env()
    assert r.cpu.isa_level == _cpu.x86_64_level()
    flags = set(re.search(r"^flags\s*:(.*)$", open("/proc/cpuinfo").read(), re.M).group(1).split())
    assert _cpu.cpu_supports("avx2") == ("avx2" in flags)
    assert _cpu.cpu_supports("avx512f") == ("avx512f" in flags)
    with pytest.raises(ValueError):
        _cpu.cpu_supports("warp-drive")


def test_isa_level_from_flags():
    v1 = {"cmov", "cx8", "fpu", "fxsr", "mmx", "syscall", "sse", "sse2"}
    v2 = v1 | {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}
    v3 = v2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
    assert isa_level_from_flags(set()) == 0
    assert isa_level_from_flags(v1) == 1
    assert isa_level_from_flags(v2) == 2
    assert isa_level_from_flags(v3) == 3
    assert isa_level_from_flags(v3 - {"fma"}) == 2
    assert isa_level_from_flags(v3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}) == 4


def test_numpy_runtimes_are_listed():
    r = collect_env()
    import numpy
    assert r.numpy_version == numpy.__version__
    assert any(lib.user_api == "blas" and os.path.exists(lib.filepath) for lib in r.runtimes)


def codes(findings):
    return [f.code for f in findings]


def test_empty_ld_library_path_element_is_a_trap(tmp_path):
    for value in (":/opt/lib", "/opt/lib:", "/a::/b", ""):
        f = environment_findings({"LD_LIBRARY_PATH": value}, 4)
        assert "LD_LIBRARY_PATH_EMPTY_ELEMENT" in codes(f), value
    f = environment_findings({"LD_LIBRARY_PATH": str(tmp_path)}, 4)
    assert codes(f) == []
    f = environment_findings({"LD_LIBRARY_PATH": "lib:" + str(tmp_path)}, 4)
    assert codes(f) == ["LD_LIBRARY_PATH_RELATIVE"]


def test_preload_and_thread_traps():
    f = codes(environment_findings({"LD_PRELOAD": "/nonexistent/libx.so"}, 2))
    assert f == ["LD_PRELOAD_SET", "LD_PRELOAD_MISSING"]
    assert codes(environment_findings({"OMP_NUM_THREADS": "64"}, 2)) == ["THREAD_OVERSUBSCRIPTION"]
    assert codes(environment_findings({"OMP_NUM_THREADS": "2"}, 2)) == []
    assert codes(environment_findings({"MKL_NUM_THREADS": "lots"}, 2)) == ["THREAD_COUNT_INVALID"]
    assert codes(environment_findings({"KMP_DUPLICATE_LIB_OK": "TRUE"}, 2)) == ["KMP_DUPLICATE_LIB_OK"]


def test_env_cli_table_and_json(cli):
    res = cli("env")
    assert res.exit_code == 0, res.stderr
    assert "isa level" in res.stdout and "loader" in res.stdout
    res = cli("env", "--json", env={"LD_LIBRARY_PATH": ":/nonexistent"})
    assert res.exit_code == 0
    doc = res.json()
    assert doc["schema"] == "mltools.env" and doc["version"] == 1
    assert doc["cpu"]["logical_cpus"] == os.sysconf("SC_NPROCESSORS_ONLN")
    assert doc["environment"]["LD_LIBRARY_PATH"] == ":/nonexistent"
    assert "LD_LIBRARY_PATH_EMPTY_ELEMENT" in [f["code"] for f in doc["findings"]]
    assert res.stderr == ""
