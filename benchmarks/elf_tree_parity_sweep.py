#!/usr/bin/env python3
"""Parity sweep: `mltools elf tree` against `ldd` (the real loader) on every dynamic ELF in
/usr/bin, /usr/lib/x86_64-linux-gnu/*.so* and the site-packages of this Python (numpy, torch...).

For each file the set of resolved realpaths (vdso aside) and the set of missing names must be
equal. Programs are given to ldd by realpath: ldd takes $ORIGIN from the path it is given, the
kernel from the realpath (a symlinked program is the one known, documented difference).

    python benchmarks/elf_tree_parity_sweep.py [--limit N] [DIR_OR_GLOB...]

Prints one JSON document: files checked, mismatches (with both sides), timings.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import site
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mltools.elf.ldtree import Resolver, resolve_tree  # noqa: E402
from mltools.elf.reader import read_elf  # noqa: E402

# The same ldd oracle the parity tests use.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from test_elf_tree_parity import ldd  # noqa: E402


def default_sources():
    srcs = sorted(glob.glob("/usr/bin/*")) + sorted(glob.glob("/usr/lib/x86_64-linux-gnu/*.so*"))
    for sp in site.getsitepackages():
        srcs += sorted(glob.glob(f"{sp}/**/*.so*", recursive=True))
    return srcs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="*")
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    files = []
    for s in args.sources or default_sources():
        files.extend(sorted(glob.glob(s)) if any(c in s for c in "*?[") else [s])
    resolver = Resolver()
    checked, mismatches, skipped = 0, [], 0
    t_ours = t_ldd = 0.0
    for f in files:
        if not os.path.isfile(f):
            continue
        try:
            info = read_elf(f)
        except Exception:     # noqa: BLE001 - not an ELF file: not part of the sweep
            skipped += 1
            continue
        if not info.has_dynamic or info.elf_class != 64 or info.machine != 62:
            skipped += 1
            continue
        t0 = time.perf_counter()
        tree = resolve_tree(f, resolver=resolver, env={}, use_etc_preload=False)
        t1 = time.perf_counter()
        theirs, theirs_missing = ldd(os.path.realpath(f) if info.interp else f)
        t2 = time.perf_counter()
        t_ours += t1 - t0
        t_ldd += t2 - t1
        ours = {lib.path for lib in tree.libraries if lib.path and not lib.error}
        ours_missing = {lib.soname for lib in tree.libraries if lib.path is None}
        checked += 1
        if ours != theirs or ours_missing != theirs_missing:
            mismatches.append({"file": f, "only_mltools": sorted(ours - theirs), "only_ldd": sorted(theirs - ours),
                               "missing_mltools": sorted(ours_missing), "missing_ldd": sorted(theirs_missing)})
        if args.limit and checked >= args.limit:
            break
    print(json.dumps({"schema": "mltools.bench.elf_parity", "version": 1, "checked": checked,
                      "skipped_not_dynamic_elf": skipped, "mismatches": mismatches,
                      "mltools_s": round(t_ours, 3), "ldd_s": round(t_ldd, 3)}, indent=2))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
