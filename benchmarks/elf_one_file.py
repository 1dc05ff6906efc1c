#!/usr/bin/env python3
"""One-file `mltools elf tree` / `elf inspect`: wall and CPU time per run, against libtree and ldd.

Each command runs as a new process, the way people run it, in interleaved
rounds (the order rotates); it reports the best and the median of wall time
and of the child's CPU time (user + system), which a loaded machine distorts
less, and the load average. `python -c pass` with the same interpreter is the
floor no Python tool goes under. With --instructions it also counts the
user-space instructions of one run of each under valgrind (cachegrind), which
the load does not change at all.

    python benchmarks/elf_one_file.py [--file /bin/ls] [--rounds 30] [--mltools PATH]... [--instructions]

--mltools names a console script to measure (default: the `mltools` next to
this interpreter), repeatable to compare installs (an editable development
install pays for its import finder at every start); its interpreter is read
from its first line. mltools is byte-compiled first, as pip does on install.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _harness import child_cpu_s  # noqa: E402 (benchmarks/ is on sys.path as the script dir)


def timed(argv, env):
    import time

    cpu0, t0 = child_cpu_s(), time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0, child_cpu_s() - cpu0


def instructions(argv, env):
    out = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                          *argv], capture_output=True, text=True, env=env).stderr
    for line in out.splitlines():
        if "I   refs:" in line or "I refs:" in line:
            return int(line.split(":")[1].replace(",", ""))
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", default="/bin/ls")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--mltools", action="append",
                    help="a console script to measure (repeatable: installs measured side by side); "
                         "default: the mltools next to this interpreter")
    ap.add_argument("--instructions", action="store_true", help="also count instructions under valgrind")
    args = ap.parse_args()
    scripts = args.mltools or [os.path.join(os.path.dirname(sys.executable), "mltools")]
    import compileall

    env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_", "MLTOOLS_"))}
    env["LC_ALL"] = "C"
    runs = {}
    installs = {}
    for script in scripts:
        with open(script) as fh:
            python = fh.readline()[2:].strip()
        probe = ("import mltools, os, sys; print(os.path.dirname(mltools.__file__)); "
                 "print(any(m.startswith('__editable__') for m in sys.modules))")
        pkg, editable = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                                       cwd="/").stdout.split()
        editable = editable == "True"               # setuptools' editable finder, loaded at every start
        compileall.compile_dir(pkg, quiet=1)        # as pip does on install
        tag = f"[{'editable' if editable else 'installed'}: {script}]"
        installs[tag] = {"python": python, "package": pkg, "editable": editable}
        runs[f"python -c pass (floor) {tag}"] = [python, "-c", "pass"]
        runs[f"mltools elf tree FILE {tag}"] = [script, "elf", "tree", args.file]
        runs[f"mltools elf tree --json FILE {tag}"] = [script, "elf", "tree", "--json", args.file]
        runs[f"mltools elf inspect FILE {tag}"] = [script, "elf", "inspect", args.file]
        runs[f"mltools elf inspect --json FILE {tag}"] = [script, "elf", "inspect", "--json", args.file]
    if shutil.which("libtree"):
        runs["libtree FILE"] = ["libtree", args.file]
    if shutil.which("ldd"):
        runs["ldd FILE"] = ["ldd", args.file]
    walls = {k: [] for k in runs}
    cpus = {k: [] for k in runs}
    names = list(runs)
    load = [os.getloadavg()]
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            w, c = timed(runs[name], env)
            walls[name].append(w)
            cpus[name].append(c)
    load.append(os.getloadavg())
    doc = {"schema": "mltools.bench.elf_one_file", "version": 1, "file": args.file, "rounds": args.rounds,
           "installs": installs, "load_average_before_after": load, "ms": {}}
    try:
        from mltools.env import describe_machine
        doc["machine"] = describe_machine()
    except Exception as exc:  # noqa: BLE001 - the figures still stand without the machine line
        doc["machine"] = f"unknown ({exc})"
    for name in names:
        doc["ms"][name] = {
            "wall_best": round(min(walls[name]) * 1000, 1),
            "wall_median": round(statistics.median(walls[name]) * 1000, 1),
            "cpu_best": round(min(cpus[name]) * 1000, 1), "cpu_median": round(statistics.median(cpus[name]) * 1000, 1)}
    if args.instructions and shutil.which("valgrind"):
        doc["instructions_millions"] = {name: round((instructions(argv, env) or 0) / 1e6, 1)
                                        for name, argv in runs.items() if not name.startswith("ldd")}
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
