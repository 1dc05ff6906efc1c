#!/usr/bin/env python3
"""mltools doctor on stock ML environments (must be quiet) and broken variants of each (must not be).

Stock environments (give them with --venv NAME=DIR; by default NAME under
$MLTOOLS_BENCH_VENVS, /opt/venvs when unset, see docs/benchmarks.md):

- torch-cuda: ``pip install torch==2.14.1 torchvision==0.29.1`` (CUDA 13 build, 5.5 GB)
- torch-cpu:  ``pip install torch==2.13.0`` (the CPU build) and numpy
- jax-cuda:   ``pip install "jax[cuda12]"``
- cupy:       ``pip install "cupy-cuda12x[ctk]"``

Each must give 0 errors and 0 warnings. Each broken variant is a hard-linked
copy of the venv (``cp -al``: nothing of the stock venv changes) with one
thing broken, or the stock venv seen through ``--env``:

- missing wheel: one NVIDIA wheel's files (from its RECORD) removed;
- deleted library: one library file removed;
- stale LD_LIBRARY_PATH: a directory holding another copy of a CUDA library.

Every variant is also checked with the real loader or the real import in the
variant's own interpreter (the oracle column), so a finding is shown to be
about something that really breaks. Timing: wall and CPU seconds of the
whole ``mltools doctor --python ... --json`` process (static pass with the
GPU-code listing and the environment checks), best of --rounds, interleaved
over the environments, with the load average.

    python benchmarks/doctor_cuda_stock.py [--rounds 3] [--json OUT]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

from _harness import timed  # noqa: E402 (benchmarks/ is on sys.path as the script dir)

from mltools.env import describe_machine  # noqa: E402

VENVS_DIR = os.environ.get("MLTOOLS_BENCH_VENVS", "/opt/venvs")
DEFAULTS = {name: os.path.join(VENVS_DIR, name) for name in ("torch-cuda", "torch-cpu", "jax-cuda", "cupy")}


def site(venv: str) -> str:
    out = subprocess.run([os.path.join(venv, "bin", "python"), "-c", "import site; print(site.getsitepackages()[0])"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def mltools_argv() -> List[str]:
    exe = shutil.which("mltools")
    return [exe] if exe else [sys.executable, "-m", "mltools"]


def doctor(venv: str, extra=(), env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    e.update(env or {})
    proc, wall, cpu = timed([*mltools_argv(), "doctor", "--python", os.path.join(venv, "bin", "python"), "--json",
                             "--quiet", *extra], env=e)
    doc = json.loads(proc.stdout)
    counts = {s: sum(1 for f in doc["findings"] if f["severity"] == s) for s in ("error", "warning", "info")}
    codes = sorted({f["code"] for f in doc["findings"] if f["severity"] != "info"})
    return {"exit": proc.returncode, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), **counts, "codes": codes,
            "static_s": doc["timings_s"].get("static"), "elf_files": doc["elf_files"],
            "gpu_code_files": sum(g["files"] for g in doc["gpu_code"])}


def oracle(venv: str, code: str, env=None) -> str:
    """The last line the real interpreter prints (its error, or 'ok ...')."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    e.update(env or {})
    wrapped = ("import sys\ntry:\n" + "".join(f"    {line}\n" for line in code.split("; ")) +
               "except BaseException as exc:\n    print('FAILS', type(exc).__name__ + ':', exc)\n    sys.exit(1)\n")
    proc = subprocess.run([os.path.join(venv, "bin", "python"), "-c", wrapped], capture_output=True, text=True,
                          env=e, timeout=600)
    out = proc.stdout.strip()
    if proc.returncode:
        fails = out[out.find("FAILS"):] if "FAILS" in out else proc.stderr.strip()[-300:]
        return " ".join(fails.split())          # an exception message may span lines (cuda-pathfinder's do)
    lines = [x for x in out.splitlines() if x]
    return "ok" + (f": {lines[-1]}" if lines else "")


def copy_venv(src: str, dest: str) -> str:
    subprocess.run(["cp", "-al", src, dest], check=True)      # hard links: the stock venv is untouched
    return dest


def remove_dist(venv: str, dist_prefix: str) -> List[str]:
    """Remove the files a distribution's RECORD lists (as pip uninstall would), keep nothing else."""
    sp = site(venv)
    removed = []
    for entry in os.listdir(sp):
        if entry.lower().startswith(dist_prefix.lower().replace("-", "_")) and entry.endswith(".dist-info"):
            with open(os.path.join(sp, entry, "RECORD"), newline="") as fh:
                for row in csv.reader(fh):
                    p = os.path.normpath(os.path.join(sp, row[0]))
                    if os.path.isfile(p) or os.path.islink(p):
                        os.unlink(p)
                        removed.append(p)
    return removed


def variants(name: str, venv: str, work: str, others: Dict[str, str]):
    """(label, how, doctor kwargs, oracle code, oracle env) for each broken variant."""
    sp = site(venv)
    out = []
    if name == "torch-cuda":
        v = copy_venv(venv, os.path.join(work, "torch-cuda-nocudnn"))
        remove_dist(v, "nvidia_cudnn_cu13")
        out.append(("missing wheel", "nvidia-cudnn-cu13 removed", v, {}, "import torch", None))
        v = copy_venv(venv, os.path.join(work, "torch-cuda-nocnn"))
        os.unlink(os.path.join(site(v), "nvidia/cudnn/lib/libcudnn_cnn.so.9"))
        out.append(("deleted library", "nvidia/cudnn/lib/libcudnn_cnn.so.9 deleted", v, {},
                    "import ctypes, torch; ctypes.CDLL('libcudnn_cnn.so.9')", None))
        if "jax-cuda" in others:
            stale = os.path.join(site(others["jax-cuda"]), "nvidia/cudnn/lib")
            out.append(("stale LD_LIBRARY_PATH", f"LD_LIBRARY_PATH={stale} (cuDNN 9 of CUDA 12)", venv,
                        {"LD_LIBRARY_PATH": stale},
                        "import ctypes, torch; ctypes.CDLL(%r); ctypes.CDLL('libcudnn_heuristic.so.9')"
                        % os.path.join(sp, "nvidia/cudnn/lib/libcudnn_graph.so.9"), {"LD_LIBRARY_PATH": stale}))
    elif name == "torch-cpu":
        v = copy_venv(venv, os.path.join(work, "torch-cpu-noc10"))
        os.unlink(os.path.join(site(v), "torch/lib/libc10.so"))
        out.append(("deleted library", "torch/lib/libc10.so deleted", v, {}, "import torch", None))
        if "torch-cuda" in others:
            stale = os.path.join(site(others["torch-cuda"]), "torch/lib")
            out.append(("stale LD_LIBRARY_PATH", f"LD_LIBRARY_PATH={stale} (another torch's libraries)", venv,
                        {"LD_LIBRARY_PATH": stale}, "import torch; print(torch.__version__)",
                        {"LD_LIBRARY_PATH": stale}))
    elif name == "jax-cuda":
        v = copy_venv(venv, os.path.join(work, "jax-nocublas"))
        remove_dist(v, "nvidia_cublas_cu12")
        out.append(("missing wheel", "nvidia-cublas-cu12 removed", v, {},
                    "import ctypes, glob; ctypes.CDLL(glob.glob(%r)[0])"
                    % os.path.join(site(v), "jax_plugins/xla_cuda12/xla_cuda_plugin.so"), None))
        v = copy_venv(venv, os.path.join(work, "jax-noengines"))
        os.unlink(os.path.join(site(v), "nvidia/cudnn/lib/libcudnn_engines_precompiled.so.9"))
        out.append(("deleted library", "nvidia/cudnn/lib/libcudnn_engines_precompiled.so.9 deleted", v, {},
                    "import ctypes; ctypes.CDLL(%r); ctypes.CDLL('libcudnn_engines_precompiled.so.9')"
                    % os.path.join(site(v), "nvidia/cudnn/lib/libcudnn_graph.so.9"), None))
        if "torch-cuda" in others:
            stale = os.path.join(site(others["torch-cuda"]), "nvidia/cudnn/lib")
            out.append(("stale LD_LIBRARY_PATH", f"LD_LIBRARY_PATH={stale} (cuDNN 9 of CUDA 13)", venv,
                        {"LD_LIBRARY_PATH": stale},
                        "import ctypes; ctypes.CDLL(%r); ctypes.CDLL('libcudnn_engines_precompiled.so.9')"
                        % os.path.join(sp, "nvidia/cudnn/lib/libcudnn_graph.so.9"), {"LD_LIBRARY_PATH": stale}))
    elif name == "cupy":
        v = copy_venv(venv, os.path.join(work, "cupy-nocublas"))
        remove_dist(v, "nvidia_cublas_cu12")
        out.append(("missing wheel", "nvidia-cublas-cu12 removed", v, {},
                    "import cupy; from cupy_backends.cuda.libs import cublas", None))
        v = copy_venv(venv, os.path.join(work, "cupy-nocusparse"))
        os.unlink(os.path.join(site(v), "nvidia/cusparse/lib/libcusparse.so.12"))
        out.append(("deleted library", "nvidia/cusparse/lib/libcusparse.so.12 deleted", v, {},
                    "import cupy; from cupy_backends.cuda.libs import cusparse", None))
        if "jax-cuda" in others:
            stale = os.path.join(site(others["jax-cuda"]), "nvidia/cuda_nvrtc/lib")
            out.append(("stale LD_LIBRARY_PATH", f"LD_LIBRARY_PATH={stale} (another NVRTC 12)", venv,
                        {"LD_LIBRARY_PATH": stale},
                        "import ctypes; ctypes.CDLL(%r); h = ctypes.CDLL('libnvrtc.so.12'); "
                        "print('loads', [l.split()[-1] for l in open('/proc/self/maps') if 'libnvrtc.so' in l][0])"
                        % os.path.join(sp, "nvidia/cublas/lib/libcublasLt.so.12"), {"LD_LIBRARY_PATH": stale}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()
    venvs = dict(DEFAULTS)
    for item in args.venv:
        k, _, v = item.partition("=")
        venvs[k] = v
    absent = sorted(k for k, v in venvs.items() if not os.path.exists(os.path.join(v, "bin", "python")))
    if absent:
        print(f"skipped (no bin/python): {', '.join(f'{k} ({venvs[k]})' for k in absent)}", file=sys.stderr)
    venvs = {k: v for k, v in venvs.items() if k not in absent}
    if not venvs:
        sys.exit("no environment to measure: give --venv NAME=DIR or set MLTOOLS_BENCH_VENVS")
    print(describe_machine(), f"load average {os.getloadavg()[0]:.1f}", sep="; ")
    results = {"machine": describe_machine(), "stock": {}, "variants": []}
    best: Dict[str, Optional[dict]] = {k: None for k in venvs}
    for _ in range(args.rounds):            # interleaved over the environments
        for name, venv in venvs.items():
            r = doctor(venv)
            r["load"] = round(os.getloadavg()[0], 1)
            if best[name] is None or r["wall_s"] < best[name]["wall_s"]:
                best[name] = r
    print(f"\n{'environment':12} {'errors':>6} {'warns':>5} {'notes':>5} {'exit':>4} {'ELF':>4} {'GPU':>4} "
          f"{'wall s':>6} {'CPU s':>6} {'load':>5}")
    for name, r in best.items():
        results["stock"][name] = r
        print(f"{name:12} {r['error']:>6} {r['warning']:>5} {r['info']:>5} {r['exit']:>4} {r['elf_files']:>4} "
              f"{r['gpu_code_files']:>4} {r['wall_s']:>6} {r['cpu_s']:>6} {r['load']:>5}")
    with tempfile.TemporaryDirectory(prefix="mltools-variants-", dir=os.path.dirname(next(iter(venvs.values())))) as work:
        print("\nbroken variants (must not be quiet); oracle: the real loader / import in the variant")
        for name, venv in venvs.items():
            for label, how, v, env, code, oenv in variants(name, venv, work, venvs):
                r = doctor(v, extra=[x for k, val in env.items() for x in ("--env", f"{k}={val}")])
                o = oracle(v, code, oenv)
                results["variants"].append({"environment": name, "variant": label, "how": how, **r, "oracle": o})
                print(f"- {name} / {label} ({how}): {r['error']} errors, {r['warning']} warnings, exit {r['exit']}; "
                      f"{', '.join(r['codes']) or '-'}\n    oracle: {o[:200]}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
