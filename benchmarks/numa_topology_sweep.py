#!/usr/bin/env python3
"""Parity sweep: `bench numa`'s topology, inference and PCI locality against lstopo on every
hwloc-gather-topology dump under the given directories (``*.tar.bz2``, searched recursively).

Point it at hwloc's own corpus (tests/hwloc/linux of a checkout of open-mpi/hwloc: 43 dumps
of real and hand-made machines) or at dumps of your own machines:

    python benchmarks/numa_topology_sweep.py ~/src/hwloc/tests/hwloc/linux [--json]

For each dump: the fields where the parser and lstopo disagree (the comparison the tests
make, tests/hwloc_oracle.py), the inferred mode and confidence, what was missing or
contradictory, and the time each side took. Exit 0 when it ran (disagreements are data).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import hwloc_oracle  # noqa: E402
from mltools.numa.infer import infer_mode  # noqa: E402
from mltools.numa.topology import read_topology  # noqa: E402


def unpack(tarball: str, dest: str) -> str:
    with tarfile.open(tarball) as tf:
        members = [m for m in tf.getmembers() if not m.name.endswith("/uevent")]
        tops = {m.name.split("/")[0] for m in members}
        tf.extractall(dest, members=members, filter="data")
    if len(tops) != 1:
        raise ValueError(f"one top directory expected, found {sorted(tops)}")
    return os.path.join(dest, tops.pop())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    a = ap.parse_args()
    if hwloc_oracle.lstopo_exe() is None:
        print("error: lstopo not found (Debian package hwloc)", file=sys.stderr)
        return 2
    tarballs = sorted({t for d in a.dirs for t in glob.glob(os.path.join(d, "**", "*.tar.bz2"), recursive=True)})
    rows = []
    for tarball in tarballs:
        name = os.path.relpath(tarball, os.path.commonpath(a.dirs) if len(a.dirs) > 1 else a.dirs[0])
        tmp = tempfile.mkdtemp(prefix="numa-sweep-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
        try:
            root = unpack(tarball, tmp)
            t0 = time.perf_counter()
            topo = read_topology(root)
            inf = infer_mode(topo)
            t1 = time.perf_counter()
            view = hwloc_oracle.view(root)
            t2 = time.perf_counter()
            diffs = hwloc_oracle.differences(topo, view)
            rows.append({"dump": name, "differences": {k: [repr(x) for x in v] for k, v in diffs.items()},
                         "mode": inf.mode, "confidence": inf.confidence, "missing": list(inf.missing),
                         "contradictions": list(inf.contradictions),
                         "memory_kinds": {c.subject: c.value for c in inf.memory_nodes},
                         "pci_listed": len(topo.io.devices) if topo.io else 0,
                         "mltools_s": round(t1 - t0, 3), "lstopo_s": round(t2 - t1, 3)})
        except Exception as exc:   # one bad dump is reported and the sweep goes on
            rows.append({"dump": name, "error": f"{type(exc).__name__}: {exc}"})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    agree = sum(1 for r in rows if "error" not in r and not r["differences"])
    summary = {"dumps": len(rows), "agree": agree, "errors": sum(1 for r in rows if "error" in r),
               "lstopo": hwloc_oracle.lstopo_exe()}
    if a.json:
        print(json.dumps({"summary": summary, "dumps": rows}, indent=1))
        return 0
    for r in rows:
        if "error" in r:
            print(f"{r['dump']:55s} ERROR {r['error']}")
            continue
        status = "agrees" if not r["differences"] else "differs: " + ", ".join(r["differences"])
        print(f"{r['dump']:55s} {r['mode']:22s} {r['confidence']:7s} {status}")
    print(f"\n{agree} of {len(rows)} dumps agree with lstopo on every compared field; "
          f"{summary['errors']} could not be read")
    return 0


if __name__ == "__main__":
    sys.exit(main())
