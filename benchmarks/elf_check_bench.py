"""Benchmark and cross-check ``mltools elf check`` against ``ldd -r``.

Runs both in one session, interleaved, best of N rounds:

* every ELF file in /usr/lib/x86_64-linux-gnu/*.so* (linker scripts skipped):
  ``mltools elf check --json --fail-on none FILES...`` (one process) against
  ``ldd -r FILE`` for each file (the loader itself, with relocations processed);
* one numpy extension module: ``mltools elf check EXT`` (inside the interpreter)
  against ``ldd -r EXT``.

It also compares what they report: the (object, symbol) pairs ``ldd -r`` calls
undefined and the version needs it says are missing, against ours.

    python benchmarks/elf_check_bench.py [--rounds 3] [--limit N] [--usr-bin]
    python benchmarks/elf_check_bench.py --limit 1 --ext torch/_C...so --python venv/bin/python
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import re
import subprocess
import sys
import time

from _harness import child_cpu_s  # noqa: E402 (benchmarks/ is on sys.path as the script dir)

from mltools.elf.files import looks_like_elf

MLTOOLS = [sys.executable, "-m", "mltools"]
_UNDEF = re.compile(r"^undefined symbol: (\S+)(?:, version (\S+))?\t\((.*)\)$")
_VERSION = re.compile(r"version `(.+)' not found \(required by (.+)\)")


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
        model = re.search(r"^model name\s*:\s*(.*)$", text, re.M).group(1)
        flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M).group(1).split()
        isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "SSE")
        return f"{model}, {isa}, {os.cpu_count()} logical CPUs"
    except (OSError, AttributeError):
        return platform.processor() or "unknown CPU"


def run_ours(files):
    t, c = time.perf_counter(), child_cpu_s()
    p = subprocess.run(MLTOOLS + ["elf", "check", "--json", "--fail-on", "none", *files],
                       capture_output=True, text=True)
    dt, dc = time.perf_counter() - t, child_cpu_s() - c
    if p.returncode != 0:
        raise SystemExit(f"mltools failed: {p.stderr.strip()}")
    return (dt, dc), json.loads(p.stdout)


def run_ldd(files):
    outs = []
    t, c = time.perf_counter(), child_cpu_s()
    for f in files:
        p = subprocess.run(["ldd", "-r", f], capture_output=True, text=True)
        outs.append(p.stdout + p.stderr)
    return (time.perf_counter() - t, child_cpu_s() - c), outs


def ldd_sets(outs):
    undef, versions = set(), set()
    for text in outs:
        for line in text.splitlines():
            m = _UNDEF.match(line.strip("\t"))
            if m:
                undef.add((os.path.realpath(m.group(3)), m.group(1)))
            m = _VERSION.search(line)
            if m:
                versions.add((m.group(1), os.path.basename(m.group(2))))
    return undef, versions


def our_sets(doc):
    undef, versions = set(), set()
    for f in doc["findings"]:
        if f["code"] in ("UNDEFINED", "ABI_MISMATCH"):
            obj = os.path.realpath(f["details"]["object"])
            for s in f["details"]["symbols"]:
                undef.add((obj, s["name"]))
        elif f["code"] == "VERSION_MISSING":
            versions.add((f["details"]["version"], os.path.basename(f["details"]["required_by"])))
    return undef, versions


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="only the first N files")
    ap.add_argument("--ext", help="an extension module to time instead of numpy's (with --python)")
    ap.add_argument("--python", help="the interpreter for --ext (--as-python=EXE)")
    ap.add_argument("--usr-bin", action="store_true",
                    help="the dynamically linked programs in /usr/bin instead of the libraries")
    args = ap.parse_args()
    if args.usr_bin:
        from mltools.elf.reader import read_elf

        files = [f for f in sorted(glob.glob("/usr/bin/*"))
                 if os.path.isfile(f) and looks_like_elf(f) and read_elf(f).interp]
    else:
        files = [f for f in sorted(glob.glob("/usr/lib/x86_64-linux-gnu/*.so*"))
                 if os.path.isfile(f) and looks_like_elf(f)]
    if args.limit:
        files = files[:args.limit]
    print(f"machine: {_cpu()}; {platform.platform()}")
    where = "/usr/bin/* (dynamically linked)" if args.usr_bin else "/usr/lib/x86_64-linux-gnu/*.so*"
    print(f"files: {len(files)} ELF files in {where}")
    ours_t, ldd_t = [], []
    doc = outs = None
    for r in range(args.rounds):
        if r % 2 == 0:
            a, doc = run_ours(files)
            b, outs = run_ldd(files)
        else:
            b, outs = run_ldd(files)
            a, doc = run_ours(files)
        ours_t.append(a)
        ldd_t.append(b)
        print(f"  round {r + 1}: mltools elf check {a[0]:.2f} s wall / {a[1]:.2f} s CPU, "
              f"ldd -r (per file) {b[0]:.2f} s wall / {b[1]:.2f} s CPU")
    bo, bl = min(t[0] for t in ours_t), min(t[0] for t in ldd_t)
    co, cl = min(t[1] for t in ours_t), min(t[1] for t in ldd_t)
    print(f"best wall: mltools {bo:.2f} s, ldd -r {bl:.2f} s, ratio {bl / bo:.1f}x; "
          f"best CPU: mltools {co:.2f} s, ldd -r {cl:.2f} s, ratio {cl / co:.1f}x")
    print(f"load average at the end: {open('/proc/loadavg').read().split()[0]}")
    lu, lv = ldd_sets(outs)
    ou, ov = our_sets(doc)
    print(f"undefined (object, symbol) pairs: ldd -r {len(lu)}, mltools {len(ou)}, both {len(lu & ou)}")
    only_ldd = sorted(lu - ou)
    # ldd takes $ORIGIN of a symlinked program from the link, not the realpath as
    # the kernel-started loader does: its "not found" and undefined symbols there are wrong
    linked = {os.path.realpath(f) for f in files if os.path.islink(f)}
    via_link = [pair for pair in only_ldd if pair[0] in linked]
    if via_link:
        print(f"  of those only in ldd -r, {len(via_link)} are in symlinked programs "
              f"(ldd's $ORIGIN is the link's directory; running them works)")
    for pair in [p for p in only_ldd if p not in via_link][:10]:
        print(f"  only ldd -r: {pair}")
    for pair in sorted(ou - lu)[:10]:
        print(f"  only mltools: {pair}")
    print(f"missing versions: ldd -r {len(lv)}, mltools {len(ov)}, both {len(lv & ov)}")

    if args.usr_bin:
        return
    extension_part(args.ext, args.python, args.rounds)


def extension_part(ext, python, rounds) -> None:
    extra = [f"--as-python={python}"] if python else []
    if ext is None:
        try:
            import numpy  # noqa: F401
            mod = (sys.modules.get("numpy._core._multiarray_umath")
                   or sys.modules.get("numpy.core._multiarray_umath"))
            ext = mod.__file__
        except Exception:   # noqa: BLE001 - numpy is optional here
            return
    ours_e, ldd_e, ours_c = [], [], []
    for r in range(max(rounds, 5)):
        t, c = time.perf_counter(), child_cpu_s()
        p = subprocess.run(MLTOOLS + ["elf", "check", "--json", *extra, ext], capture_output=True, text=True)
        ours_e.append(time.perf_counter() - t)
        ours_c.append(child_cpu_s() - c)
        t = time.perf_counter()
        q = subprocess.run(["ldd", "-r", ext], capture_output=True, text=True)
        ldd_e.append(time.perf_counter() - t)
    n_false = sum(1 for line in (q.stdout + q.stderr).splitlines() if line.startswith("undefined symbol"))
    errors = [f for f in json.loads(p.stdout)["findings"] if f["severity"] == "error"]
    print(f"extension {os.path.basename(ext)}: mltools elf check {min(ours_e) * 1000:.0f} ms "
          f"wall, {min(ours_c) * 1000:.0f} ms CPU (whole command with Python start-up, {len(errors)} errors), ldd -r {min(ldd_e) * 1000:.0f} ms "
          f"({n_false} 'undefined symbol' lines)")


if __name__ == "__main__":
    main()
