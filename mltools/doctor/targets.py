"""Another machine's system libraries: will these binaries find the versions they need there?

A target (``--target``) is a manylinux policy (auditwheel's own policy file:
each versioned need must be in the policy's list, a set test, and every system
library needed must be on its whitelist) or a distribution (its glibc version
and the newest ``GLIBCXX_``, ``CXXABI_`` and ``GCC_`` versions of its system
``libstdc++.so.6`` and ``libgcc_s.so.1``, compared numerically). The data,
with the source of every row, is ``targets.json`` next to this module.

Only needs on libraries the target provides are judged: glibc's own libraries,
``libstdc++``, ``libgcc_s`` and ``libatomic``, when the environment (or the
wheel) does not ship its own copy under that name.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Tuple

from mltools.findings import Finding, Severity

__all__ = ["Target", "TargetCheck", "VersionedNeed", "target", "target_names", "this_machine",
           "versioned_needs", "unmet_needs", "target_findings", "best_manylinux", "judge_targets", "check_files",
           "GLIBC_LIBS"]

GLIBC_LIBS = frozenset({"libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1",
                        "libresolv.so.2", "libanl.so.1", "libnsl.so.1", "libmvec.so.1", "libcrypt.so.1",
                        "ld-linux-x86-64.so.2", "libBrokenLocale.so.1", "libthread_db.so.1"})
# the libraries whose version nodes a target row describes (prefix -> the library that defines them)
_PREFIX_LIBS = {"GLIBC": GLIBC_LIBS, "GLIBCXX": {"libstdc++.so.6"}, "CXXABI": {"libstdc++.so.6"},
                "GCC": {"libgcc_s.so.1"}, "LIBATOMIC": {"libatomic.so.1"}}
PROVIDED = frozenset().union(*_PREFIX_LIBS.values())


@dataclass(frozen=True)
class Target:
    name: str
    kind: str                                     # manylinux, distribution, this-machine
    glibc: str
    maxima: Mapping[str, str]                     # GLIBCXX -> 3.4.28, CXXABI -> 1.3.12, GCC -> 7.0.0
    allowed: Optional[Mapping[str, FrozenSet[str]]] = None     # manylinux: prefix -> allowed versions
    whitelist: Optional[FrozenSet[str]] = None    # manylinux: system libraries a wheel may need
    extra: FrozenSet[str] = frozenset()           # non-numeric versions it has (GLIBC_ABI_DT_RELR)
    verified: bool = True                         # read from the distribution's own packages
    source: str = ""
    priority: int = 0


@dataclass(frozen=True)
class VersionedNeed:
    """One version a file needs from a library, with the symbols that need it."""
    path: str
    library: str                                  # the NEEDED name (vn_file)
    version: str                                  # GLIBC_2.34
    symbols: Tuple[str, ...]


def _vtuple(text: str) -> Optional[Tuple[int, ...]]:
    parts = text.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) and parts != [""] else None


@lru_cache(maxsize=1)
def _data() -> dict:
    with open(os.path.join(os.path.dirname(__file__), "targets.json")) as fh:
        return json.load(fh)


def _targets() -> Dict[str, Target]:
    d = _data()
    out: Dict[str, Target] = {}
    src = d["manylinux_source"]
    for p in d["manylinux"]:
        sv = p["symbol_versions"]
        maxima = {k: max((v for v in vals if _vtuple(v)), key=_vtuple) for k, vals in sv.items() if vals}
        t = Target(p["name"], "manylinux", maxima.get("GLIBC", "0"), maxima,
                   {k: frozenset(v) for k, v in sv.items()}, frozenset(p["lib_whitelist"]),
                   source=f"{src['url']} ({src['repository']} at {src['commit'][:12]})", priority=p["priority"])
        for n in [p["name"]] + list(p.get("aliases", ())):
            out[n] = t
    for r in d["distributions"]:
        t = Target(r["name"], "distribution", r["glibc"], {"GLIBC": r["glibc"], "GLIBCXX": r["GLIBCXX"],
                                                            "CXXABI": r["CXXABI"], "GCC": r["GCC"]},
                   extra=frozenset(r.get("extra", ())), verified=bool(r.get("verified")),
                   source="; ".join(s["url"] for s in r.get("sources", ())))
        for n in [r["name"]] + list(r.get("aliases", ())):
            out[n] = t
    return out


def target_names() -> List[str]:
    d = _data()
    return [p["name"] for p in d["manylinux"]] + [r["name"] for r in d["distributions"]]


def target(name: str) -> Target:
    """A target by name (``manylinux_2_28``, ``manylinux2014``, ``debian-11``, ``ubuntu-22.04``, ...)."""
    t = _targets().get(name.strip().lower().replace("manylinux-", "manylinux_"))
    if t is None:
        raise ValueError(f"unknown target {name!r}: use one of {', '.join(target_names())}")
    return t


def this_machine(system_libs: Mapping[str, str]) -> Target:
    """This machine as a target: its glibc, and the versions its system libstdc++ and libgcc_s
    define (``system_libs``: SONAME -> path of the copy the loader finds)."""
    from mltools.elf.reader import read_symbols

    glibc = (os.confstr("CS_GNU_LIBC_VERSION") or "glibc 0").split()[-1]
    maxima = {"GLIBC": glibc}
    extra = set()
    for soname, prefixes in (("libstdc++.so.6", ("GLIBCXX", "CXXABI")), ("libgcc_s.so.1", ("GCC",)),
                             ("libc.so.6", ())):
        path = system_libs.get(soname)
        if not path:
            continue
        try:
            defs = [v.name for v in read_symbols(path).version_defs]
        except Exception:   # noqa: BLE001 - unreadable: that prefix is then not judged
            continue
        for prefix in prefixes:
            vs = [_vtuple(n[len(prefix) + 1:]) for n in defs if n.startswith(prefix + "_")]
            vs = [v for v in vs if v]
            if vs:
                maxima[prefix] = ".".join(map(str, max(vs)))
        extra |= {n for n in defs if n.startswith(("GLIBC_", "CXXABI_", "GLIBCXX_")) and not _vtuple(n.split("_", 1)[1])}
    return Target(f"this machine (glibc {glibc})", "this-machine", glibc, maxima, extra=frozenset(extra))


def versioned_needs(path: str) -> List[VersionedNeed]:
    """Every version ``path`` needs, with the library it names and the symbols that need it."""
    from mltools.elf.reader import read_symbols

    syms = read_symbols(path)
    by_version: Dict[Tuple[str, str], List[str]] = {}
    for s in syms.symbols:
        if not s.defined and s.version and s.version_file:
            by_version.setdefault((s.version_file, s.version), []).append(s.name)
    out = []
    for vn in syms.version_needs:
        for v in vn.versions + vn.weak:
            out.append(VersionedNeed(path, vn.file, v, tuple(sorted(by_version.get((vn.file, v), ())))))
    return out


_PREFIX = re.compile(r"^(GLIBCXX|GLIBC|CXXABI|GCC|LIBATOMIC)_(.+)$")


def judge(need: VersionedNeed, t: Target) -> Optional[str]:
    """None when ``t`` provides the version; else what it has instead ("GLIBC 2.31")."""
    m = _PREFIX.match(need.version)
    if not m or need.library not in _PREFIX_LIBS.get(m.group(1), ()):
        return None
    prefix, ver = m.group(1), m.group(2)
    if prefix == "GLIBC" and ver == "PRIVATE":
        return "no GLIBC_PRIVATE (internal to glibc)"
    if t.allowed is not None:                    # manylinux: set membership, as auditwheel decides
        allowed = t.allowed.get(prefix)
        if allowed is None or ver in allowed:
            return None
        top = t.maxima.get(prefix)
        return f"{prefix} up to {top}" if top else f"no {prefix} versions"
    have = t.maxima.get(prefix)
    if have is None:
        return None
    want = _vtuple(ver)
    if want is None:
        if need.version in t.extra:
            return None
        if need.version == "GLIBC_ABI_DT_RELR":
            return None if _vtuple(t.glibc) >= (2, 36) else f"glibc {t.glibc} (GLIBC_ABI_DT_RELR came with 2.36)"
        if need.version in ("CXXABI_TM_1", "CXXABI_FLOAT128"):
            return None
        return None
    return None if want <= _vtuple(have) else f"{prefix} {have}" if prefix != "GLIBC" else f"glibc {have}"


def unmet_needs(needs: Iterable[VersionedNeed], t: Target, shipped: Iterable[str] = ()) -> List[Tuple[VersionedNeed, str]]:
    """The needs ``t`` cannot meet (libraries in ``shipped``, the SONAMEs the environment or
    wheel brings itself, are not the target's to provide)."""
    shipped = set(shipped)
    out = []
    for n in needs:
        if n.library in shipped:
            continue
        why = judge(n, t)
        if why is not None:
            out.append((n, why))
    return out


def target_findings(needs_by_file: Mapping[str, Sequence[VersionedNeed]], t: Target,
                    owner_of, shipped: Iterable[str] = (), external: Mapping[str, Sequence[str]] = ()) -> List[Finding]:
    """TARGET_VERSION_MISSING per file, and for a manylinux target TARGET_LIBRARY_NOT_ALLOWED for
    each system library outside its whitelist (``external``: SONAME -> the files that need it)."""
    shipped = set(shipped)
    out: List[Finding] = []
    for path in sorted(needs_by_file):
        unmet = unmet_needs(needs_by_file[path], t, shipped)
        if not unmet:
            continue
        pkg = owner_of(path)
        wants = ", ".join(f"{n.version} (from {n.library}"
                          + (f", for {', '.join(n.symbols[:3])}{'...' if len(n.symbols) > 3 else ''}" if n.symbols else "")
                          + ")" for n, _w in unmet)
        has = sorted({w for _n, w in unmet})
        out.append(Finding(
            "TARGET_VERSION_MISSING", Severity.ERROR,
            f"{path} needs {wants}; {t.name} has {', '.join(has)}: it fails there with `version ... not found`",
            fix=(f"install a build of {pkg} made for {t.name} or older (pip install --only-binary :all: "
                 f"--platform {_platform_tag(t)} ...), or build it on the oldest OS you deploy to" if pkg else
                 "build it on the oldest OS you deploy to (or in a manylinux image for that glibc)"),
            details={"path": path, "package": pkg, "target": t.name, "target_verified": t.verified,
                     "needs": [{"library": n.library, "version": n.version, "symbols": list(n.symbols),
                                "target_has": w} for n, w in unmet]}))
    if t.whitelist is not None:
        for soname in sorted(external):
            if soname in t.whitelist or soname in shipped:
                continue
            files = sorted(external[soname])
            out.append(Finding(
                "TARGET_LIBRARY_NOT_ALLOWED", Severity.WARNING,
                f"{soname} is needed from the system by {files[0]}"
                + (f" and {len(files) - 1} more" if len(files) > 1 else "")
                + f", but {t.name} does not promise it (not on the policy's whitelist): it may be missing there",
                fix="ship the library inside the wheel (auditwheel repair grafts it), or install it on every target",
                details={"soname": soname, "needed_by": files, "path": files[0], "target": t.name,
                         "package": owner_of(files[0])}))
    return out


def _platform_tag(t: Target) -> str:
    if t.kind == "manylinux":
        return f"{t.name}_x86_64"
    return f"manylinux_{t.glibc.replace('.', '_')}_x86_64"


def best_manylinux(needs: Iterable[VersionedNeed], shipped: Iterable[str] = (),
                   external: Iterable[str] = ()) -> Optional[str]:
    """The most compatible manylinux policy these needs satisfy (what auditwheel would tag), or None."""
    needs = list(needs)
    external = set(external)
    best = None
    for p in _data()["manylinux"]:
        t = target(p["name"])
        if unmet_needs(needs, t, shipped) or (external - set(shipped) - t.whitelist):
            continue
        if best is None or t.priority > best.priority:
            best = t
    return best.name if best else None


@dataclass(frozen=True)
class TargetCheck:
    """One ``--target``, as the report keeps it."""
    name: str
    kind: str
    glibc: str
    maxima: Mapping[str, str]
    verified: bool
    source: str
    files_checked: int
    files_failing: int


def check_files(paths: Sequence[str], targets: Sequence[Target], owner_of) -> Tuple[List[Finding], List[TargetCheck]]:
    """Judge every versioned need of ``paths`` (an environment's or a wheel's ELF files) against each
    target. Libraries the files ship themselves (by SONAME) are not the target's to provide."""
    from mltools.elf.reader import read_elf
    from mltools.errors import MltoolsError

    needs: Dict[str, List[VersionedNeed]] = {}
    shipped, needed = set(), {}
    for p in paths:
        try:
            info = read_elf(p)
            if info.machine != 62 or not info.has_dynamic:
                continue
            needs[p] = versioned_needs(p)
        except (MltoolsError, OSError):
            continue          # the reader pass reports files that cannot be read
        shipped.update(n for n in (info.soname, os.path.basename(p)) if n)
        for n in info.needed:
            needed.setdefault(n, []).append(p)
    external = {s: files for s, files in needed.items() if s not in shipped and not s.startswith("ld-linux")}
    return judge_targets(needs, targets, owner_of, shipped, external)


def judge_targets(needs_by_file: Mapping[str, Sequence[VersionedNeed]], targets: Sequence[Target], owner_of,
                  shipped: Iterable[str] = (), external: Mapping[str, Sequence[str]] = ()
                  ) -> Tuple[List[Finding], List[TargetCheck]]:
    """:func:`target_findings` for each target, and what the report keeps of each."""
    findings: List[Finding] = []
    checks: List[TargetCheck] = []
    for t in targets:
        fs = target_findings(needs_by_file, t, owner_of, shipped, external)
        findings += fs
        checks.append(TargetCheck(t.name, t.kind, t.glibc, dict(t.maxima), t.verified, t.source,
                                  len(needs_by_file), sum(1 for f in fs if f.code == "TARGET_VERSION_MISSING")))
    return findings, checks
