#!/usr/bin/env python3
"""CPU figure for `mltools bench shakeshake`: fast vs reference in one run.

Both implementations train the same model in alternating timed rounds inside
one process (`--impl both`), so machine noise hits both alike. Prints the
rate over all rounds, the best round of each, and the median of per-round
ratios. Usage: python benchmarks/shakeshake_cpu.py [--width 32] [--batch-size 32]
[--steps 20] [--rounds 10] [--threads N]
"""
import argparse
import statistics

import torch

from mltools.shakeshake.bench import BenchConfig, run_benchmark


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=26)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = BenchConfig(depth=a.depth, width=a.width, batch_size=a.batch_size, steps=a.steps,
                      warmup=a.warmup, device="cpu", rounds=a.rounds)
    r = run_benchmark(cfg)
    by = {i.impl: i for i in r.implementations}
    ref, fast = by["reference"], by["fast"]
    per_round = [f / g for f, g in zip(fast.round_images_per_s, ref.round_images_per_s) if g > 0]
    print(f"device: {r.device_name}; torch {r.versions['torch']}")
    print(f"model: Shake-Shake-{r.depth} 2x{r.width}d, batch {r.batch_size}, {r.steps} timed steps "
          f"in {len(per_round)} alternating rounds, {r.warmup} warm-up")
    print("| impl | train img/s (all rounds) | best round img/s | eval img/s | step p50 ms |")
    print("|---|---|---|---|---|")
    for i in (ref, fast):
        print(f"| {i.impl} | {i.images_per_s:.1f} | {max(i.round_images_per_s):.1f} | "
              f"{i.eval_images_per_s:.1f} | {i.step_ms.p50_ms:.1f} |")
    print(f"fast/reference: all rounds {r.speedup:.3f}x; best round "
          f"{max(fast.round_images_per_s) / max(ref.round_images_per_s):.3f}x; median of per-round ratios "
          f"{statistics.median(per_round):.3f}x (range {min(per_round):.2f}-{max(per_round):.2f})")


if __name__ == "__main__":
    main()
