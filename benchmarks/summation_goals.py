"""The speed goals of mltools.summation as ratios to numpy.sum on the same array.

Runs every case in one process, interleaving the methods (one calibrated batch
of each per round) and keeping the min of the rounds, so a noisy, shared
machine hurts both sides alike. Prints a table (and --json FILE) with the
machine, the kernel ISA and the goal each ratio is checked against.

    python benchmarks/summation_goals.py            # n = 1e6 and 1e8 (needs ~2.5 GB)
    python benchmarks/summation_goals.py --small    # n = 1e6 and 1e7
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time

import numpy as np

import mltools.summation as S
from mltools.env import cpu_model_name as cpu_model
from mltools.summation.bench import time_interleaved

# (case, method, goal on the ratio to the reference, reference)
GOALS = {
    ("f64", "neumaier"): 1.0, ("f64", "kahan"): 1.0, ("f64", "pairwise"): 1.0,
    ("f32", "pairwise"): 0.6, ("f32", "kahan"): 0.6, ("f32", "neumaier"): 0.6,
    ("axis0", "pairwise"): 1.5, ("axis0", "kahan"): 1.5, ("axis0", "neumaier"): 1.5,
    ("axis0", "sum2"): 1.5, ("axis0", "exact"): 1.5, ("axis0", "naive"): 1.5,
}
EXACT_GOAL = {"cache": 5.0, "memory": 3.0}


def run(n: int, repeats: int, min_time: float, fsum_max: int, clock: str):
    rng = np.random.default_rng(0)
    where = "cache" if n <= 4 * 10**6 else "memory"
    rows = []

    def record(case, ref_name, results, ref, nbytes, goal_of):
        t_ref = min(results[ref][0])
        for name, (ts, _k) in results.items():
            t = min(ts)
            goal = goal_of(name)
            ratio = t / t_ref
            rows.append(dict(case=case, n=n, where=where, method=name, reference=ref_name,
                             ns_per_element=t / n * 1e9, gb_per_s=nbytes / t / 1e9,
                             ratio=ratio, goal=goal,
                             meets=None if goal is None else ratio <= goal))

    # float64, 1-D contiguous
    x = rng.random(n)
    funcs = {"numpy.sum": lambda: np.sum(x)}
    for m in S.METHODS:
        funcs[m] = (lambda m=m: S.sum(x, method=m))
    res = time_interleaved(funcs, repeats, min_time, clock)
    record("f64", "numpy.sum(x)", res, "numpy.sum", x.nbytes,
           lambda name: EXACT_GOAL[where] if name == "exact" else GOALS.get(("f64", name)))
    if n <= fsum_max:
        lst_time = time_interleaved({"exact": lambda: S.exact_sum(x),
                                     "math.fsum": lambda: math.fsum(x.tolist())}, 3, min_time, clock)
        t_fsum = min(lst_time["math.fsum"][0])
        t_exact = min(lst_time["exact"][0])
        rows.append(dict(case="f64", n=n, where=where, method="exact vs math.fsum(x.tolist())",
                         reference="math.fsum", ns_per_element=t_exact / n * 1e9,
                         gb_per_s=x.nbytes / t_exact / 1e9, ratio=t_fsum / t_exact, goal=20.0,
                         meets=t_fsum / t_exact >= 20.0, speedup=True))
    del x
    # float32 input, float64 accumulation (the default)
    x32 = rng.random(n).astype(np.float32)
    funcs = {"numpy.sum": lambda: np.sum(x32),
             "numpy.sum(dtype=float64)": lambda: np.sum(x32, dtype=np.float64)}
    for m in ("pairwise", "kahan", "neumaier", "exact"):
        funcs[m] = (lambda m=m: S.sum(x32, method=m))
    res = time_interleaved(funcs, repeats, min_time, clock)
    record("f32", "numpy.sum(x32)", res, "numpy.sum", x32.nbytes,
           lambda name: GOALS.get(("f32", name)))
    del x32
    # axis=0 of a C-ordered (n/2, 2) float64 array
    a = rng.random((n // 2, 2))
    funcs = {"numpy.sum": lambda: np.sum(a, axis=0)}
    for m in S.METHODS:
        funcs[m] = (lambda m=m: S.sum(a, method=m, axis=0))
    res = time_interleaved(funcs, repeats, min_time, clock)
    record("axis0", "numpy.sum(a, axis=0)", res, "numpy.sum", a.nbytes,
           lambda name: GOALS.get(("axis0", name)))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="n = 1e6 and 1e7 instead of 1e6 and 1e8")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.05)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: this thread's CPU time, steadier when other processes share the cores")
    ap.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = ap.parse_args(argv)
    sizes = (10**6, 10**7) if args.small else (10**6, 10**8)
    started = time.time()
    rows = []
    for n in sizes:
        rows += run(n, args.repeats, args.min_time, fsum_max=10**7, clock=args.clock)
    machine = dict(cpu=cpu_model(), isa=S.active_isa(), isas_available=S.available_isas(),
                   numpy=np.__version__, python=platform.python_version(),
                   clock=args.clock, seconds=round(time.time() - started, 1))
    print(f"# {machine['cpu']}; kernels {machine['isa']} (available {', '.join(machine['isas_available'])}); "
          f"numpy {machine['numpy']}; Python {machine['python']}; min of {args.repeats} interleaved rounds, "
          f"{args.clock} clock")
    print("| case | n | method | ns/elem | GB/s | ratio | goal | met |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["method"] in ("numpy.sum",):
            ratio = "1"
        else:
            ratio = f"{r['ratio']:.2f}" + ("× faster" if r.get("speedup") else "")
        goal = "-" if r["goal"] is None else ((">= " if r.get("speedup") else "<= ") + f"{r['goal']:g}")
        met = "-" if r["meets"] is None else ("yes" if r["meets"] else "**no**")
        print(f"| {r['case']} ({r['where']}) | {r['n']:.0e} | {r['method']} | {r['ns_per_element']:.3f} "
              f"| {r['gb_per_s']:.1f} | {ratio} | {goal} | {met} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
