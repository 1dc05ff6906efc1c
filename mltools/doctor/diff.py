"""``mltools doctor diff A.json B.json``: what differs between two environments, that matters.

Two ``mltools doctor --json`` reports (typically one per node) are compared
section by section; each difference has a rank (the order below) and says
whether it matters:

1. ``cpu``: the x86-64 level, and instruction-set features one CPU has and the
   other lacks when the environment's code uses them;
2. ``library``: the same SONAME resolved to another file (by path relative to
   each report's environment prefix, then by size), found on one side only,
   or owned by another package version;
3. ``package``: pip distributions and their versions;
4. ``runtime``: the runtime libraries (OpenMP, BLAS, libstdc++, CUDA) and how
   many copies of each family;
5. ``gpu``: the GPUs and the driver;
6. ``environment``: the variables that steer loading, threading and dispatch;
7. ``system``: Python, glibc, kernel, usable CPUs, cgroup quota, NUMA, THP;
8. ``finding``: findings (warning or error) one report has and the other lacks.

Differences expected between nodes (host name, time, absolute paths under
different prefixes, timings) are counted, and listed with ``show_all``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from mltools.errors import InputError

__all__ = ["DiffItem", "DoctorDiff", "diff_reports", "diff_documents"]

CATEGORIES = ("cpu", "library", "package", "runtime", "gpu", "environment", "system", "finding", "expected")


@dataclass(frozen=True)
class DiffItem:
    category: str
    key: str
    a: Any
    b: Any
    matters: bool
    why: str = ""


@dataclass(frozen=True)
class DoctorDiff:
    SCHEMA: ClassVar[str] = "mltools.doctor.diff"
    SCHEMA_VERSION: ClassVar[int] = 1

    a: str                           # "hostname (file)"
    b: str
    items: Tuple[DiffItem, ...]      # ranked: matters first, then by category
    differs: bool                    # something that matters differs
    expected: int                    # differences expected between nodes
    missing_sections: Tuple[str, ...] = ()   # what one report lacks (e.g. ran without --isa)


def _load(path: str) -> dict:
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    except ValueError as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != "mltools.doctor":
        raise InputError(f"{path}: not a `mltools doctor --json` report (schema {doc.get('schema') if isinstance(doc, dict) else None!r})")
    return doc


def diff_reports(first: str, second: str, *, show_all: bool = False) -> DoctorDiff:
    return diff_documents(_load(first), _load(second), show_all=show_all, names=(first, second))


class _Rel:
    """Paths relative to a report's environment, so two venvs at different places compare."""

    def __init__(self, doc: dict):
        py = doc.get("python") or {}
        roots = list(py.get("site_dirs") or ()) + [py.get("prefix") or ""] + list(doc.get("scanned_dirs") or ())
        self.roots = sorted({os.path.normpath(r) for r in roots if r}, key=len, reverse=True)

    def __call__(self, path: Optional[str]) -> Optional[str]:
        if not path:
            return path
        for r in self.roots:
            if path.startswith(r + "/"):
                return "<env>/" + path[len(r) + 1:]
        return path


def diff_documents(a: dict, b: dict, *, show_all: bool = False, names=("A", "B")) -> DoctorDiff:
    items: List[DiffItem] = []
    missing: List[str] = []
    fa, fb = a.get("facts") or {}, b.get("facts") or {}
    if not fa or not fb:
        missing.append("facts (a report made without the environment checks)")
    ra, rb = _Rel(a), _Rel(b)

    def add(cat, key, va, vb, matters=True, why=""):
        if va != vb:
            items.append(DiffItem(cat, key, va, vb, matters, why))

    # 1. CPU
    used = set()
    for doc in (a, b):
        for f in ((doc.get("isa") or {}).get("files") or ()):
            used.update(f.get("unguarded", ()))
            used.update(f.get("dispatched", ()))
    if fa and fb:
        add("cpu", "x86-64 level", fa.get("isa_level"), fb.get("isa_level"),
            why="code built or dispatched for the higher level runs on one side only")
        only_a = sorted(set(fa.get("cpu_features", ())) - set(fb.get("cpu_features", ())))
        only_b = sorted(set(fb.get("cpu_features", ())) - set(fa.get("cpu_features", ())))
        for feats, side in ((only_a, "a"), (only_b, "b")):
            relevant = [f for f in feats if f in used]
            other = [f for f in feats if f not in used]
            if relevant:
                items.append(DiffItem("cpu", "features the environment's code uses",
                                      relevant if side == "a" else [], relevant if side == "b" else [], True,
                                      "dispatch picks other kernels (or an unguarded use dies with SIGILL)"))
            if other:
                items.append(DiffItem("cpu", "other CPU features", other if side == "a" else [],
                                      other if side == "b" else [], False))
        add("expected", "CPU model", fa.get("cpu_model"), fb.get("cpu_model"), False)
    ia, ib = a.get("isa") or {}, b.get("isa") or {}
    if ia and ib:
        need_a = {ra(f["path"]): f for f in ia.get("files", ())}
        need_b = {rb(f["path"]): f for f in ib.get("files", ())}
        for p in sorted(set(need_a) & set(need_b)):
            add("cpu", f"{p}: x86-64 level its unguarded code needs", need_a[p]["needs_level"], need_b[p]["needs_level"])
    elif ia or ib:
        missing.append("isa (one report was made with --no-isa)")

    # 2. libraries by SONAME (a name can have several copies: identical grafts in two .libs dirs)
    def libs(f, rel):
        out: Dict[str, Dict[Optional[str], dict]] = {}
        for lib in f.get("libraries") or ():
            out.setdefault(lib["soname"], {})[rel(lib.get("path"))] = lib
        return out
    la, lb = libs(fa, ra), libs(fb, rb)
    for s in sorted(set(la) | set(lb)):
        x, y = la.get(s, {}), lb.get(s, {})
        tx = sorted(filter(None, (_lib_text(v, ra) for v in x.values())))
        ty = sorted(filter(None, (_lib_text(v, rb) for v in y.values())))
        if not x or not y:
            items.append(DiffItem("library", s, tx or None, ty or None, True, "needed on one side only"))
        elif (None in x) != (None in y):
            items.append(DiffItem("library", s, tx, ty, True, "found on one side only"))
        elif set(x) != set(y):
            items.append(DiffItem("library", s, tx, ty, True, "another file is loaded for the same name"))
        elif tx != ty:
            items.append(DiffItem("library", s, tx, ty, True, "another package version"))
        else:
            sizes = [(p, x[p].get("size"), y[p].get("size")) for p in x]
            changed = [p for p, sx, sy in sizes if sx != sy]
            if changed:
                items.append(DiffItem("library", s, [f"{p} ({x[p].get('size')} bytes)" for p in changed],
                                      [f"{p} ({y[p].get('size')} bytes)" for p in changed], True,
                                      "same path, another file"))
            elif sorted(str(v.get("path")) for v in x.values()) != sorted(str(v.get("path")) for v in y.values()):
                items.append(DiffItem("expected", s, sorted(str(v.get("path")) for v in x.values()),
                                      sorted(str(v.get("path")) for v in y.values()), False))

    # 3. packages
    pa, pb = fa.get("packages") or {}, fb.get("packages") or {}
    for name in sorted(set(pa) | set(pb), key=str.lower):
        add("package", name, pa.get(name), pb.get(name))

    # 4. runtimes
    def runtimes(doc, rel):
        out: Dict[str, List[str]] = {}
        for c in doc.get("runtimes") or ():
            out.setdefault(c["family"], []).append(f"{c['soname']} ({c.get('package') or rel(c.get('path')) or '-'})")
        return {k: sorted(v) for k, v in out.items()}
    rta, rtb = runtimes(a, ra), runtimes(b, rb)
    for fam in sorted(set(rta) | set(rtb)):
        x, y = rta.get(fam, []), rtb.get(fam, [])
        if len(x) != len(y):
            items.append(DiffItem("runtime", f"{fam}: copies", len(x), len(y), True))
        add("runtime", fam, x, y)

    # 5. GPU and driver
    if fa and fb:
        add("gpu", "GPUs", [list(g) for g in fa.get("gpus", ())], [list(g) for g in fb.get("gpus", ())])
        add("gpu", "NVIDIA driver", fa.get("driver_version"), fb.get("driver_version"))

    # 6. environment variables
    ea, eb = fa.get("environment") or {}, fb.get("environment") or {}
    for k in sorted(set(ea) | set(eb)):
        va, vb = ea.get(k), eb.get(k)
        if va != vb and k in ("LD_LIBRARY_PATH", "PYTHONPATH") and va and vb and \
                [ra(p) for p in va.split(":")] == [rb(p) for p in vb.split(":")]:
            items.append(DiffItem("expected", k, va, vb, False))
            continue
        add("environment", k, va, vb)

    # 7. system
    pya, pyb = a.get("python") or {}, b.get("python") or {}
    add("system", "Python", f"{pya.get('implementation')} {pya.get('version')}", f"{pyb.get('implementation')} {pyb.get('version')}")
    if fa and fb:
        for key, label, matters in (("glibc", "glibc", True), ("os", "OS", True), ("kernel", "kernel", False),
                                    ("usable_cpus", "usable CPUs", True), ("cgroup_cpu_limit", "cgroup CPU limit", True),
                                    ("numa_nodes", "NUMA nodes", True), ("transparent_hugepages", "THP", False)):
            add("system", label, fa.get(key), fb.get(key), matters)
        add("expected", "host", fa.get("hostname"), fb.get("hostname"), False)
        add("expected", "collected at", fa.get("collected_at"), fb.get("collected_at"), False)
    add("expected", "python executable", pya.get("executable"), pyb.get("executable"), False)

    # 8. findings
    def finds(doc, rel):
        return {(f["code"], _relmsg(f, rel)): f["severity"] for f in doc.get("findings") or ()
                if f["severity"] in ("warning", "error")}
    fda, fdb = finds(a, ra), finds(b, rb)
    for key in sorted(set(fda) ^ set(fdb)):
        items.append(DiffItem("finding", key[0], key[1] if key in fda else None, key[1] if key in fdb else None,
                              True, fda.get(key) or fdb.get(key)))

    expected = sum(1 for i in items if not i.matters)
    ranked = sorted(items, key=lambda i: (not i.matters, CATEGORIES.index(i.category), i.key))
    if not show_all:
        ranked = [i for i in ranked if i.matters]
    label = lambda f, n: f"{f.get('hostname', '?')} ({n})" if f else n   # noqa: E731
    return DoctorDiff(label(fa, names[0]), label(fb, names[1]), tuple(ranked),
                      any(i.matters for i in items), expected, tuple(missing))


def _lib_text(lib: Optional[dict], rel) -> Optional[str]:
    if lib is None:
        return None
    where = rel(lib.get("path")) or "not found"
    return f"{where} ({lib['package']})" if lib.get("package") else where


def _relmsg(f: dict, rel) -> str:
    msg = f.get("message", "")
    for r in rel.roots:
        msg = msg.replace(r + "/", "<env>/")
    return msg
