"""doctor's CUDA pass on real NVIDIA wheels from PyPI (tests/cuda_wheels.py), each verdict
checked against the real loader in the environment's own interpreter, ``pip check``, or
the framework's own code."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import cuda_wheels
from mltools.doctor import diagnose
from mltools.findings import Severity

PY_INCLUDE = sysconfig.get_paths()["include"]


def by_code(report, code):
    return [f for f in report.findings if f.code == code]


def bad(report):
    return [f for f in report.findings if f.severity in (Severity.ERROR, Severity.WARNING)]


def run_python(python: Path, code: str, env=None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    full.update(env or {})
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120, env=full)


def load_error(python: Path, lib: Path, env=None) -> str:
    """What the real loader says when the environment's interpreter loads ``lib`` (empty: it loads)."""
    proc = run_python(python, f"import ctypes; ctypes.CDLL({str(lib)!r})", env)
    return "" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def envs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cudaenvs")
    healthy = cuda_wheels.make_env(root / "healthy", ["cudart", "nvjitlink", "cusparse", "cufile"])
    skew = cuda_wheels.make_env(root / "skew", ["cusparse", "nvjitlink-old"])
    stale = root / "stale"          # an old libnvJitLink.so.12, as a stale CUDA toolkit leaves it
    stale.mkdir()
    with zipfile.ZipFile(cuda_wheels.wheel("nvjitlink-old")) as zf:
        (stale / "libnvJitLink.so.12").write_bytes(zf.read("nvidia/nvjitlink/lib/libnvJitLink.so.12"))
    return {"healthy": healthy, "skew": skew, "stale": stale, "root": root}


def site(python: Path) -> Path:
    return cuda_wheels.site_packages(python.parent.parent)


def cusparse(python: Path) -> Path:
    return site(python) / "nvidia/cusparse/lib/libcusparse.so.12"


def test_healthy_wheels_are_quiet(envs):
    py = envs["healthy"]
    assert load_error(py, cusparse(py)) == ""              # oracle: the real loader
    r = diagnose(str(py), environment_checks=False)
    assert bad(r) == [], [f.message for f in bad(r)]
    assert {g.package.split(" ")[0] for g in r.gpu_code} >= {"nvidia-cusparse-cu12", "nvidia-cufile-cu12"}


def test_version_skew_between_two_wheels(envs):
    py = envs["skew"]
    err = load_error(py, cusparse(py))
    m = re.search(r"undefined symbol: (\S+), version (\S+)", err)
    assert m, err                                         # __nvJitLinkComplete_12_4, version libnvJitLink.so.12
    r = diagnose(str(py), environment_checks=False)
    skew = by_code(r, "VERSION_SKEW")
    assert len(skew) == 1 and skew[0].severity == Severity.ERROR
    d = skew[0].details
    assert m.group(1).rstrip(",") in d["symbols_needed"] and d["library"] == m.group(2)
    assert d["needs_api"] == [12, 4] and d["has_api"] == [12, 1]
    assert d["loads_package"] == "nvidia-nvjitlink-cu12 12.1.105"
    assert "nvidia-nvjitlink-cu12>=12.4" in skew[0].fix
    assert r.failed


def test_stale_ld_library_path_shadows_the_wheel(envs, cli):
    py, stale = envs["healthy"], envs["stale"]
    env = {"LD_LIBRARY_PATH": str(stale)}
    assert "undefined symbol: __nvJitLink" in load_error(py, cusparse(py), env)   # the loader agrees
    r = diagnose(str(py), environment_checks=False, env_changes=env)
    shadow = by_code(r, "SHADOWED")
    assert shadow and shadow[0].details["loads"] == str(stale / "libnvJitLink.so.12")
    assert shadow[0].details["expected_package"] == "nvidia-nvjitlink-cu12 12.9.86"
    assert str(stale) in shadow[0].fix and "LD_LIBRARY_PATH" in shadow[0].fix
    assert by_code(r, "VERSION_SKEW")
    # the same through the command line, and --unset undoes a variable of the caller
    res = cli("doctor", "--python", str(py), "--env", f"LD_LIBRARY_PATH={stale}", "--json", "--quiet")
    assert res.exit_code == 1
    assert res.json()["environment"] == {"LD_LIBRARY_PATH": str(stale)}
    res = cli("doctor", "--python", str(py), "--unset", "LD_LIBRARY_PATH", "--json", "--quiet",
              env={"LD_LIBRARY_PATH": str(stale)})
    assert res.exit_code == 0 and res.json()["environment"] == {"LD_LIBRARY_PATH": None}
    assert not {f["code"] for f in res.json()["findings"]} & {"SHADOWED", "VERSION_SKEW"}


def test_a_shadowing_copy_is_named_as_the_loader_names_it(envs, tmp_path):
    """LD_LIBRARY_PATH through a symlink (/home -> /data): the loader names the library by the
    path it searched, and so does the finding."""
    py, stale = envs["healthy"], envs["stale"]
    link = tmp_path / "linked-stale"
    link.symlink_to(stale)
    env = {"LD_LIBRARY_PATH": str(link)}
    listing = subprocess.run(["/lib64/ld-linux-x86-64.so.2", "--list", str(cusparse(py))], capture_output=True,
                             text=True, timeout=60, env=dict(os.environ, **env)).stdout
    assert f"libnvJitLink.so.12 => {link}/libnvJitLink.so.12 " in listing      # the real loader
    r = diagnose(str(py), environment_checks=False, env_changes=env)
    shadow = by_code(r, "SHADOWED")
    assert shadow and f"resolves to {link}/libnvJitLink.so.12 " in shadow[0].message
    assert str(link) in shadow[0].fix


def test_bad_env_option_is_a_usage_error(cli):
    res = cli("doctor", "--env", "NOEQUALS")
    assert res.exit_code == 2 and "KEY=VALUE" in res.stderr


HOLDER = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stddef.h>
/* opens an NVIDIA library by name, as cuDNN and cuBLASLt do, and says which file it got */
const char *mlt_open(void) {
    void *h = dlopen("libnvJitLink.so.12", RTLD_NOW | RTLD_LOCAL);
    struct link_map *lm = NULL;
    if (h == NULL || dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0) return dlerror();
    return lm->l_name;
}
"""


@pytest.fixture(scope="module")
def holder(envs, cbuild):
    """A library in the healthy environment whose DT_RUNPATH reaches the nvJitLink wheel."""
    py = envs["healthy"]
    d = site(py) / "mltholder"
    d.mkdir(exist_ok=True)
    lib = cbuild.build("libholder.so", HOLDER, shared=True, flags=["-Wl,-rpath,$ORIGIN/../nvidia/nvjitlink/lib",
                                                                  "-Wl,--enable-new-dtags"], libs=["-ldl"])
    target = d / "libholder.so"
    target.write_bytes(lib.read_bytes())
    return target


def real_dlopen(python: Path, lib: Path, env=None) -> str:
    code = ("import ctypes; lib = ctypes.CDLL(%r); lib.mlt_open.restype = ctypes.c_char_p; "
            "print(lib.mlt_open().decode())" % str(lib))
    proc = run_python(python, code, env)
    assert proc.returncode == 0, proc.stderr
    return os.path.realpath(proc.stdout.strip())


def test_dlopen_by_name_resolves_as_the_loader_does(envs, holder):
    py, stale = envs["healthy"], envs["stale"]
    for env in ({}, {"LD_LIBRARY_PATH": str(stale)}):
        want = real_dlopen(py, holder, env)                # oracle: the real dlopen from that library
        r = diagnose(str(py), environment_checks=False, env_changes=env)
        got = [d for d in r.dlopens if d.holder == str(holder) and d.name == "libnvJitLink.so.12"]
        assert got and os.path.realpath(got[0].path) == want, (env, got, want)
    # with the stale copy first, the library opened by name is the stale one: SHADOWED
    shadow = [f for f in by_code(r, "SHADOWED") if f.details["path"] == str(holder)]
    assert shadow and shadow[0].details["via"] == "ld_library_path"


@pytest.fixture(scope="module")
def pip_checked(envs, tmp_path_factory):
    """The skew environment plus a package whose Requires-Dist it contradicts."""
    py = envs["skew"]
    dist = site(py) / "mlt_needs-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mlt-needs\nVersion: 1.0\n"
                                   "Requires-Dist: nvidia-nvjitlink-cu12>=12.4\n"
                                   "Requires-Dist: nvidia-cuda-runtime-cu12==12.9.*\n"
                                   "Requires-Dist: nvidia-cublas-cu12; extra == \"blas\"\n"
                                   "Provides-Extra: blas\n")
    (dist / "RECORD").write_text("mlt_needs-1.0.dist-info/METADATA,,\nmlt_needs-1.0.dist-info/RECORD,,\n")
    return py


def test_requirements_against_pip_check(pip_checked):
    py = pip_checked
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "check"], capture_output=True,
                          text=True, timeout=120)
    oracle = proc.stdout
    assert "nvidia-nvjitlink-cu12" in oracle and "nvidia-cuda-runtime-cu12" in oracle, oracle
    r = diagnose(str(py), environment_checks=False)
    mismatch = by_code(r, "REQUIREMENT_MISMATCH")
    missing = by_code(r, "REQUIREMENT_MISSING")
    assert [f.details["name"] for f in mismatch] == ["nvidia-nvjitlink-cu12"]
    assert [f.details["name"] for f in missing] == ["nvidia-cuda-runtime-cu12"]
    assert "cublas" not in oracle and not any("cublas" in f.message for f in mismatch + missing)  # extra not in use


def test_gpu_code_against_chosen_gpus(envs, cli):
    py = envs["healthy"]
    res = cli("doctor", "--python", str(py), "--gpu-arch", "sm_80,sm_90", "--json", "--quiet")
    doc = res.json()
    assert [g["name"] for g in doc["gpus"]] == ["sm_80", "sm_90"]
    # libcufile.so.0: SASS sm_60..sm_86 + PTX compute_80 (cuobjdump agrees, test_fatbin): on 9.0 only PTX
    ptx_only = [f for f in doc["findings"] if f["code"] == "PTX_ONLY"]
    assert [f["details"]["gpu"] for f in ptx_only if "libcufile.so.0" in f["message"]] == ["sm_90"]
    assert not any(f["code"] == "NO_KERNEL_IMAGE" for f in doc["findings"])
    res = cli("doctor", "--python", str(py), "--gpu-arch", "sm_50", "--json", "--quiet")
    none = [f for f in res.json()["findings"] if f["code"] == "NO_KERNEL_IMAGE"]
    assert none and all(f["severity"] == "error" for f in none) and res.exit_code == 1
    res = cli("doctor", "--gpu-arch", "gfx90a")
    assert res.exit_code == 2 and "--gpu-arch" in res.stderr


def test_ptx_newer_than_the_driver(envs):
    """cuSPARSE 12.3's PTX is ISA 8.4 (CUDA 12.4): a 535 driver cannot JIT it for a GPU without SASS."""
    from mltools.doctor.gpucode import gpu_code_findings, parse_gpu_arch
    from mltools.doctor.owners import OwnerIndex
    from mltools.elf.fatbin import read_gpu_code

    lib = cusparse(envs["healthy"])
    code = read_gpu_code(str(lib))
    assert code.newest_ptx_isa == (8, 4)
    owners = OwnerIndex([str(site(envs["healthy"]))])
    gpu = parse_gpu_arch("sm_100")
    codes = {f.code for f in gpu_code_findings({str(lib): code}, {}, owners, gpu, "535.104.05")}
    assert codes == {"PTX_NEWER_THAN_DRIVER"}
    assert {f.code for f in gpu_code_findings({str(lib): code}, {}, owners, gpu, "570.86.10")} == {"PTX_ONLY"}
    assert gpu_code_findings({str(lib): code}, {}, owners, parse_gpu_arch("sm_90"), "535.104.05") == []


PF_MODULE = r"""
#include <Python.h>
int __nvJitLinkGetErrorLogSize_12_0(void *, size_t *);
void *mltpf_uses = (void *)&__nvJitLinkGetErrorLogSize_12_0;
static struct PyModuleDef def_ = {PyModuleDef_HEAD_INIT, "mltpf", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_mltpf(void) { return PyModule_Create(&def_); }
"""


def test_modules_loaded_after_cuda_pathfinder(envs, cbuild, tmp_path_factory):
    """CuPy's way: an extension module with no search path to the wheel, imported after
    cuda.pathfinder.load_nvidia_dynamic_lib() mapped the library. Oracle: the real imports."""
    root = tmp_path_factory.mktemp("pf")
    py = cuda_wheels.make_env(root / "env", ["nvjitlink", "pathfinder"])
    sp = site(py)
    jit_dir = sp / "nvidia/nvjitlink/lib"
    mod = cbuild.build("mltpf.so", PF_MODULE, shared=True,
                       flags=[f"-I{PY_INCLUDE}", f"-L{jit_dir}", "-Wl,--no-as-needed", "-l:libnvJitLink.so.12"])
    (sp / "mltpf.so").write_bytes(mod.read_bytes())
    dist = sp / "mlt_pf-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mlt-pf\nVersion: 1.0\nRequires-Dist: cuda-pathfinder\n")
    (dist / "RECORD").write_text("mltpf.so,,\nmlt_pf-1.0.dist-info/METADATA,,\nmlt_pf-1.0.dist-info/RECORD,,\n")
    alone = run_python(py, "import mltpf")
    assert alone.returncode != 0 and "libnvJitLink.so.12" in alone.stderr
    after = run_python(py, "import cuda.pathfinder as p; p.load_nvidia_dynamic_lib('nvJitLink'); import mltpf")
    assert after.returncode == 0, after.stderr
    r = diagnose(str(py), environment_checks=False)
    notes = [f for f in by_code(r, "NEEDS_PRELOAD") if f.details["path"].endswith("mltpf.so")]
    assert notes and notes[0].severity == Severity.INFO
    assert notes[0].details["missing_alone"] == ["libnvJitLink.so.12"]
    assert not [f for f in bad(r) if "mltpf" in f.message]


def test_torch_preload_list_read_from_torch_source(envs, tmp_path):
    """torch's own _preload_cuda_deps, run with ctypes.CDLL recorded, picks the files the model
    names. The source is the installed torch's (CPU builds ship the same function)."""
    torch_init = next((Path(p) / "torch/__init__.py" for p in sys.path if (Path(p) / "torch/__init__.py").is_file()),
                      None)
    if torch_init is None:
        pytest.skip("needs torch installed")
    from mltools.doctor.frameworks import read_frameworks

    sp = site(envs["healthy"])
    fake = tmp_path / "site"
    (fake / "torch/lib").mkdir(parents=True)
    (fake / "torch/__init__.py").write_text(torch_init.read_text())
    (fake / "torch/version.py").write_text("__version__ = '9.9.9'\ncuda = '12.9'\n")
    deps = subprocess.run(["gcc", "-shared", "-fPIC", "-x", "c", "-", "-o", str(fake / "torch/lib/libtorch_global_deps.so"),
                           f"-L{sp}/nvidia/cuda_runtime/lib", "-Wl,--no-as-needed", "-l:libcudart.so.12"], input="int x;\n",
                          capture_output=True, text=True)
    assert deps.returncode == 0, deps.stderr
    # a stand-in file for each library of torch's list that no wheel here ships (the model
    # and torch's code only look for names)
    pairs = re.findall(r'\("(\w+)", "(lib[\w.+-]+)\.so\.\*\[0-9\]"\)', torch_init.read_text())
    assert pairs, "torch's cuda_libs list not found"
    for folder, stem in pairs:
        if not list((sp / "nvidia" / folder / "lib").glob(f"{stem}.so.*")):
            d = fake / "nvidia" / folder / "lib"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{stem}.so.12").write_bytes(b"")
    tree = ast.parse(torch_init.read_text())
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)
             and n.name in ("_get_cuda_dep_paths", "_preload_cuda_lib", "_preload_cuda_deps")]
    if len(funcs) != 3:
        pytest.skip("this torch has another preload layout")
    source = "\n".join(ast.get_source_segment(torch_init.read_text(), f) for f in funcs)
    # torch's functions, with ctypes.CDLL recording what they load
    runner = ("from __future__ import annotations\n"
              "import sys, types, glob, os, platform, json\n"
              "sys.modules['torch'] = types.ModuleType('torch')\n"
              "v = types.ModuleType('torch.version'); v.cuda = '12.9'; sys.modules['torch.version'] = v\n"
              "loaded = []\n"
              "class ctypes:\n    @staticmethod\n    def CDLL(p, *a, **k): loaded.append(p)\n")
    runner += source.replace("from __future__ import annotations", "")
    # as torch's _load_global_deps calls it once libcudart is mapped (2.14: best effort; 2.13: the
    # first missing library raises, and the caller swallows it)
    runner += ("\nimport inspect\nsys.path[:0] = [%r, %r]\n"
               "kw = {'required': False} if 'required' in inspect.signature(_preload_cuda_deps).parameters else {}\n"
               "try:\n    _preload_cuda_deps(**kw)\nexcept Exception:\n    pass\n"
               "print(json.dumps(loaded))\n" % (str(fake), str(sp)))
    proc = subprocess.run([sys.executable, "-c", runner],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    oracle = json.loads(proc.stdout)
    model = read_frameworks([str(fake), str(sp)], [str(fake), str(sp)], {"torch": "9.9.9"})
    assert len(model.preloads) == 1
    got = list(model.preloads[0].paths)
    assert got[0].endswith("libtorch_global_deps.so") and got[1:] == oracle
    assert len(oracle) >= len(pairs) and any(p.endswith("libnvJitLink.so.12") for p in oracle)
