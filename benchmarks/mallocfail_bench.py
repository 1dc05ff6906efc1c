"""malloc-fail overhead and sweep speed, against glibc alone and libfiu's fiu-run.

Part 1, per-call cost: mallocfail_pairs.c (malloc(32) + write + free in 1 and
2 threads, each thread's own CPU ns per pair) runs under
  - glibc alone,
  - `mltools malloc-fail` (the real command; the index is never reached),
  - `mltools malloc-fail --per-thread`,
  - `fiu-run -x -f ""` (libfiu's POSIX preload, nothing enabled),
  - `fiu-run -x -c "enable_random name=libc/mm/malloc,probability=0"`,
interleaved round by round; best of ROUNDS per variant, ratios from the bests.

Part 2, sweep: a C target with 1,001 failure points, swept with fork mode
and with re-runs (`--no-fork`), interleaved; points per second.

Part 3, sweep of CPython start-up (`python -c "x = [1]"`, first 150 points):
fork mode with 2 children in flight, with 1, and re-runs; best of 2.

Run: python benchmarks/mallocfail_bench.py [--rounds 5] [--iters 2000000]
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

from mltools.env import describe_machine  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

SWEEP_TARGET = r"""#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 500;
    char **keep = malloc(sizeof(char *) * (size_t)n);
    if (!keep) return 2;
    for (int i = 0; i < n; i++) {
        keep[i] = malloc(16 + (size_t)i % 64);
        if (!keep[i]) return 3;
        char *tmp = calloc(4, 8);
        if (!tmp) return 4;
        free(tmp);
    }
    for (int i = 0; i < n; i++) free(keep[i]);
    free(keep);
    return 0;
}
"""


def mltools_cmd() -> list:
    exe = shutil.which("mltools")
    return [exe] if exe else [sys.executable, "-m", "mltools"]


def run_pairs(prefix: list, binary: str, threads: int, iters: int) -> float:
    out = subprocess.run(prefix + [binary, str(threads), str(iters)], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{prefix} failed: {out.stderr[-300:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=2_000_000)
    ap.add_argument("--sweep-n", type=int, default=500)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mf-bench-")
    pairs = os.path.join(work, "pairs")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", pairs, os.path.join(HERE, "mallocfail_pairs.c")], check=True)
    fiu = shutil.which("fiu-run")
    mf = mltools_cmd() + ["malloc-fail", "--fail-at", str(10 ** 15), "--"]
    variants = {
        "glibc": [],
        "mltools": mf,
        "mltools --per-thread": mltools_cmd() + ["malloc-fail", "--per-thread", "--fail-at", str(10 ** 15), "--"],
    }
    if fiu:
        variants["fiu-run -x"] = [fiu, "-x", "-f", ""]
        variants["fiu-run -x p=0"] = [fiu, "-x", "-f", "", "-c", "enable_random name=libc/mm/malloc,probability=0"]
    print(f"machine: {describe_machine()}")
    print(f"per pair: malloc(32)+write+free, {args.iters} iterations per thread, best of {args.rounds}")
    best = {(v, t): float("inf") for v in variants for t in (1, 2)}
    for _ in range(args.rounds):
        for t in (1, 2):
            for name, prefix in variants.items():
                best[(name, t)] = min(best[(name, t)], run_pairs(prefix, pairs, t, args.iters))
    print(f"{'variant':<22} {'1T ns':>8} {'2T ns':>8} {'1T/glibc':>9} {'2T/glibc':>9} {'fiu/this 1T':>12} {'fiu/this 2T':>12}")
    for name in variants:
        row = [best[(name, 1)], best[(name, 2)]]
        r1, r2 = row[0] / best[("glibc", 1)], row[1] / best[("glibc", 2)]
        f1 = f2 = ""
        if fiu:
            f1 = f"{best[('fiu-run -x', 1)] / row[0]:.2f}"
            f2 = f"{best[('fiu-run -x', 2)] / row[1]:.2f}"
        print(f"{name:<22} {row[0]:>8.2f} {row[1]:>8.2f} {r1:>9.2f} {r2:>9.2f} {f1:>12} {f2:>12}")

    # ---- sweep throughput: fork mode vs re-run mode, interleaved
    src = os.path.join(work, "sweep_target.c")
    with open(src, "w") as fh:
        fh.write(SWEEP_TARGET)
    target = os.path.join(work, "sweep_target")
    subprocess.run(["gcc", "-O1", "-g", "-o", target, src], check=True)
    sweep_best = {"fork": float("inf"), "rerun": float("inf")}
    points = 0
    for _ in range(max(1, min(args.rounds, 3))):
        for mode, flag in (("fork", "--fork"), ("rerun", "--no-fork")):
            t0 = time.perf_counter()
            out = subprocess.run(mltools_cmd() + ["malloc-fail", "--sweep", flag, "--json", "--", target,
                                                  str(args.sweep_n)], capture_output=True, text=True, timeout=3600)
            elapsed = time.perf_counter() - t0
            doc = json.loads(out.stdout)
            points = doc["points_run"]
            sweep_best[mode] = min(sweep_best[mode], elapsed)
    print(f"sweep of {points} points (C target, {args.sweep_n} iterations): "
          f"fork {sweep_best['fork']:.2f} s ({points / sweep_best['fork']:.0f} points/s), "
          f"re-run {sweep_best['rerun']:.2f} s ({points / sweep_best['rerun']:.0f} points/s), "
          f"fork is {sweep_best['rerun'] / sweep_best['fork']:.1f}x faster")

    py = os.path.realpath(sys.executable)
    py_best = {}
    for _ in range(2):
        for mode, flags in (("fork -j2", ["--fork", "-j", "2"]), ("fork -j1", ["--fork", "-j", "1"]),
                            ("re-run -j2", ["--no-fork", "-j", "2"])):
            t0 = time.perf_counter()
            out = subprocess.run(mltools_cmd() + ["malloc-fail", "--sweep", "--json", "--max-points", "150",
                                                  *flags, "--", py, "-c", "x = [1]"],
                                 capture_output=True, text=True, timeout=3600)
            elapsed = time.perf_counter() - t0
            doc = json.loads(out.stdout)
            py_best[mode] = min(py_best.get(mode, float("inf")), elapsed)
            classes = doc["by_class"]
    print(f"CPython start-up sweep, 150 points ({classes}): "
          + ", ".join(f"{m} {t:.2f} s" for m, t in py_best.items()))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
