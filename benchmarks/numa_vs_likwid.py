#!/usr/bin/env python3
"""`mltools bench numa` kernels against likwid-bench, and its chase against plain C.

Bandwidth: for each kernel pair (ours / likwid-bench), the same working set
(likwid's -W N:<size>:<threads> is the total over all streams; ours gets
size / streams / threads per array per thread), the same thread count pinned
to the same CPUs, and the same number of iterations. likwid reports the mean
over its iterations, so ours is taken the same way (bytes of all repetitions
over their total time). Runs are interleaved, ours and likwid's alternating
which goes first, and the best of the rounds is compared: memory bandwidth on
a shared host moves 2-3x within seconds.

Latency: our pointer chase (library call) against benchmarks/numa_chase.c,
same ring size, 64-byte lines, THP, same CPU, interleaved; best (lowest)
median of the rounds.

    python benchmarks/numa_vs_likwid.py [--size 1GB] [--rounds 5] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from mltools._proc import run  # noqa: E402
from mltools.numa import _numa  # noqa: E402
from mltools.numa.bench import ARRAY_OFFSETS, counted_bytes, kernel_base, parse_size  # noqa: E402

# ours -> (likwid kernel stem, number of streams)
PAIRS = {
    "read": ("load", 1),
    "write": ("store", 1),
    "write_nt": ("store_mem", 1),
    "copy": ("copy", 2),
    "copy_nt": ("copy_mem", 2),
    "triad": ("stream", 3),
    "triad_nt": ("stream_mem", 3),
}


def cpu_name() -> str:
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def likwid_run(kernel: str, size_bytes: int, threads: int, iterations: int) -> float:
    """likwid-bench MByte/s (1e6 B/s, counted bytes, mean over its iterations)."""
    argv = ["likwid-bench", "-t", kernel, "-i", str(iterations), "-W", f"N:{size_bytes}B:{threads}"]
    res = run(argv, timeout=600)
    m = re.search(r"^MByte/s:\s*([\d.]+)", res.stdout, re.M)
    if res.returncode != 0 or not m:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return float(m.group(1)) / 1e3


class Ours:
    def __init__(self, total_bytes: int, streams: int, cpus, isa: str, huge: bool):
        self.cpus = list(cpus)
        self.n = total_bytes // streams // len(self.cpus) // 8
        self.maps = [_numa.Mapping(self.n * 8 * len(self.cpus), off) for off in ARRAY_OFFSETS]
        for m in self.maps:
            m.advise_huge_pages(huge)
        self.isa = isa

    def run(self, name: str, iterations: int):
        base, nt = kernel_base(name)
        secs, err = _numa.run_bandwidth(base, nt, self.isa, self.cpus, *self.maps, self.n, iterations, True)
        if err != 0.0:
            raise RuntimeError(f"{name}: validation failed ({err})")
        moved = counted_bytes(name) * self.n * len(self.cpus)
        return moved * iterations / sum(secs) / 1e9, max(moved / s for s in secs) / 1e9


def chase_ours(ring: int, steps: int, cpu: int) -> float:
    m = _numa.Mapping(ring)
    m.advise_huge_pages(True)
    ns = _numa.run_chase(cpu, m, ring // 64, 64, 0x5eed, True, 7, steps)
    return statistics.median(ns)


def chase_c(exe: str, ring: int, steps: int, cpu: int) -> float:
    res = run([exe, str(ring), str(steps), "7", str(cpu), "thp"], timeout=600)
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    return float(res.stdout.split()[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1GB", help="working set per kernel over all streams and threads (1GB)")
    ap.add_argument("--threads", type=int, default=None, help="threads (default: every usable CPU)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--kernels", default=",".join(PAIRS))
    ap.add_argument("--latency-size", default="256M")
    ap.add_argument("--latency-steps", type=int, default=1 << 21)
    ap.add_argument("--pages", choices=("4k", "thp"), default="4k",
                    help="our bandwidth buffers' pages; likwid-bench's plain allocation gets 4 KiB pages "
                         "when THP is 'madvise', so 4k is like for like (default)")
    args = ap.parse_args()

    if not shutil.which("likwid-bench"):
        print("likwid-bench is not installed (Debian: apt-get install likwid)", file=sys.stderr)
        return 2
    size = parse_size(args.size.replace("GB", "G").replace("MB", "M"))
    cpus = sorted(os.sched_getaffinity(0))
    threads = args.threads or len(cpus)
    cpus = cpus[:threads]
    isa = _numa.best_isa()
    suffix = {"avx512": "_avx512", "avx2": "_avx", "sse2": "_sse"}.get(isa, "")
    kernels = [k for k in args.kernels.split(",") if k]
    print(f"CPU: {cpu_name()}; our ISA {isa}; likwid suffix {suffix or '(scalar)'}; {threads} thread(s) on CPUs "
          f"{','.join(map(str, cpus))}; working set {size / 1e9:.2f} GB per kernel; {args.iterations} iterations; "
          f"{args.rounds} interleaved rounds; our pages {args.pages}")
    print("note: likwid-bench's -W N: domain pins to the first CPUs of the node, ours to the same CPUs")

    rows = []
    for name in kernels:
        stem, streams = PAIRS[name]
        lk = stem + suffix
        ours = Ours(size, streams, cpus, isa, args.pages == "thp")
        o_mean, o_best, l_mean = [], [], []
        for r in range(args.rounds):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for who in order:
                if who == 0:
                    mean, best = ours.run(name, args.iterations)
                    o_mean.append(mean)
                    o_best.append(best)
                else:
                    l_mean.append(likwid_run(lk, size, threads, args.iterations))
        del ours
        rows.append((name, lk, max(o_mean), max(l_mean), max(o_best)))
        print(f"  {name:9s} ours {max(o_mean):6.1f} GB/s (best rep {max(o_best):6.1f})   "
              f"{lk:18s} {max(l_mean):6.1f} GB/s   ratio {max(o_mean) / max(l_mean):.3f}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "numa_chase")
        subprocess.run(["gcc", "-O2", "-o", exe, str(HERE / "numa_chase.c")], check=True)
        ring = parse_size(args.latency_size)
        ours_ns, c_ns = [], []
        for r in range(args.rounds):
            for who in ((0, 1) if r % 2 == 0 else (1, 0)):
                if who == 0:
                    ours_ns.append(chase_ours(ring, args.latency_steps, cpus[0]))
                else:
                    c_ns.append(chase_c(exe, ring, args.latency_steps, cpus[0]))
    print(f"  chase     ours {min(ours_ns):6.1f} ns   plain C {min(c_ns):6.1f} ns   ratio {min(ours_ns) / min(c_ns):.3f}"
          f"   ({ring >> 20} MiB ring, THP, CPU {cpus[0]})")
    print("\n| kernel | likwid-bench kernel | ours GB/s | likwid GB/s | ours/likwid |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, lk, o, l, _ in rows:
        print(f"| {name} | {lk} | {o:.1f} | {l:.1f} | {o / l:.3f} |")
    print(f"| chase (ns, lower is better) | plain C | {min(ours_ns):.1f} | {min(c_ns):.1f} | "
          f"{min(ours_ns) / min(c_ns):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
