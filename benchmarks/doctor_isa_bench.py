#!/usr/bin/env python3
"""doctor's CPU-instruction scan of a whole venv, cold and cached, against objdump in one run.

The environment: the numpy + scipy + torch (CPU) venv of doctor_bench.py
(created on first use). Each round runs, interleaved:

- ``mltools doctor --python VENV/bin/python --json -j N`` with an empty cache
  (``XDG_CACHE_HOME`` a fresh directory): every x86-64 ELF file decoded;
- the same again on the filled cache (the second run of a user);
- ``mltools doctor ... --no-isa``: the rest of doctor, to separate the scan's share;

and once (it takes minutes), the reference way to see the instructions:
``objdump -d --no-show-raw-insn`` over the same files, N at a time, output
discarded. Reported: wall seconds, CPU seconds of the children (the steadier
figure on a shared machine), the ``isa`` timing doctor reports, best of the
rounds with the spread, the load average, and the machine. Usage:

    python benchmarks/doctor_isa_bench.py [--venv DIR] [--rounds 3] [--jobs 2] [--no-objdump]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _harness import child_cpu_s, timed  # noqa: E402 (benchmarks/ is on sys.path as the script dir)
from doctor_bench import ensure_venv  # noqa: E402

from mltools.env import describe_machine  # noqa: E402


def mltools_argv():
    exe = shutil.which("mltools")
    return [exe] if exe else [sys.executable, "-m", "mltools"]


def doctor(py: str, jobs: int, cache: str, *extra: str):
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    proc, wall, cpu = timed([*mltools_argv(), "doctor", "--python", py, "--json", "-j", str(jobs), *extra], env=env)
    doc = json.loads(proc.stdout)
    return doc, wall, cpu


def objdump_all(files, jobs: int):
    cpu0, t0 = child_cpu_s(), time.perf_counter()
    running = []
    for f in files:
        running.append(subprocess.Popen(["objdump", "-d", "--no-show-raw-insn", f], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        while len(running) >= jobs:
            running.pop(0).wait()
    for p in running:
        p.wait()
    return time.perf_counter() - t0, child_cpu_s() - cpu0


def spread(values):
    return f"{min(values):.2f} (max {max(values):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--venv", default="/tmp/doctor-bench-venv")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-objdump", action="store_true")
    args = ap.parse_args()
    py = ensure_venv(args.venv)
    print(describe_machine(), file=sys.stderr)
    rows = {"cold": [], "warm": [], "no-isa": []}
    last = {}
    for r in range(args.rounds):
        cache = tempfile.mkdtemp(prefix="mltools-isa-bench-")
        try:
            for kind, extra in (("cold", ()), ("warm", ()), ("no-isa", ("--no-isa",))):
                doc, wall, cpu = doctor(py, args.jobs, cache, *extra)
                isa = doc["timings_s"].get("isa", 0.0)
                rows[kind].append((wall, cpu, isa, os.getloadavg()[0]))
                last[kind] = doc
                print(f"round {r + 1} {kind}: wall {wall:.2f} s, CPU {cpu:.2f} s, isa {isa:.2f} s, "
                      f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    isa = last["cold"]["isa"]
    files = sorted({f["path"] for f in isa["files"]})
    from mltools.doctor.isa import _is_x86_64_elf
    from mltools.elf.files import SITE, walk_elf_candidates
    from mltools.python import probe_interpreter
    all_files = [c.path for c in walk_elf_candidates(probe_interpreter(py).sys_path, mode=SITE).candidates
                 if _is_x86_64_elf(c.path)]
    print(f"\nvenv: {args.venv} ({len(all_files)} x86-64 ELF files, {isa['code_bytes'] / 1e6:.0f} MB of code, "
          f"{len(files)} using extensions), jobs {args.jobs}, rounds {args.rounds}")
    print("| run | wall s | CPU s (children) | doctor's isa timing s | load avg |")
    print("| --- | --- | --- | --- | --- |")
    for kind, label in (("cold", "`mltools doctor` first run (empty cache)"),
                        ("warm", "`mltools doctor` second run (cache filled)"),
                        ("no-isa", "`mltools doctor --no-isa`")):
        w, c, i, load = zip(*rows[kind])
        print(f"| {label} | {spread(w)} | {spread(c)} | {spread(i)} | {min(load):.2f}-{max(load):.2f} |")
    if not args.no_objdump:
        wall, cpu = objdump_all(all_files, args.jobs)
        print(f"| `objdump -d` over the same files, {args.jobs} at a time (once) | {wall:.2f} | {cpu:.2f} | - | "
              f"{os.getloadavg()[0]:.2f} |")


if __name__ == "__main__":
    main()
