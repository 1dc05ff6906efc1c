#!/usr/bin/env python3
"""The GPU figure for `mltools bench shakeshake`: 2x96d, batch 128, fast vs reference.

One short prepared run for an H100/H200 (or any CUDA GPU), at most --budget seconds
(default 540, under a 10-minute command limit; the headline run comes first):

  1. `--impl both` (torch defaults: TF32 cuDNN convolutions on for the reference;
     fast = fused branches, channels_last, bf16 autocast, torch.compile, fused SGD):
     the headline speed-up, both in the same process, alternating rounds.
  2. `--impl both --no-tf32`: the same with a true-fp32 reference (and fast).
  3. `--impl fast --fast-conv2 split`: two plain convolutions instead of one grouped one.
  4. `--impl fast --cuda-graphs`: torch.compile mode reduce-overhead.

Each run is a separate `python -m mltools bench shakeshake ... --json` with a
time limit; a failed or timed-out run is reported and the others still run.
The headline (speed-up, images/s, MFU with the peak it used and its source,
warm-up steps until steady, and whether NVML saw the GPU throttle) is printed
as soon as run 1 finishes, before the others start.
JSON documents go to $OUT (or a new /tmp/shakeshake-gpu-* folder); a markdown table for
docs/benchmarks.md is printed at the end. Needs python with a CUDA build of
torch and click; mltools is taken from this checkout (PYTHONPATH), no build needed.

Usage: python benchmarks/shakeshake_gpu.py [--gpu 0] [--steps 100] [--warmup 15] [--quick]
       python benchmarks/shakeshake_gpu.py --cpu-dry-run   # checks this script on a CPU, tiny model
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(tag, argv, outdir, timeout):
    cmd = [sys.executable, "-m", "mltools", "bench", "shakeshake", *argv, "--json"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.time()
    print(f"[{tag}] {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        print(f"[{tag}] timed out after {timeout} s", file=sys.stderr, flush=True)
        return None
    (outdir / f"{tag}.stderr").write_text(p.stderr)
    if p.returncode != 0:
        print(f"[{tag}] exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr, flush=True)
        return None
    (outdir / f"{tag}.json").write_text(p.stdout)
    print(f"[{tag}] done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return json.loads(p.stdout)


def headline(doc):
    """One line per implementation, then the GPU's state while timed: what to report first."""
    out = [f"HEADLINE {doc['device_name']}: fast / reference = "
           + (f"{doc['speedup']:.2f}x" if doc.get("speedup") is not None else "-")]
    for i in doc["implementations"]:
        peak = i.get("peak") or {}
        out.append(f"  {i['impl']}: {i['images_per_s']:,.0f} img/s ({i['precision']}), MFU "
                   + ("-" if i["mfu"] is None else f"{100 * i['mfu']:.1f}% of {peak.get('tflops')} TFLOP/s "
                      f"({peak.get('gpu')}, {peak.get('source')})")
                   + f"; warm-up {i.get('warmup_steps')} steps, settled {i.get('settled')}")
    for t in doc.get("telemetry") or ():
        sm = t.get("sm_clock_mhz") or {}
        out.append(f"  GPU while timed: SM {sm.get('min')}-{sm.get('max')} MHz of {t.get('max_sm_clock_mhz')}, "
                   f"power max {(t.get('power_w') or {}).get('max')} W of {t.get('power_limit_w')}, "
                   f"temperature max {(t.get('temperature_c') or {}).get('max')} C, "
                   + ("THROTTLED " + ",".join(t["throttle_reasons"]) if t["throttled"] else "not throttled"))
    for n in doc.get("notes") or ():
        out.append(f"  note: {n}")
    out.append(f"  noisy figures: {doc['run']['noisy_cases']} of {doc['run']['cases']}" if doc.get("run") else "")
    return "\n".join(out)


def rows(tag, doc):
    for i in doc["implementations"]:
        mfu = "-" if i["mfu"] is None else f"{100 * i['mfu']:.1f}% of {i['peak_tflops']} ({i['precision']})"
        mem = "-" if i["peak_memory_bytes"] is None else f"{i['peak_memory_bytes'] / 2**30:.2f}"
        yield (f"| {tag} | {i['impl']} | {i['precision']}{' channels_last' if i['channels_last'] else ''}"
               f"{' compiled' if i['compiled'] else ''}{' cuda-graphs' if i['cuda_graphs'] else ''}"
               f"{' conv2=' + i['second_conv'] if i['second_conv'] else ''} | {i['images_per_s']:,.0f} | "
               f"{max(i['round_images_per_s']):,.0f} | {i['eval_images_per_s']:,.0f} | {i['step_ms']['p50_ms']:.2f} | "
               f"{i['achieved_tflops']:.1f} | {mfu} | {mem} | {i['warmup_s']:.0f} ({i.get('warmup_steps')} steps) | "
               f"{'yes' if doc.get('throttled') else 'no'} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--timeout", type=int, default=300, help="seconds per run at most")
    ap.add_argument("--budget", type=int, default=540,
                    help="seconds for all runs together (runs that no longer fit are skipped)")
    ap.add_argument("--quick", action="store_true", help="only run 1 (the headline figure)")
    ap.add_argument("--cpu-dry-run", action="store_true", help="tiny model on the CPU, to test this script")
    a = ap.parse_args()
    if os.environ.get("OUT"):
        outdir = Path(os.environ["OUT"])
        outdir.mkdir(parents=True, exist_ok=True)
    else:
        import tempfile
        outdir = Path(tempfile.mkdtemp(prefix="shakeshake-gpu-"))
    common = ["--gpu", str(a.gpu), "--depth", "26", "--width", "96", "--batch-size", "128",
              "--steps", str(a.steps), "--warmup", str(a.warmup)]
    if a.cpu_dry_run:
        common = ["--device", "cpu", "--depth", "8", "--width", "4", "--batch-size", "4", "--steps", "2",
                  "--warmup", "1"]
    plan = [("both", ["--impl", "both"]),
            ("both-no-tf32", ["--impl", "both", "--no-tf32"]),
            ("fast-split", ["--impl", "fast", "--fast-conv2", "split"]),
            ("fast-cudagraphs", ["--impl", "fast", "--cuda-graphs"])]
    if a.cpu_dry_run:   # no TF32 or CUDA graphs on a CPU
        plan = [plan[0], plan[2]]
    if a.quick:
        plan = plan[:1]
    docs = {}
    start = time.time()
    for tag, extra in plan:
        left = a.budget - (time.time() - start)
        if left < 60:
            print(f"[{tag}] skipped: {left:.0f} s of the budget left", file=sys.stderr, flush=True)
            continue
        doc = run(tag, common + extra, outdir, int(min(a.timeout, left)))
        if doc is not None:
            docs[tag] = doc
            if len(docs) == 1:
                print(headline(doc), flush=True)
    if not docs:
        sys.exit("no run succeeded; see the .stderr files in " + str(outdir))
    first = next(iter(docs.values()))
    v = first["versions"]
    print(f"\nGPU: {first['device_name']}; driver {v.get('driver')}, CUDA {v.get('cuda')}, "
          f"cuDNN {v.get('cudnn')}, torch {v.get('torch')}")
    print(f"Shake-Shake-{first['depth']} 2x{first['width']}d ({first['params']:,} parameters, "
          f"{first['flops_per_image']['train'] / 1e9:.2f} GFLOP per training image), batch {first['batch_size']}, "
          f"{first['steps']} timed steps after at least {first['warmup']} warm-up (until steady), "
          "synthetic data on the device; "
          f"JSON in {outdir}\n")
    print("| run | impl | precision / settings | train img/s | best round | eval img/s | step p50 ms "
          "| TFLOP/s | MFU | peak mem GiB | warm-up s | throttled |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for tag, doc in docs.items():
        for line in rows(tag, doc):
            print(line)
    for tag, doc in docs.items():
        if doc.get("speedup") is not None:
            print(f"\n{tag}: fast / reference = {doc['speedup']:.2f}x training images/s (same run; "
                  f"cuDNN TF32 {'on' if doc['settings']['cudnn_allow_tf32'] else 'off'})")
    if len(docs) < len(plan):
        print(f"\n{len(plan) - len(docs)} run(s) failed or timed out: see the .stderr files in {outdir}")


if __name__ == "__main__":
    main()
