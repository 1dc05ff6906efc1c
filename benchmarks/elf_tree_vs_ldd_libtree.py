#!/usr/bin/env python3
"""`mltools elf tree` over every dynamic ELF in a directory, against an `ldd` loop and libtree.

All three run in one process of this script, interleaved round by round (the
order rotates), and the best time of each is compared: our machines are shared
and noisy. mltools (its console script, as people run it) and libtree get every
file in one process; ldd is a shell script that runs the loader once per file,
so it runs once per file.

    python benchmarks/elf_tree_vs_ldd_libtree.py [--dir /usr/bin] [--rounds 3]

Prints one JSON document with the timings (wall and the children's CPU time,
which a loaded machine distorts less), the ratios and the machine. mltools is
byte-compiled first, as an installed package is.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mltools.elf.reader import ElfFormatError, read_elf  # noqa: E402
from mltools.env import describe_machine  # noqa: E402


def dynamic_elves(directory: str):
    out = []
    for name in sorted(os.listdir(directory)):
        p = os.path.join(directory, name)
        if not os.path.isfile(p):
            continue
        try:
            with open(p, "rb") as fh:
                if fh.read(4) != b"\x7fELF":
                    continue
            info = read_elf(p)
        except (OSError, ElfFormatError):
            continue
        if info.has_dynamic and info.elf_class == 64 and info.machine == 62:
            out.append(p)
    return out


def timed(argv_list, env=None):
    """(wall seconds, CPU seconds of the child processes: user + system)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    for argv in argv_list:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/usr/bin")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--with-lddtree", action="store_true",
                    help="also time pax-utils lddtree (Python; minutes for /usr/bin)")
    args = ap.parse_args()
    files = dynamic_elves(args.dir)
    # Byte-compile mltools first, as pip does on install: a source checkout run under
    # PYTHONDONTWRITEBYTECODE would otherwise recompile its modules in every process.
    import compileall
    compileall.compile_dir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mltools"),
                           quiet=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    env["LC_ALL"] = "C"
    script = os.path.join(os.path.dirname(sys.executable), "mltools")      # as people run it
    mlt = [script] if os.path.exists(script) else [sys.executable, "-m", "mltools"]
    runners = {
        "mltools elf tree": [[*mlt, "elf", "tree", "--clean-env", *files]],
        "mltools elf tree --json": [[*mlt, "elf", "tree", "--json", "--clean-env", *files]],
        "mltools elf tree --flat": [[*mlt, "elf", "tree", "--flat", "--clean-env", *files]],
        "mltools elf tree --json -j 2": [[*mlt, "elf", "tree", "--json", "-j", "2", "--clean-env", *files]],
        "ldd loop": [["ldd", f] for f in files],
    }
    if shutil.which("libtree"):
        runners["libtree"] = [["libtree", *files]]
        runners["libtree -p -vvv"] = [["libtree", "-p", "-vvv", *files]]
    if args.with_lddtree and shutil.which("lddtree"):
        runners["lddtree (pax-utils)"] = [["lddtree", *files]]
    best = {k: float("inf") for k in runners}
    best_cpu = {k: float("inf") for k in runners}
    names = list(runners)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            wall, cpu = timed(runners[name], env)
            best[name] = min(best[name], wall)
            best_cpu[name] = min(best_cpu[name], cpu)
        print(f"round {r + 1}: " + ", ".join(f"{k} {best[k]:.3f}s" for k in names), file=sys.stderr)
    # in-process: the library API with one shared Resolver (no interpreter start, no output)
    from mltools.elf.ldtree import Resolver, resolve_tree
    api_best = float("inf")
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        res = Resolver()
        for f in files:
            resolve_tree(f, resolver=res, env={})
        api_best = min(api_best, time.perf_counter() - t0)
    ours = best["mltools elf tree --json"]
    doc = {
        "schema": "mltools.bench.elf_tree", "version": 1,
        "machine": {"description": describe_machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "glibc": platform.libc_ver()[1]},
        "directory": args.dir, "files": len(files), "rounds": args.rounds,
        "load_average": os.getloadavg(),
        "best_s": {**{k: round(v, 4) for k, v in best.items()}, "resolve_tree API (in-process)": round(api_best, 4)},
        "best_cpu_s": {k: round(v, 4) for k, v in best_cpu.items()},
        "ratios": {"ldd loop / mltools": round(best["ldd loop"] / ours, 1)},
        "cpu_ratios": {"ldd loop / mltools": round(best_cpu["ldd loop"] / best_cpu["mltools elf tree --json"], 1)},
    }
    if "libtree" in best_cpu:
        for name in ("mltools elf tree", "mltools elf tree --json"):
            doc["cpu_ratios"][f"{name} / libtree"] = round(best_cpu[name] / max(best_cpu["libtree"], 1e-3), 1)
    if "libtree" in best:
        doc["ratios"]["mltools / libtree"] = round(ours / best["libtree"], 1)
        doc["ratios"]["mltools / libtree -p -vvv"] = round(ours / best["libtree -p -vvv"], 1)
    if "lddtree (pax-utils)" in best:
        doc["ratios"]["lddtree / mltools"] = round(best["lddtree (pax-utils)"] / ours, 1)
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
