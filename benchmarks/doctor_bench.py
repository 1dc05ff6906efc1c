#!/usr/bin/env python3
"""mltools doctor's static pass against the shell loop it replaces, in one run.

The environment: a venv with numpy, scipy and torch (created on first use with
``pip install torch==2.13.0 scipy``, the local CPU build of torch). Each round
runs, interleaved:

- ``mltools doctor --python VENV/bin/python --json`` (static pass and
  environment checks, one process);
- ``ldd -r FILE`` for every ELF file doctor scanned, one process per file (the
  usual ``find site-packages -name '*.so' | xargs -n1 ldd -r``): the loader
  itself, with relocations processed, so it reports missing libraries and
  undefined symbols, but for extension modules outside Python's context;
- ``libtree -p FILE...`` over the same files (dependency resolution only).

Wall and CPU seconds (children's user+sys) are reported best-of-N, with the
load average, since the machine is shared. Usage:

    python benchmarks/doctor_bench.py [--venv DIR] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

from _harness import timed  # noqa: E402 (benchmarks/ is on sys.path as the script dir)

from mltools.env import describe_machine  # noqa: E402


def ensure_venv(path: str) -> str:
    py = os.path.join(path, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "torch==2.13.0", "scipy"], check=True)
    return py


def run_doctor(py: str):
    mltools = [shutil.which("mltools")] if shutil.which("mltools") else [sys.executable, "-m", "mltools"]
    proc, wall, cpu = timed([*mltools, "doctor", "--python", py, "--json"])
    doc = json.loads(proc.stdout)
    return doc, wall, cpu


def run_ldd_r(files):
    wall = cpu = 0.0
    missing = undefined = 0
    for f in files:
        proc, w, c = timed(["ldd", "-r", f], env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
        wall += w
        cpu += c
        out = proc.stdout + proc.stderr
        missing += out.count("=> not found")
        undefined += out.count("undefined symbol:")
    return wall, cpu, missing, undefined


def run_libtree(files):
    proc, wall, cpu = timed(["libtree", "-p", *files])
    return wall, cpu, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", default="/tmp/doctor-bench-venv")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    py = ensure_venv(args.venv)
    versions = subprocess.run([py, "-c", "import numpy, scipy, torch; print(numpy.__version__, scipy.__version__, "
                               "torch.__version__)"], capture_output=True, text=True).stdout.split()
    doc, _, _ = run_doctor(py)        # warm the page cache, get the file list
    from mltools.elf.files import SITE, walk_elf_candidates
    from mltools.python import probe_interpreter
    files = [c.path for c in walk_elf_candidates(probe_interpreter(py).sys_path, mode=SITE).candidates]
    best = {}
    facts = {}
    for r in range(args.rounds):
        doc, w, c = run_doctor(py)
        best.setdefault("doctor", []).append((w, c, doc["timings_s"].get("static", 0.0)))
        facts["doctor"] = doc
        w, c, missing, undefined = run_ldd_r(files)
        best.setdefault("ldd -r loop", []).append((w, c, None))
        facts["ldd"] = (missing, undefined)
        w, c, rc = run_libtree(files)
        best.setdefault("libtree -p (one process)", []).append((w, c, None))
        facts["libtree_rc"] = rc
        print(f"round {r + 1}/{args.rounds} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    d = facts["doctor"]
    sev = {s: sum(1 for f in d["findings"] if f["severity"] == s) for s in ("error", "warning", "info")}
    print(f"machine: {describe_machine()}, load average now "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"environment: {args.venv} (numpy {versions[0] if versions else '?'}, scipy "
          f"{versions[1] if len(versions) > 1 else '?'}, torch {versions[2] if len(versions) > 2 else '?'}); "
          f"{d['elf_files']} ELF files, {d['extension_modules']} extension modules, {d['distributions']} distributions")
    print()
    print("| tool | best wall s | best CPU s | what it reports |")
    print("| --- | ---: | ---: | --- |")
    dw = min(x[0] for x in best["doctor"])
    dc = min(x[1] for x in best["doctor"])
    ds = min(x[2] for x in best["doctor"])
    print(f"| `mltools doctor` (static pass {ds:.2f} s of it) | {dw:.2f} | {dc:.2f} | "
          f"{sev['error']} errors, {sev['warning']} warnings, {sev['info']} notes: "
          f"{', '.join(sorted({f['code'] for f in d['findings']}))} |")
    lw = min(x[0] for x in best["ldd -r loop"])
    lc = min(x[1] for x in best["ldd -r loop"])
    print(f"| `ldd -r` per file | {lw:.2f} | {lc:.2f} | {facts['ldd'][0]} 'not found' lines, "
          f"{facts['ldd'][1]} 'undefined symbol' lines (Python API symbols included) |")
    tw = min(x[0] for x in best["libtree -p (one process)"])
    tc = min(x[1] for x in best["libtree -p (one process)"])
    print(f"| `libtree -p` all files | {tw:.2f} | {tc:.2f} | exit {facts['libtree_rc']} "
          f"(dependencies only) |")
    print()
    print(f"doctor vs ldd -r loop: {lw / dw:.1f}x less wall time, {lc / dc:.1f}x less CPU")


if __name__ == "__main__":
    main()
