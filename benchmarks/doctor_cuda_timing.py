#!/usr/bin/env python3
"""How long doctor's static pass takes on a CUDA build of torch, and the GPU-code listing against cuobjdump.

- ``mltools doctor --python VENV/bin/python --json`` (the whole command: static
  pass with the dlopen names and the GPU-code listing, and the environment
  checks), best of --rounds with a warm page cache, and once after evicting
  the venv's files from the page cache (``posix_fadvise(DONTNEED)`` on every
  file: no root needed, and only clean pages are dropped);
- the GPU-code listing alone (``mltools.elf.fatbin``, headers only) against
  ``cuobjdump --list-elf --list-ptx`` (PyPI's nvidia-cuda-cuobjdump, or
  --cuobjdump) on every file that has GPU code, run one after the other; the
  per-(kind, target) counts must be equal.

Wall and CPU seconds, with the load average (the machine is shared).

    python benchmarks/doctor_cuda_timing.py [--venv /opt/venvs/torch-cuda] [--rounds 3] [--cuobjdump PATH]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time

from _harness import timed  # noqa: E402 (benchmarks/ is on sys.path as the script dir)

from mltools.env import describe_machine  # noqa: E402


def evict(top: str) -> int:
    n = 0
    for d, _dirs, files in os.walk(top):
        for f in files:
            p = os.path.join(d, f)
            try:
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                n += 1
            finally:
                os.close(fd)
    return n


def doctor(py: str):
    exe = shutil.which("mltools")
    argv = [exe] if exe else [sys.executable, "-m", "mltools"]
    proc, wall, cpu = timed([*argv, "doctor", "--python", py, "--json", "--quiet"])
    doc = json.loads(proc.stdout)
    return wall, cpu, doc


def cuobjdump_listing(exe: str, path: str) -> collections.Counter:
    out = subprocess.run([exe, "--list-elf", "--list-ptx", path], capture_output=True, text=True).stdout
    c = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"(ELF|PTX) file\s+\d+: .*\.(sm_\d+[af]?)\.(cubin|ptx)$", line)
        if m:
            c[(m.group(1), m.group(2))] += 1
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv", default=os.path.join(os.environ.get("MLTOOLS_BENCH_VENVS", "/opt/venvs"), "torch-cuda"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cuobjdump", default=shutil.which("cuobjdump"))
    ap.add_argument("--no-cold", action="store_true")
    args = ap.parse_args()
    py = os.path.join(args.venv, "bin", "python")
    print(describe_machine())
    runs = []
    for _ in range(args.rounds):
        wall, cpu, doc = doctor(py)
        runs.append((wall, cpu, os.getloadavg()[0], doc["timings_s"]))
    wall, cpu, load, t = min(runs)
    print(f"warm: best of {args.rounds}: {wall:.2f} s wall, {cpu:.2f} s CPU (load {load:.1f}); "
          f"all walls {[round(r[0], 2) for r in runs]}; static pass {t['static']:.2f} s = read+scan "
          f"{t.get('static.read', 0):.2f} + resolve {t.get('static.resolve', 0):.2f} + check "
          f"{t.get('static.check', 0):.2f} + CUDA {t.get('static.cuda', 0):.2f}")
    if not args.no_cold:
        n = evict(args.venv)
        wall, cpu, doc = doctor(py)
        t = doc["timings_s"]
        print(f"cold ({n} files evicted): {wall:.2f} s wall, {cpu:.2f} s CPU (load {os.getloadavg()[0]:.1f}); "
              f"static pass {t['static']:.2f} s, read+scan {t.get('static.read', 0):.2f} s")

    from mltools.elf.fatbin import read_gpu_code
    files = []
    for d, _dirs, names in os.walk(args.venv):
        for f in names:
            p = os.path.join(d, f)
            if ".so" in f and not os.path.islink(p):
                code = read_gpu_code(p)
                if code is not None and code.container == "elf":
                    files.append(p)
    t0, c0 = time.perf_counter(), time.process_time()
    mine = {p: read_gpu_code(p) for p in files}
    ours_wall, ours_cpu = time.perf_counter() - t0, time.process_time() - c0
    entries = sum(len(c.entries) for c in mine.values())
    print(f"GPU code: {len(files)} files, {entries} entries: mltools.elf.fatbin {ours_wall:.2f} s wall, "
          f"{ours_cpu:.2f} s CPU (warm)")
    if args.cuobjdump:
        differ = 0
        t0 = time.perf_counter()
        for p in files:
            theirs = cuobjdump_listing(args.cuobjdump, p)
            ours = collections.Counter()
            for e in mine[p].entries:
                if e.kind in ("sass", "ptx"):
                    num = e.target.split("_", 1)[1]
                    ours[("ELF", "sm_" + num.rstrip("f")) if e.kind == "sass" else ("PTX", "sm_" + num)] += 1
            if ours != theirs:
                differ += 1
                print(f"  differs: {p}: {dict(ours - theirs)} / {dict(theirs - ours)}")
        print(f"cuobjdump --list-elf --list-ptx on the same files: {time.perf_counter() - t0:.1f} s wall; "
              f"{len(files) - differ}/{len(files)} files identical per (kind, target)")


if __name__ == "__main__":
    main()
