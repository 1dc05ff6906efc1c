"""``scan``: every ELF file under some directories, checked as the loader would load them.

For each program and Python extension (the *roots*) the dependency tree is
resolved with one shared :class:`~mltools.elf.ldtree.Resolver`; libraries are
resolved on their own too, so a library that works only through its loader's
DT_RPATH (auditwheel's grafted ``*.libs`` copies) is told apart from one that
is broken. Identical files are grouped by size then sha256 (only files that
share a size are hashed), and by build-id. Runtimes that must exist once per
process (OpenMP, BLAS, libstdc++, libgfortran, CUDA runtime) are reported when
one process would map two of them.

The output is sorted, so it does not depend on the order of the arguments.
Headers are read and files hashed in a thread pool.
"""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

from mltools.elf.ldtree import DepTree, Resolver, resolve_tree
from mltools.elf.runtimes import duplicate_family
from mltools.elf.files import (ELFMAG, TREE, identical_groups, is_linker_script_file, is_shared_object_name,
                               is_tagged_extension_name, walk_elf_candidates)
from mltools.elf.reader import ElfFormatError, ElfInfo, read_elf, read_notes
from mltools.errors import InputError, UsageError
from mltools.findings import Finding, ItemError, Severity

__all__ = ["ScannedFile", "DuplicateGroup", "RuntimeCopies", "ScanReport", "scan_paths"]

_GRAFT_HASH = re.compile(r"-[0-9a-f]{8}(?:-[0-9a-f]{8})?\.so")


@dataclass(frozen=True)
class ScannedFile:
    path: str
    kind: str                       # executable, extension (Python), module (other plugin), library, grafted
    soname: Optional[str]
    size_bytes: int
    build_id: Optional[str]
    needed: Tuple[str, ...]
    missing: Tuple[str, ...]        # NEEDED names the loader would not find (in its own context)
    aliases: Tuple[str, ...] = ()   # symlinks to it inside the scanned trees


@dataclass(frozen=True)
class DuplicateGroup:
    key: str                        # "sha256:..." or "build-id:..."
    paths: Tuple[str, ...]
    identical: bool                 # same bytes (sha256), or only the same build-id


@dataclass(frozen=True)
class RuntimeCopies:
    family: str                     # openmp, blas, libstdc++, libgfortran, cuda-runtime, ... (mltools.elf.runtimes)
    paths: Tuple[str, ...]          # distinct files (realpaths) the scanned objects would map


@dataclass(frozen=True)
class ScanReport:
    SCHEMA: ClassVar[str] = "mltools.elf.scan"
    SCHEMA_VERSION: ClassVar[int] = 1
    roots: Tuple[str, ...]          # the directories (and files) scanned
    files: Tuple[ScannedFile, ...]
    duplicates: Tuple[DuplicateGroup, ...]
    runtimes: Tuple[RuntimeCopies, ...]
    findings: Tuple[Finding, ...]


def _probe(path: str):
    """(path, ElfInfo | None, error | None, build_id): read one file; non-ELF files are None.

    error is an ElfFormatError, or an ItemError for a file that cannot be opened."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        return path, None, ItemError(path, f"{path}: cannot read: {exc.strerror or exc}"), None
    with fh:
        try:
            magic = fh.read(4)
        except OSError:
            magic = b""
    if magic != ELFMAG:
        if is_shared_object_name(path) and not is_linker_script_file(path):
            try:
                read_elf(path)
            except ElfFormatError as exc:
                return path, None, exc, None
            except InputError:
                return path, None, None, None
        return path, None, None, None
    try:
        info = read_elf(path)
        notes = read_notes(path)
    except ElfFormatError as exc:
        return path, None, exc, None
    except InputError:
        return path, None, None, None
    return path, info, None, notes.build_id


def _kind(path: str, info: ElfInfo) -> str:
    base = os.path.basename(path)
    if info.interp is not None or info.type == 2:
        return "executable"
    if is_tagged_extension_name(base):
        return "extension"
    if base.endswith(".so") and not base.startswith("lib") and not _GRAFT_HASH.search(base):
        return "module"          # a plugin opened with dlopen (gconv, PAM, Python 2-style modules)
    if os.path.basename(os.path.dirname(path)).endswith(".libs") or _GRAFT_HASH.search(base):
        return "grafted"
    return "library"


def scan_paths(paths: Sequence[str], *, env: Optional[Dict[str, str]] = None, root: Optional[str] = None,
               jobs: Optional[int] = None, progress: Optional[Callable[..., None]] = None) -> ScanReport:
    """Scan files and directory trees; see the module docstring.

    ``progress(done, total)`` is called as the work goes: one unit per file read,
    then one per dependency tree resolved (the total grows once the files that
    can be loaded are known)."""
    if not paths:
        raise InputError("nothing to scan")
    report = progress or (lambda done, total=None, detail="": None)
    walk = walk_elf_candidates(paths, mode=TREE)
    files, aliases = [c.path for c in walk.candidates], walk.aliases
    jobs = jobs or min(8, (os.cpu_count() or 1) + 2)
    chunks = [files[i:i + 64] for i in range(0, len(files), 64)]
    report(0, len(files), "reading")
    probed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for part in pool.map(lambda ch: [_probe(f) for f in ch], chunks):
            probed.extend(part)
            report(len(probed), len(files), "reading")
    findings: List[Finding] = [
        Finding("NO_SUCH_PATH", Severity.ERROR, e.message, details={"path": e.path}) for e in walk.missing]
    findings += [_unreadable(e) for e in walk.unreadable]
    elves: Dict[str, Tuple[ElfInfo, Optional[str]]] = {}
    for path, info, err, build_id in probed:
        if isinstance(err, ItemError):
            findings.append(_unreadable(err))
        elif err is not None:
            code = "NOT_ELF" if err.kind in ("not-elf", "empty") else "MALFORMED_ELF"
            findings.append(Finding(code, Severity.ERROR, f"{path}: {err.reason}",
                                    fix="replace the file with the real library", details={"path": path}))
        elif info is not None:
            elves[path] = (info, build_id)

    # identical files: same size first, then sha256 (hashed in parallel)
    identical = identical_groups(sorted(elves), jobs=jobs)
    digests = identical.digests
    groups: List[DuplicateGroup] = [DuplicateGroup(f"sha256:{d}", ps, True) for d, ps in identical.groups]
    by_build: Dict[str, List[str]] = {}
    for path, (_i, b) in elves.items():
        if b:
            by_build.setdefault(b, []).append(path)
    for b, ps in sorted(by_build.items()):
        if len(ps) > 1 and len({digests.get(p, p) for p in ps}) > 1:
            groups.append(DuplicateGroup(f"build-id:{b}", tuple(sorted(ps)), False))

    resolver = Resolver(root=root)
    loadable = {}
    for p, v in sorted(elves.items()):
        if not v[0].has_dynamic:
            continue
        try:
            resolver.for_object(v[0], p)          # i386 next to x86-64: each with its own loader
        except UsageError as exc:
            findings.append(Finding("NOT_RESOLVED", Severity.INFO, f"{exc.message}: its dependencies are not checked",
                                    details={"path": p}))
            continue
        loadable[p] = v
    kinds = {p: _kind(p, info) for p, (info, _b) in loadable.items()}
    trees: Dict[str, DepTree] = {}
    total = len(files) + len(loadable)
    for done, p in enumerate(sorted(loadable), 1):
        try:
            trees[p] = resolve_tree(p, env=env or {}, resolver=resolver, use_etc_preload=False)
        except (InputError, ElfFormatError) as exc:
            findings.append(Finding("MALFORMED_ELF", Severity.ERROR, exc.message, details={"path": p}))
        if done % 16 == 0 or done == len(loadable):
            report(len(files) + done, total, "resolving")

    scanned: List[ScannedFile] = []
    for p in sorted(loadable):
        info, build_id = loadable[p]
        t = trees.get(p)
        missing = tuple(lib.soname for lib in t.libraries if lib.path is None) if t else ()
        kind = kinds[p]
        scanned.append(ScannedFile(path=p, kind=kind, soname=info.soname, size_bytes=info.size,
                                   build_id=build_id, needed=info.needed, missing=missing,
                                   aliases=tuple(sorted(aliases.get(p, ())))))
        if t is None:
            continue
        for lib in t.libraries:
            if lib.error:
                findings.append(Finding("FATAL_CANDIDATE", Severity.ERROR,
                                        f"{p}: for {lib.soname} the loader fails on {lib.found_as}: {lib.error} (it does not search further)",
                                        details={"path": p, "soname": lib.soname, "candidate": lib.found_as}))
        own_missing = [lib for lib in t.libraries if lib.path is None]
        if not own_missing:
            for f in t.findings:
                if f.code == "LOAD_ORDER_DEPENDENT":
                    findings.append(replace_message(f, p))
            continue
        if kind in ("executable", "extension", "module"):
            for lib in own_missing:
                findings.append(Finding("MISSING", Severity.ERROR,
                                        f"{p}: {lib.soname} not found (needed by {', '.join(lib.needed_by)})",
                                        details={"path": p, "soname": lib.soname,
                                                 "near_misses": [n.path for n in lib.near_misses]}))
            continue
        # a library: fine if every root that loads it resolves what it misses alone
        users = [q for q, tq in trees.items() if kinds[q] in ("executable", "extension", "module")
                 and any(lib.path == p for lib in tq.libraries)]
        names = {lib.soname for lib in own_missing}
        ok_via_loader = bool(users) and all(
            not ({m for m in names} - {n for lib in trees[q].libraries if lib.found for n in lib.requested_as})
            for q in users)
        if ok_via_loader:
            findings.append(Finding(
                "GRAFT_NEEDS_LOADER_RPATH" if kind == "grafted" else "NEEDS_LOADER_RPATH", Severity.INFO,
                f"{p}: {', '.join(sorted(names))} resolve only through the loading object's search path "
                f"(e.g. {users[0]}), not on its own: `ldd` on it says not found",
                details={"path": p, "names": sorted(names), "loaded_by": users[:5]}))
        else:
            findings.append(Finding("MISSING", Severity.ERROR if users else Severity.WARNING,
                                    f"{p}: {', '.join(sorted(names))} not found"
                                    + ("" if users else " (no scanned program or extension loads it)"),
                                    details={"path": p, "names": sorted(names)}))

    # runtimes one process would map twice
    runtimes: List[RuntimeCopies] = []
    union: Dict[str, set] = {}
    reported = set()
    for p, t in sorted(trees.items()):
        per_tree: Dict[str, set] = {}
        for lib in t.libraries:
            if lib.found and lib.path:
                fam = duplicate_family(lib.path)
                if fam:
                    per_tree.setdefault(fam, set()).add(lib.path)
                    union.setdefault(fam, set()).add(lib.path)
        for fam, ps in sorted(per_tree.items()):
            if len(ps) > 1:
                reported.add((fam, frozenset(ps)))
                findings.append(Finding(
                    "DUP_RUNTIME", Severity.WARNING,
                    f"{p} maps {len(ps)} {fam} runtimes in one process: {', '.join(sorted(ps))}",
                    fix="make every component use one copy (preload it, or depend on the same wheel)",
                    details={"path": p, "family": fam, "copies": sorted(ps)}))
    for fam, ps in sorted(union.items()):
        if len(ps) > 1:
            distinct = {digests.get(x) or x for x in ps}
            runtimes.append(RuntimeCopies(fam, tuple(sorted(ps))))
            if len(distinct) > 1 and (fam, frozenset(ps)) not in reported:
                findings.append(Finding(
                    "DUP_RUNTIME_COPIES", Severity.WARNING if fam in ("openmp", "blas") else Severity.INFO,
                    f"the scanned objects would map {len(ps)} different {fam} files; one process importing "
                    f"several of them loads them all: {', '.join(sorted(ps))}",
                    details={"family": fam, "copies": sorted(ps)}))
    findings.sort(key=lambda f: (-f.severity.rank, f.code, f.message))
    return ScanReport(roots=tuple(sorted(os.path.abspath(p) for p in paths)), files=tuple(scanned),
                      duplicates=tuple(groups), runtimes=tuple(runtimes), findings=tuple(findings))


def _unreadable(e: ItemError) -> Finding:
    return Finding("UNREADABLE", Severity.WARNING, f"{e.message}: not scanned",
                   fix="run as a user who may read it (or scan what you may read)", details={"path": e.path})


def replace_message(f: Finding, path: str) -> Finding:
    return Finding(f.code, f.severity, f"{path}: {f.message}", f.fix, dict(f.details, root=path))
