#!/usr/bin/env python3
"""The GPU figure for `mltools bench numa --gpu`: pinned host<->device bandwidth per node.

One short prepared run for a CUDA machine (the headline comes first). In one
process, interleaved round by round:

  - mltools: the host buffer bound to each CPU node (mbind, first touch on the
    node's CPUs, move_pages check), pinned with cudaHostRegister, copy_(non_blocking);
  - the reference most code uses: ``torch.empty(n, pin_memory=True)`` with no NUMA
    binding (cudaHostAlloc from the calling thread), the same copies and events;
  - NVIDIA's nvbandwidth (host_to_device_memcpy_ce, device_to_host_memcpy_ce), when it
    is on PATH, as an outside reference for the copy-engine figures.

Prints min / median / max of the rounds for each, GB/s (1e9 B/s), and the machine
line. Without a CUDA build of torch it says so and exits 0 (nothing measured).

Usage: python benchmarks/numa_gpu_transfer.py [--size 256M] [--rounds 10] [--json]
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

from mltools.env import describe_machine  # noqa: E402
from mltools.numa.bench import parse_size  # noqa: E402
from mltools.numa.gpu_transfer import cpu_nodes_for_transfers, host_buffer  # noqa: E402
from mltools.numa.topology import read_topology  # noqa: E402


def one_copy(torch, dst, src, size):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    dst.copy_(src, non_blocking=True)
    end.record()
    end.synchronize()
    return size / (start.elapsed_time(end) * 1e-3) / 1e9


def spread(v):
    return {"min": round(min(v), 2), "median": round(statistics.median(v), 2), "max": round(max(v), 2)}


def nvbandwidth():
    exe = shutil.which("nvbandwidth")
    if not exe:
        return None
    out = {}
    for case in ("host_to_device_memcpy_ce", "device_to_host_memcpy_ce"):
        p = subprocess.run([exe, "-t", case], capture_output=True, text=True, timeout=300)
        out[case] = p.stdout[-2000:] if p.returncode == 0 else f"exit {p.returncode}: {p.stderr[-500:]}"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="256M")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    size = parse_size(a.size)
    try:
        import torch
    except ImportError:
        print("no torch: nothing measured")
        return 0
    if not torch.cuda.is_available():
        print(f"torch {torch.__version__} sees no CUDA device: nothing measured")
        return 0
    from mltools.numa import _numa

    topo = read_topology("/")
    pairs = cpu_nodes_for_transfers(topo, sorted(os.sched_getaffinity(0)), _numa.mems_allowed())
    results = []
    cudart = torch.cuda.cudart()
    for node, cpus in pairs:
        mapping, fraction = host_buffer(node, cpus, size)
        ours = torch.frombuffer(mapping.view(), dtype=torch.uint8)
        assert int(cudart.cudaHostRegister(mapping.address, size, 0)) == 0
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cpus)
        try:
            plain = torch.empty(size, dtype=torch.uint8, pin_memory=True)   # allocated from the node's CPUs too
            for g in range(torch.cuda.device_count()):
                dev = torch.empty(size, dtype=torch.uint8, device=f"cuda:{g}")
                figures = {k: [] for k in ("mltools_h2d", "mltools_d2h", "torch_pinned_h2d", "torch_pinned_d2h")}
                for k in range(2 + a.rounds):          # alternate the two buffers, round by round
                    for name, host in (("mltools", ours), ("torch_pinned", plain)):
                        h2d = one_copy(torch, dev, host, size)
                        d2h = one_copy(torch, host, dev, size)
                        if k >= 2:
                            figures[f"{name}_h2d"].append(h2d)
                            figures[f"{name}_d2h"].append(d2h)
                results.append({"cpu_node": node, "gpu": g, "gpu_name": torch.cuda.get_device_name(g),
                                "pages_on_node": fraction, **{k: spread(v) for k, v in figures.items()}})
                del dev
        finally:
            os.sched_setaffinity(0, before)
            torch.cuda.synchronize()
            cudart.cudaHostUnregister(mapping.address)
            del ours
    doc = {"machine": describe_machine(), "bytes": size, "rounds": a.rounds, "results": results,
           "nvbandwidth": nvbandwidth()}
    if a.json:
        print(json.dumps(doc, indent=1))
        return 0
    best = max(results, key=lambda r: r["mltools_h2d"]["median"])
    print(f"headline: node {best['cpu_node']} -> cuda:{best['gpu']} ({best['gpu_name']}): "
          f"H2D {best['mltools_h2d']['median']} GB/s, D2H {best['mltools_d2h']['median']} GB/s median "
          f"(torch pin_memory: {best['torch_pinned_h2d']['median']} / {best['torch_pinned_d2h']['median']})")
    print(doc["machine"])
    print("| cpu node | GPU | mltools H2D min/med/max | torch pinned H2D | mltools D2H | torch pinned D2H | pages on node |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        cell = lambda s: f"{s['min']}/{s['median']}/{s['max']}"  # noqa: E731
        print(f"| {r['cpu_node']} | {r['gpu']} | {cell(r['mltools_h2d'])} | {cell(r['torch_pinned_h2d'])} | "
              f"{cell(r['mltools_d2h'])} | {cell(r['torch_pinned_d2h'])} | {r['pages_on_node']} |")
    if doc["nvbandwidth"]:
        for case, text in doc["nvbandwidth"].items():
            print(f"\nnvbandwidth {case}:\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
