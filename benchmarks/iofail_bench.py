"""io-fail's cost on a tight write loop, and its sweep modes, against plain runs.

Part 1, per-call cost: iofail_write_loop.c (N x 64-byte write() to /dev/null
and to a tmpfs file; each run prints its own CPU ns per call) runs
  - plain,
  - under ``mltools io-fail`` with nothing failing (the real command; the index is never reached),
  - the same with ``--path`` matching the file (the descriptor's path cached after one readlink),
  - the same with ``--path`` matching nothing,
  - the shim preloaded directly with its path cache off (a readlink on every call: what the cache saves),
interleaved round by round; best and median of ROUNDS per variant, and the
median of the per-round ratios to the plain run of the same round.

Part 2, sweeps: a Python checkpoint writer (temporary file, fsync, rename, fsync
of the folder) swept with fork mode and with re-runs, interleaved, wall time;
with --torch also a torch.save writer, one sweep each.

Run: python benchmarks/iofail_bench.py [--rounds 15] [--calls 1000000] [--torch]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from mltools.env import describe_machine

HERE = os.path.dirname(os.path.abspath(__file__))

WRITER = '''import os, sys
folder, step = sys.argv[1], int(sys.argv[2])
path = os.path.join(folder, "ckpt.bin"); tmp = path + ".tmp"
with open(tmp, "wb") as f:
    for i in range(32):
        f.write(bytes([step % 256]) * 65536)
    f.flush(); os.fsync(f.fileno())
os.replace(tmp, path)
fd = os.open(folder, os.O_RDONLY); os.fsync(fd); os.close(fd)
'''
TORCH_WRITER = '''import os, sys
import torch
folder = sys.argv[1]
path = os.path.join(folder, "ckpt.pt"); tmp = path + ".tmp"
with open(tmp, "wb") as f:
    torch.save({"step": int(sys.argv[2]), "w": torch.full((200_000,), 1.0)}, f)
    f.flush(); os.fsync(f.fileno())
os.replace(tmp, path)
'''
TORCH_CHECK = '''import sys, torch
d = torch.load(sys.argv[1] + "/ckpt.pt")
sys.exit(0 if d["w"].shape == (200_000,) else 1)
'''
CHECK = '''import sys
data = open(sys.argv[1] + "/ckpt.bin", "rb").read()
sys.exit(0 if len(data) == 32 * 65536 and len(set(data)) == 1 else 1)
'''


def mltools_cmd() -> list:
    exe = shutil.which("mltools")
    return [exe] if exe else [sys.executable, "-m", "mltools"]


def run_loop(prefix, env, binary, path, calls):
    out = subprocess.run(prefix + [binary, path, str(calls), "64"], capture_output=True, text=True, env=env,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{prefix} failed: {out.stderr[-300:]}")
    wall, cpu = (float(x) for x in out.stdout.split()[-2:])
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--sweep-rounds", type=int, default=3)
    ap.add_argument("--torch", action="store_true", help="also sweep a torch.save writer (slow: torch imports)")
    args = ap.parse_args()
    from mltools.iofail.run import shim_path

    work = tempfile.mkdtemp(prefix="iof-bench-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    loop = os.path.join(work, "loop")
    subprocess.run(["gcc", "-O2", "-o", loop, os.path.join(HERE, "iofail_write_loop.c")], check=True)
    target_file = os.path.join(work, "f.bin")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLTOOLS_", "LD_PRELOAD"))}
    never = str(10 ** 15)
    iof = mltools_cmd() + ["io-fail", "--fail-at", never]
    variants = {
        "plain": ([], base),
        "io-fail": (iof + ["--"], base),
        "io-fail --path (matching)": (iof + ["--path", os.path.join(work, "*"), "--"], base),
        "io-fail --path (not matching)": (iof + ["--path", "/no/such/folder/*", "--"], base),
        "shim, readlink every call": ([], {**base, "LD_PRELOAD": shim_path(), "MLTOOLS_IOF_FIRST": never,
                                           "MLTOOLS_IOF_PATH": os.path.join(work, "*"), "MLTOOLS_IOF_NOCACHE": "1"}),
    }
    print(f"machine: {describe_machine()}")
    print(f"load average before: {os.getloadavg()}")
    print(f"per call: 64-byte write(), {args.calls} calls per run, {args.rounds} interleaved rounds")
    results = {}
    for dest in ("/dev/null", target_file):
        cpu = {v: [] for v in variants}
        wall = {v: [] for v in variants}
        for _ in range(args.rounds):
            for name, (prefix, env) in variants.items():
                w, c = run_loop(prefix, env, loop, dest, args.calls)
                wall[name].append(w)
                cpu[name].append(c)
        label = "tmpfs file" if dest != "/dev/null" else "/dev/null"
        print(f"\n{label}: CPU ns per call (best / median), x plain (best / median / median of paired ratios); "
              "wall median")
        rows = {}
        for name in variants:
            best, med = min(cpu[name]), statistics.median(cpu[name])
            paired = statistics.median(c / p for c, p in zip(cpu[name], cpu["plain"]))
            rb, rm = best / min(cpu["plain"]), med / statistics.median(cpu["plain"])
            rows[name] = {"cpu_best": best, "cpu_median": med, "ratio_best": rb, "ratio_median": rm,
                          "ratio_paired": paired, "wall_median": statistics.median(wall[name])}
            print(f"  {name:<32} {best:8.1f} / {med:8.1f}   x{rb:.3f} / x{rm:.3f} / x{paired:.3f}   "
                  f"wall {statistics.median(wall[name]):8.1f}")
        results[label] = rows
    print(f"load average after: {os.getloadavg()}")

    # ---- sweeps: fork mode (the process waits at its first eligible call) vs re-runs
    folder = os.path.join(work, "ckpt")
    os.mkdir(folder)
    with open(os.path.join(work, "writer.py"), "w") as fh:
        fh.write(WRITER)
    with open(os.path.join(work, "check.py"), "w") as fh:
        fh.write(CHECK)
    subprocess.run([sys.executable, os.path.join(work, "writer.py"), folder, "0"], check=True)
    common = ["--path", os.path.join(folder, "*"), "--state", folder,
              "--check", f"{sys.executable} {os.path.join(work, 'check.py')} {folder}"]
    best = {}
    points = None
    for _ in range(args.sweep_rounds):
        for mode in ("--fork", "--no-fork"):
            t0 = time.perf_counter()
            out = subprocess.run(mltools_cmd() + ["io-fail", "--sweep", "--json", mode, *common, "--",
                                                  sys.executable, os.path.join(work, "writer.py"), folder, "1"],
                                 capture_output=True, text=True, timeout=3600)
            elapsed = time.perf_counter() - t0
            doc = json.loads(out.stdout)
            points = doc["points_run"]
            best[mode] = min(best.get(mode, float("inf")), elapsed)
    print(f"\nsweep of a Python checkpoint writer, {points} points (best of {args.sweep_rounds}): "
          f"fork mode {best['--fork']:.2f} s, re-runs {best['--no-fork']:.2f} s, "
          f"x{best['--no-fork'] / best['--fork']:.2f}")
    if args.torch:
        sweep_torch(work)
    shutil.rmtree(work, ignore_errors=True)


def sweep_torch(work: str) -> None:
    """A torch.save writer: fork mode saves the writer's `import torch` for every point but the
    first (the checks import torch in both modes). One round each, fork mode first. The writer
    runs with OMP_NUM_THREADS=1: torch's OpenMP pool would make it multi-threaded, and fork mode
    is not used for a multi-threaded process."""
    folder = os.path.join(work, "tckpt")
    os.mkdir(folder)
    for name, text in (("twriter.py", TORCH_WRITER), ("tcheck.py", TORCH_CHECK)):
        with open(os.path.join(work, name), "w") as fh:
            fh.write(text)
    subprocess.run([sys.executable, os.path.join(work, "twriter.py"), folder, "0"], check=True)
    common = ["--path", os.path.join(folder, "*"), "--state", folder,
              "--check", f"{sys.executable} {os.path.join(work, 'tcheck.py')} {folder}"]
    times = {}
    for mode in ("--fork", "--no-fork"):
        t0 = time.perf_counter()
        out = subprocess.run(mltools_cmd() + ["io-fail", "--sweep", "--json", mode, *common, "--", sys.executable,
                                              os.path.join(work, "twriter.py"), folder, "1"],
                             capture_output=True, text=True, timeout=7200,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        times[mode] = time.perf_counter() - t0
        doc = json.loads(out.stdout)
        print(f"torch.save sweep {mode}: {doc['points_run']} points ({doc['forked']} forked), "
              f"{times[mode]:.1f} s, {doc['by_class']}")
    print(f"torch.save sweep: re-runs / fork mode = x{times['--no-fork'] / times['--fork']:.2f}")


if __name__ == "__main__":
    main()
