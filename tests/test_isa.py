"""The CPU-instruction scan against its oracle: the same code run on emulated older CPUs.

gcc builds small libraries the ways real ones are built (``-mavx512f`` all
through, with and without a constructor; ``-mavx2`` with a constructor; a
``__builtin_cpu_supports`` dispatch with neutral names; an ifunc; gcc's
``target_clones``; a Python extension whose ``PyInit`` runs AVX2 code), then a
driver ``dlopen``s each and calls it, as an import would, under
``qemu-x86_64 -cpu MODEL`` (Debian's qemu-user), which raises SIGILL where a real
CPU of that model would, and natively on this machine. The scan's verdict
(``ILLEGAL_INSTRUCTION_RISK`` for that CPU, or not) must match the run, for
every library on every model. Debian 12's qemu has no AVX-512 on any model, so
the AVX-512 "has it" side is the native run, on hosts that have AVX-512.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig

import pytest

pytest.importorskip("iced_x86")

QEMU = shutil.which("qemu-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-user (qemu-x86_64) is not installed")

BODY = r"""
static inline float dot_body(const float *a, const float *b, int n) {
    float s = 0.f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
"""

LIBS = {
    # compiled for AVX-512 all through, a constructor runs it at load
    "avx512_ctor": (BODY + r"""
#include <immintrin.h>
static float table[64];
__attribute__((constructor)) static void fill(void) {
    __m512 v = _mm512_set1_ps(1.0f);
    for (int i = 0; i < 64; i += 16) _mm512_storeu_ps(table + i, v);
}
float kernel(const float *a, const float *b, int n) { return dot_body(a, b, n) + table[0] - 1.0f; }
const char *impl(void) { return "avx512"; }
""", ["-O3", "-ffast-math", "-mavx512f", "-mprefer-vector-width=512"]),
    # the same without a constructor: it dies on the first call
    "avx512_call": (BODY + r"""
float kernel(const float *a, const float *b, int n) { return dot_body(a, b, n); }
const char *impl(void) { return "avx512"; }
""", ["-O3", "-ffast-math", "-mavx512f", "-mprefer-vector-width=512"]),
    # AVX2 + FMA all through, used at load
    "avx2_ctor": (BODY + r"""
static float warm;
__attribute__((constructor)) static void fill(void) {
    static float a[256], b[256];
    for (int i = 0; i < 256; i++) { a[i] = (float)i; b[i] = 0.5f; }
    warm = dot_body(a, b, 256);
}
float kernel(const float *a, const float *b, int n) { return dot_body(a, b, n) + warm * 0.0f; }
const char *impl(void) { return "avx2"; }
""", ["-O3", "-ffast-math", "-mavx2", "-mfma"]),
    # SSE4.1 (x86-64-v2's) in a constructor, as numpy's static initializer does
    "sse41_ctor": (r"""
#include <smmintrin.h>
static int got[4];
static volatile int seed = 3;
__attribute__((constructor)) static void fill(void) {
    __m128i a = _mm_set1_epi32(seed), b = _mm_set_epi32(seed, 2, seed, 4);
    _mm_storeu_si128((__m128i *)got, _mm_mullo_epi32(a, b));       /* pmulld */
}
float kernel(const float *a, const float *b, int n) { (void)a; (void)b; (void)n; return (float)got[0]; }
const char *impl(void) { return "sse41"; }
""", ["-O2", "-msse4.1"]),
    # __builtin_cpu_supports + target attributes; neutral names, so only the CPU check is evidence
    "builtin_dispatch": (BODY + r"""
__attribute__((target("avx512f"), noinline)) static float wide(const float *a, const float *b, int n) { return dot_body(a, b, n); }
__attribute__((target("avx2,fma"), noinline)) static float mid(const float *a, const float *b, int n) { return dot_body(a, b, n); }
__attribute__((noinline)) static float plain(const float *a, const float *b, int n) { return dot_body(a, b, n); }
static const char *chosen = "none";
float kernel(const float *a, const float *b, int n) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) { chosen = "avx512f"; return wide(a, b, n); }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) { chosen = "avx2"; return mid(a, b, n); }
    chosen = "base"; return plain(a, b, n);
}
const char *impl(void) { return chosen; }
""", ["-O3", "-ffast-math", "-mprefer-vector-width=512"]),
    # a GNU ifunc whose resolver picks the implementation
    "ifunc": (BODY + r"""
__attribute__((target("avx512f"), noinline)) static float wide(const float *a, const float *b, int n) { return dot_body(a, b, n); }
__attribute__((noinline)) static float plain(const float *a, const float *b, int n) { return dot_body(a, b, n); }
static const char *chosen = "none";
typedef float (*fn)(const float *, const float *, int);
static fn pick(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) { chosen = "avx512f"; return wide; }
    chosen = "base"; return plain;
}
float kernel(const float *a, const float *b, int n) __attribute__((ifunc("pick")));
const char *impl(void) { return chosen; }
""", ["-O3", "-ffast-math", "-mprefer-vector-width=512"]),
    # gcc's target_clones: kernel.avx512f, kernel.avx2, kernel.default and a resolver
    "target_clones": (BODY + r"""
__attribute__((target_clones("default", "avx2", "avx512f")))
float kernel(const float *a, const float *b, int n) { return dot_body(a, b, n); }
const char *impl(void) { return "clones"; }
""", ["-O3", "-ffast-math", "-mprefer-vector-width=512"]),
}

DRIVER = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) { printf("dlopen failed: %s\n", dlerror()); return 2; }
    printf("loaded\n"); fflush(stdout);
    float (*kernel)(const float *, const float *, int) = (float (*)(const float *, const float *, int))dlsym(h, "kernel");
    const char *(*impl)(void) = (const char *(*)(void))dlsym(h, "impl");
    static float a[1000], b[1000];
    for (int i = 0; i < 1000; i++) { a[i] = 1.0f; b[i] = 2.0f; }
    float r = kernel(a, b, 1000);
    printf("called %g %s\n", r, impl());
    return 0;
}
"""

# qemu's CPU model -> the --cpu name whose features it has (for what these libraries use)
MODELS = {"qemu64": "x86-64", "Nehalem": "nehalem", "Haswell": "haswell"}


@pytest.fixture(scope="session")
def isa_libs(cbuild):
    libs = {name: cbuild.build(f"lib{name}.so", src, shared=True, flags=flags, subdir="isa")
            for name, (src, flags) in LIBS.items()}
    driver = cbuild.build("isa_driver", DRIVER, libs=["-ldl"])
    return libs, driver


def _run(driver, lib, model=None):
    argv = ([QEMU, "-cpu", model] if model else []) + [str(driver), str(lib)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode == -4 or proc.returncode == 132:
        return "SIGILL@load" if "loaded" not in proc.stdout else "SIGILL@call"
    assert proc.returncode == 0, (argv, proc.returncode, proc.stdout, proc.stderr)
    return "ok " + proc.stdout.split()[-1]


def _verdict(path, cpu):
    from mltools.doctor.isa import isa_pass
    from mltools.elf.cpus import cpu_target, this_cpu

    target = this_cpu() if cpu is None else cpu_target(cpu)
    summary, findings, _scope = isa_pass([str(path)], lambda p: None, target, {}, use_cache=False)
    return [f for f in findings if f.code == "ILLEGAL_INSTRUCTION_RISK"], summary


@needs_qemu
@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("name", sorted(LIBS))
def test_scan_matches_qemu(isa_libs, name, model):
    libs, driver = isa_libs
    outcome = _run(driver, libs[name], model)
    risks, _ = _verdict(libs[name], MODELS[model])
    assert bool(risks) == outcome.startswith("SIGILL"), (name, model, outcome, [f.message for f in risks])
    if risks and outcome == "SIGILL@load":
        assert "at load" in risks[0].message
    if risks and outcome == "SIGILL@call":
        assert "nothing in the file checks the CPU" in risks[0].message


@pytest.mark.parametrize("name", sorted(LIBS))
def test_scan_matches_this_machine(isa_libs, name):
    """The native run: on an AVX-512 host the AVX-512 libraries run, elsewhere they die."""
    libs, driver = isa_libs
    outcome = _run(driver, libs[name])
    risks, _ = _verdict(libs[name], None)
    assert bool(risks) == outcome.startswith("SIGILL"), (name, outcome)


def test_classes_of_the_fixtures(isa_libs):
    from mltools.elf.isa import scan_file

    libs, _ = isa_libs
    scans = {name: scan_file(str(p)) for name, p in libs.items()}
    assert "AVX512F" in scans["avx512_ctor"].features_of("load")
    assert "AVX512F" in scans["avx512_call"].features_of("unguarded")
    assert not scans["avx512_call"].dispatch
    assert "AVX2" in scans["avx2_ctor"].features_of("load")
    assert "SSE4_1" in scans["sse41_ctor"].features_of("load")
    # neutral names: the libgcc CPU model symbols are the evidence, the guard itself is not traced
    bd = scans["builtin_dispatch"]
    assert "__cpu_model" in bd.dispatch and "AVX512F" in bd.features_of("unproven")
    assert not bd.features_of("load", "unguarded")
    # the ifunc resolver's returns are traced: guarded
    assert "AVX512F" in scans["ifunc"].features_of("guarded")
    assert any("ifunc" in e for e in scans["ifunc"].dispatch)
    assert "AVX512F" in scans["target_clones"].features_of("guarded")


def test_tzcnt_and_cpuid_do_not_count(cbuild):
    """gcc emits TZCNT for __builtin_ctz at the x86-64 baseline (it runs as BSF on older
    CPUs), and a CPU check runs CPUID/XGETBV: none of them is a risk."""
    from mltools.elf.isa import scan_file

    lib = cbuild.build("libctz.so", r"""
#include <cpuid.h>
int lowest(unsigned x) { return __builtin_ctz(x); }
int has_avx(void) { unsigned a, b, c, d; __get_cpuid(1, &a, &b, &c, &d);
    unsigned lo, hi; __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0)); return (c >> 28) & lo & 1; }
""", shared=True, flags=["-O2"], subdir="isa")
    out = subprocess.run(["objdump", "-d", str(lib)], capture_output=True, text=True).stdout
    assert "tzcnt" in out and "cpuid" in out      # what gcc emitted, by the reference disassembler
    r = scan_file(str(lib))
    assert r.features == {} and r.uses == ()
    assert "cpuid instruction" in r.dispatch


def test_python_extension_pyinit_is_load(cbuild, tmp_path):
    """PyInit runs at import: AVX2 code it calls directly is 'load'; under qemu the import dies
    on Nehalem and works on Haswell."""
    inc = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    src = BODY + r"""
#include <Python.h>
static float a[512], b[512];
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "isa_pyinit", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_isa_pyinit(void) {
    for (int i = 0; i < 512; i++) { a[i] = (float)i; b[i] = 2.0f; }
    PyObject *m = PyModule_Create(&def);
    if (m) PyModule_AddObject(m, "dot", PyFloat_FromDouble(dot_body(a, b, 512)));
    return m;
}
"""
    mod = cbuild.build(f"isa_pyinit{suffix}", src, shared=True, flags=["-O3", "-ffast-math", "-mavx2", "-mfma",
                                                                         f"-I{inc}"], subdir="pyext")
    from mltools.elf.isa import scan_file
    assert "AVX2" in scan_file(str(mod)).features_of("load")
    assert _verdict(mod, "nehalem")[0] and not _verdict(mod, "haswell")[0]
    if QEMU is None:
        pytest.skip("qemu-user is not installed: the scan was checked, the run was not")
    env = dict(os.environ, PYTHONPATH=str(mod.parent))
    for model, dies in (("Nehalem", True), ("Haswell", False)):
        proc = subprocess.run([QEMU, "-cpu", model, sys.executable, "-S", "-c", "import isa_pyinit; print(isa_pyinit.dot)"],
                              capture_output=True, text=True, timeout=300, env=env)
        assert (proc.returncode in (-4, 132)) == dies, (model, proc.returncode, proc.stderr[-500:])


def test_numpy_baseline_at_load_matches_qemu64():
    """numpy 2.x's baseline is x86-64-v2: its static initializer uses SSE4.1, so on an x86-64
    (v1) CPU `import numpy` dies before numpy's own CPU check can speak. The scan must say so
    for x86-64 and not for nehalem (v2)."""
    np = pytest.importorskip("numpy")
    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip("numpy 1.x has an x86-64 baseline")
    import glob
    umath = glob.glob(os.path.join(os.path.dirname(np.__file__), "_core", "_multiarray_umath*.so"))[0]
    risks, _ = _verdict(umath, "x86-64")
    assert risks and "SSE4_1" in risks[0].details["missing"] and "at load" in risks[0].message
    assert not _verdict(umath, "nehalem")[0]
    if QEMU is None:
        pytest.skip("qemu-user is not installed: the scan was checked, the run was not")
    for model, dies in (("qemu64", True), ("Nehalem", False)):
        proc = subprocess.run([QEMU, "-cpu", model, sys.executable, "-S", "-c",
                               "import sys; sys.path[:0] = %r; import numpy" % (sys.path,)],
                              capture_output=True, text=True, timeout=600)
        assert (proc.returncode in (-4, 132)) == dies, (model, proc.returncode, proc.stderr[-500:])


def test_torch_has_nothing_unguarded_beyond_baseline():
    """torch's CPU build dispatches everything (ATen, MKL, cpuinfo): at x86-64 nothing of it may be
    an error (it runs under qemu64 once numpy is out of the way)."""
    torch_dir = os.path.dirname(pytest.importorskip("torch").__file__)
    paths = [os.path.join(torch_dir, "lib", n) for n in ("libtorch_cpu.so", "libc10.so", "libtorch_python.so")]
    from mltools.doctor.isa import isa_pass
    from mltools.elf.cpus import cpu_target
    _summary, findings, _ = isa_pass(paths, lambda p: "torch", cpu_target("x86-64"), {}, jobs=2)
    assert not [f for f in findings if f.severity.value == "error"], [f.message for f in findings]


def test_cache_second_run_and_identical_files(isa_libs, tmp_path, monkeypatch):
    from mltools.doctor.isa import scan_files

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    libs, _ = isa_libs
    copy = tmp_path / "copy.so"
    shutil.copy(libs["avx2_ctor"], copy)
    paths = [str(libs["avx2_ctor"]), str(copy), str(libs["ifunc"])]
    first, errors, _ = scan_files(paths)
    assert not errors and not any(c for _r, c in first.values())
    assert first[paths[0]][0] == first[paths[1]][0]
    second, _, stats = scan_files(paths)
    assert all(c for _r, c in second.values()) and stats["code_bytes"] == 0
    assert {p: r for p, (r, _c) in second.items()} == {p: r for p, (r, _c) in first.items()}
    assert os.path.isdir(tmp_path / "cache" / "mltools" / "isa")


def test_cli_cpu_option(isa_libs, cli, tmp_path):
    libs, _ = isa_libs
    d = tmp_path / "site"
    d.mkdir()
    shutil.copy(libs["avx2_ctor"], d / "libavx2_ctor.so")
    res = cli("doctor", "--path", str(d), "--cpu", "nehalem", "--json", "--fail-on", "ILLEGAL_INSTRUCTION_RISK")
    assert res.exit_code == 1, res.stderr
    doc = res.json()
    assert doc["isa"]["cpu"] == "nehalem" and doc["isa"]["cpu_level"] == 2
    risk = [f for f in doc["findings"] if f["code"] == "ILLEGAL_INSTRUCTION_RISK"]
    assert [f["details"]["path"] for f in risk] == [str(d / "libavx2_ctor.so")]
    row = next(f for f in doc["isa"]["files"] if f["path"] == str(d / "libavx2_ctor.so"))
    assert row["needs_level"] == 3 and "AVX2" in row["unguarded"]
    ok = cli("doctor", "--path", str(d), "--cpu", "haswell", "--json", "--fail-on", "ILLEGAL_INSTRUCTION_RISK")
    assert ok.exit_code == 0, [f["message"] for f in ok.json()["findings"] if f["code"] == "ILLEGAL_INSTRUCTION_RISK"]
    text = cli("doctor", "--path", str(d), "--cpu", "nehalem")
    assert "CPU instructions, judged for nehalem" in text.stdout and "x86-64-v3: AVX, AVX2, FMA" in text.stdout
    bad = cli("doctor", "--cpu", "pentium9")
    assert bad.exit_code == 2 and bad.stderr.startswith("Error: --cpu: unknown CPU 'pentium9'")


def test_dispatch_override_variable():
    from mltools.doctor.isa import dispatch_override_findings
    from mltools.elf.cpus import cpu_target

    f = dispatch_override_findings({"ATEN_CPU_CAPABILITY": "avx512"}, cpu_target("haswell"))
    assert f[0].severity.value == "warning" and "AVX512F" in f[0].message
    f = dispatch_override_findings({"ATEN_CPU_CAPABILITY": "avx2"}, cpu_target("haswell"))
    assert f[0].severity.value == "info"


def test_cpu_names_and_levels():
    from mltools.elf.cpus import cpu_target, level_needed, this_cpu

    assert cpu_target("x86-64-v3").level == 3 and cpu_target("skylake-avx512").level == 4
    assert cpu_target("haswell").lacks({"AVX512F", "AVX2"}) == {"AVX512F"}
    assert level_needed({"SSE4_1"}) == 2 and level_needed({"AVX2", "AES"}) == 3 and level_needed(set()) == 1
    text = "processor : 0\nmodel name : Test CPU\nflags : fpu sse sse2 pni ssse3 sse4_1 sse4_2 cx16 lahf_lm popcnt\n"
    me = this_cpu(text)
    assert me.level == 2 and me.name == "this machine (Test CPU)"
    with pytest.raises(ValueError):
        cpu_target("pentium9")


def test_not_x86_and_broken_files(tmp_path):
    from mltools.doctor.isa import isa_pass
    from mltools.elf.cpus import cpu_target

    bad = tmp_path / "libbad.so"
    bad.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x03\x00\x3e\x00" + b"\0" * 20)
    summary, findings, scope = isa_pass([str(bad)], lambda p: None, cpu_target("haswell"), {}, use_cache=False)
    assert [f.code for f in findings] == ["UNSCANNED"] and summary.scanned == 0
    arm = tmp_path / "libarm.so"
    arm.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x03\x00\xb7\x00" + b"\0" * 100)
    summary, findings, scope = isa_pass([str(arm)], lambda p: None, cpu_target("haswell"), {}, use_cache=False)
    assert not findings and any("not x86-64" in s for s in scope)


def test_json_is_serializable(isa_libs):
    from mltools import _jsonio
    from mltools.elf.isa import scan_file

    libs, _ = isa_libs
    doc = json.loads(_jsonio.dumps(scan_file(str(libs["ifunc"])), "mltools.elf.isa", 1))
    assert doc["schema"] == "mltools.elf.isa" and doc["uses"]


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_scan_ends_the_workers(tmp_path, sig, status):
    """A cold scan of torch's libraries runs in worker processes: a real signal ends them
    and the run exits 130/143 without a traceback."""
    import psutil
    import time

    torch_lib = os.path.join(os.path.dirname(pytest.importorskip("torch").__file__), "lib")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "mltools", "doctor", "--path", torch_lib, "--json", "-j", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    workers = []
    while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
        workers = psutil.Process(proc.pid).children()
        time.sleep(0.05)
    assert len(workers) >= 2, "the scan never started its workers"
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert "Traceback" not in err
    for w in workers:
        assert not w.is_running() or w.status() == psutil.STATUS_ZOMBIE
