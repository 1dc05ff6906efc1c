#!/usr/bin/env python3
"""Speed and findings of `mltools cython check` next to cython-lint, in one run.

    python benchmarks/cython_check_bench.py TREE [--files 60 | --paths DIR...] [--rounds 3]
        [-- extra mltools options such as -I . -E NAME=VALUE --cplus]

Picks the first N .pyx files of TREE (sorted paths; build dirs and venvs
skipped), or with --paths the directories given (relative to TREE, checked as
a whole: .pyx and .pxd, as a project's CI would), then runs, from TREE,
interleaved in every round, as separate processes:
  * mltools cython check (typed, the default; worker processes chosen automatically)
  * mltools cython check -j 1 (typed, one process)
  * mltools cython check --no-types
  * cython-lint (pip install cython-lint; the reference, parse-only) on the same .pyx files
and prints best-of wall times and the ratio, the CPU time of each (best-of
and median), and what each tool reported. cython-lint has no cast rules, so
the findings are compared by count and kind, not line by line.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys

from _harness import timed  # noqa: E402 (benchmarks/ is on sys.path as the script dir)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from mltools.env import describe_machine  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree")
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--paths", nargs="*", default=None)
    ap.add_argument("--rounds", type=int, default=3)
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.extra = extra

    from mltools.cythoncheck import find_sources
    tree = os.path.abspath(args.tree)
    os.chdir(tree)
    if args.paths:
        files = [f for f in find_sources(args.paths) if f.endswith(".pyx")]
        targets = list(args.paths)
    else:
        files = [os.path.relpath(f) for f in find_sources(["."]) if f.endswith(".pyx")][: args.files]
        targets = files
    if not files:
        print(f"no .pyx files under {args.tree}", file=sys.stderr)
        return 2
    lint = shutil.which("cython-lint")
    if lint is None:
        print("cython-lint is not installed: pip install cython-lint", file=sys.stderr)
        return 2
    mltools = [sys.executable, "-m", "mltools", "cython", "check", "--format", "json", *args.extra]
    tools = {
        "mltools typed": mltools + targets,
        "mltools typed -j 1": mltools + ["-j", "1"] + targets,
        "mltools --no-types": mltools + ["--no-types"] + targets,
        "cython-lint": [lint, *files],
    }
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    walls = {k: [] for k in tools}
    cpus = {k: [] for k in tools}
    last = {}
    for _ in range(args.rounds):
        for name, argv in tools.items():        # interleaved: every tool once per round
            proc, wall, c = timed(argv, env=env)
            walls[name].append(wall)
            cpus[name].append(c)
            last[name] = proc
    best = {k: min(v) for k, v in walls.items()}
    cpu = {k: min(v) for k, v in cpus.items()}

    print(f"machine: {describe_machine()}, "
          f"load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}")
    import Cython
    what = f"{' '.join(targets)} ({len(files)} .pyx and their .pxd)" if args.paths else f"{len(files)} .pyx"
    print(f"files: {what} under {args.tree}; Cython {Cython.__version__}; "
          f"cython-lint {subprocess.run([lint, '--version'], capture_output=True, text=True).stdout.strip()}")
    print(f"rounds: {args.rounds}, interleaved; best-of wall time and the CPU time of that tool")
    ref = best["cython-lint"]
    for name in tools:
        print(f"  {name:20s} wall {best[name]:6.2f} s (median {statistics.median(walls[name]):6.2f})  "
              f"cpu {cpu[name]:6.2f} s (median {statistics.median(cpus[name]):6.2f})  "
              f"({best[name] / ref:4.2f}x cython-lint's wall)")

    for name in ("mltools typed", "mltools --no-types"):
        proc = last[name]
        if proc.returncode not in (0, 1):
            print(f"  {name}: exit {proc.returncode}: {proc.stderr.strip()[:300]}")
            continue
        doc = json.loads(proc.stdout)
        counts = collections.Counter(f["code"] for f in doc["findings"])
        print(f"  {name} findings: {sum(counts.values())} {dict(sorted(counts.items()))}")
        for f in doc["findings"][:20]:
            print(f"    {f['path']}:{f['line']}:{f['col']}: {f['code']} {f['severity']}: {f['message'][:100]}")
    out = last["cython-lint"].stdout.splitlines()
    kinds = collections.Counter(re.sub(r"^.*?:\d+:\d+: ", "", l).split("'")[0].strip() for l in out if l.strip())
    print(f"  cython-lint findings: {len(out)} (exit {last['cython-lint'].returncode}); "
          f"kinds: {dict(kinds.most_common(8))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
