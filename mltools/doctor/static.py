"""The static pass: every ELF file of the environment, read and resolved, never run.

- each file is read with :mod:`mltools.elf.reader` (a truncated or non-ELF
  ``.so`` is a finding, the classic being a Git LFS pointer);
- extension modules and executables are resolved as ld.so would, in the
  interpreter's context, with the ``mltools.elf`` resolver and checks
  (missing libraries, unmet version needs, undefined symbols, C++ ABI);
- the libraries reached are sorted into runtime families (OpenMP, BLAS,
  libstdc++, CUDA majors) and several copies that can share one process are
  reported with the packages that bring each;
- byte-identical libraries shipped twice are grouped.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

from mltools.doctor import runtimes as rt
from mltools.doctor.duplicates import identical_groups
from mltools.doctor.interp import InterpreterInfo
from mltools.doctor.model import RuntimeCopy
from mltools.doctor.owners import OwnerIndex
from mltools.doctor.walk import ElfCandidate
from mltools.findings import Finding, Severity

@dataclass(frozen=True)
class StaticResult:
    findings: Tuple[Finding, ...]
    runtimes: Tuple[RuntimeCopy, ...]
    cuda_majors: Dict[int, Tuple[str, ...]] = field(default_factory=dict)   # major -> who brings it
    scope: Tuple[str, ...] = ()


@dataclass
class _Node:
    """A library some environment file needs, wherever it was found."""
    soname: str
    path: Optional[str]
    needed_by: Set[str] = field(default_factory=set)


def owner_text(owners: OwnerIndex, path: Optional[str]) -> Optional[str]:
    o = owners.owner(path) if path else None
    return str(o) if o else None


def _bad_elf_finding(path: str, reason: str, owners: OwnerIndex) -> Finding:
    lfs = False
    try:
        with open(path, "rb") as fh:
            lfs = fh.read(40).startswith(b"version https://git-lfs")
    except OSError:
        pass
    owner = owners.owner(path)
    fix = ("the file is a Git LFS pointer: run git lfs pull in its repository, or reinstall"
           if lfs else "reinstall the package that installed it")
    if owner is not None and owner.manager == "pip":
        fix += f" (pip install --force-reinstall --no-deps {owner.name}=={owner.version})"
    return Finding("BAD_ELF", Severity.ERROR,
                   f"{path}: {reason}: the loader refuses it (and stops searching)", fix=fix,
                   details={"path": path, "package": str(owner) if owner else None, "git_lfs_pointer": lfs})


def static_pass(interp: InterpreterInfo, candidates: Sequence[ElfCandidate], owners: OwnerIndex,
                environ: Mapping[str, str]) -> StaticResult:
    from mltools.elf.reader import ElfFormatError, read_elf

    findings: List[Finding] = []
    scope: List[str] = []
    infos = {}
    for c in candidates:
        try:
            infos[c.path] = read_elf(c.path)
        except ElfFormatError as exc:
            findings.append(_bad_elf_finding(c.path, exc.reason, owners))
        except OSError as exc:
            findings.append(Finding("UNREADABLE", Severity.WARNING, f"{c.path}: {exc.strerror}",
                                    details={"path": c.path}))

    nodes = _resolve_needed(interp, candidates, infos, owners, environ, findings, scope)
    copies, cuda = _runtime_copies(nodes, infos, owners)
    findings += _runtime_findings(copies)
    ext = {c.path for c in candidates if c.is_extension}
    findings += _identical_findings([p for p in infos if p not in ext], infos, owners)
    return StaticResult(tuple(findings), tuple(copies), cuda, tuple(scope))


def _resolve_needed(interp, candidates, infos, owners, environ, findings, scope) -> Dict[str, _Node]:
    """Map every NEEDED name of the environment's files to the file the loader would use.

    Returns nodes keyed by resolved path (or ``"missing:" + soname``).
    """
    by_soname: Dict[str, str] = {}
    for path, info in infos.items():
        for name in filter(None, (info.soname, os.path.basename(path))):
            by_soname.setdefault(name, path)
    nodes: Dict[str, _Node] = {}
    ext = {c.path for c in candidates if c.is_extension}
    for path, info in infos.items():
        # every environment library is a node, needed or not (grafted copies count)
        if path not in ext and info.type == 3:
            key = os.path.realpath(path)
            nodes.setdefault(key, _Node(info.soname or os.path.basename(path), path))
        for name in info.needed:
            target = by_soname.get(name)
            key = os.path.realpath(target) if target else "soname:" + name
            node = nodes.setdefault(key, _Node(name, target))
            node.needed_by.add(path)
    scope.append("library resolution: NEEDED names are matched to the environment's own files only "
                 "(the ld.so resolver is not wired in yet)")
    return nodes


def _classify(node: _Node, infos) -> Optional[rt.RuntimeKind]:
    return rt.classify_file(node.path, node.soname)


def _runtime_copies(nodes: Mapping[str, _Node], infos, owners: OwnerIndex):
    copies: List[RuntimeCopy] = []
    cuda: Dict[int, Set[str]] = defaultdict(set)
    for key, node in sorted(nodes.items()):
        kind = _classify(node, infos)
        if kind is None:
            continue
        pkg = owner_text(owners, node.path)
        copies.append(RuntimeCopy(kind.family, kind.implementation, kind.major, node.soname,
                                  node.path or "", pkg, tuple(sorted(node.needed_by))))
        if kind.family == "cuda-runtime" and kind.major and kind.major.isdigit():
            brought = {owner_text(owners, p) or p for p in node.needed_by} or {pkg or node.path or node.soname}
            cuda[int(kind.major)].update(brought)
    return copies, {k: tuple(sorted(v)) for k, v in cuda.items()}


def _who(copy: RuntimeCopy) -> str:
    where = copy.package or copy.path or "not found"
    return f"{copy.soname} ({where})"


def _runtime_findings(copies: Sequence[RuntimeCopy]) -> List[Finding]:
    out: List[Finding] = []
    by_family: Dict[str, List[RuntimeCopy]] = defaultdict(list)
    for c in copies:
        by_family[c.family].append(c)

    def details(group):
        return {"copies": [{"soname": c.soname, "path": c.path, "package": c.package,
                            "needed_by": list(c.needed_by)} for c in group]}

    omp = _distinct_sonames(by_family.get("openmp", []))
    if len(omp) > 1:
        kmp = [c for c in omp if rt.is_kmp_family(rt.RuntimeKind(c.family, c.implementation, c.major))]
        names = ", ".join(_who(c) for c in omp)
        if len(kmp) > 1:
            out.append(Finding(
                "DUP_OPENMP_INTEL", Severity.ERROR,
                f"{len(kmp)} Intel/LLVM OpenMP runtimes can be loaded into one process: {names}; the second "
                "to start aborts with 'OMP: Error #15: Initializing libiomp5.so, but found ... already initialized'",
                fix="make the packages share one OpenMP runtime (install builds that use the same one); "
                    "KMP_DUPLICATE_LIB_OK=TRUE only hides the crash",
                details=details(omp)))
        else:
            out.append(Finding(
                "DUP_OPENMP", Severity.WARNING,
                f"{len(omp)} OpenMP runtimes can be loaded into one process: {names}; each starts its own "
                "thread pool (oversubscription) and GOMP_* calls may bind to the wrong one",
                fix="install builds of these packages that use one OpenMP runtime, or LD_PRELOAD one of them "
                    "and set OMP_NUM_THREADS",
                details=details(omp)))
    blas = _distinct_sonames(by_family.get("blas", []))
    # numpy and scipy ship symbol-prefixed OpenBLAS builds (scipy_openblas*) made to coexist.
    plain = [c for c in blas if "scipy_openblas" not in c.soname]
    if len(blas) > 1 and plain:
        out.append(Finding(
            "DUP_BLAS", Severity.INFO,
            f"{len(blas)} BLAS libraries can be loaded into one process: {', '.join(_who(c) for c in blas)}; "
            "each has its own thread pool",
            fix="limit their threads together with threadpoolctl.threadpool_limits() or OMP_NUM_THREADS/"
                "OPENBLAS_NUM_THREADS/MKL_NUM_THREADS",
            details=details(blas)))
    for fam, label in (("cuda-runtime", "CUDA runtime"), ("cudnn", "cuDNN"), ("nccl", "NCCL"), ("cublas", "cuBLAS")):
        group = by_family.get(fam, [])
        majors = sorted({c.major for c in group if c.major})
        if len(majors) > 1:
            out.append(Finding(
                "DUP_CUDA_MAJOR", Severity.WARNING,
                f"{label} majors {', '.join(majors)} are all needed here: {', '.join(_who(c) for c in group)}; "
                "packages built for different CUDA majors cannot share memory or streams, and the driver must "
                "support the newest",
                fix=f"install one CUDA flavour of every package (all -cu{majors[-1]} or all -cu{majors[0]})",
                details={**details(group), "majors": majors}))
    return out


def _distinct_sonames(group: Sequence[RuntimeCopy]) -> List[RuntimeCopy]:
    """One copy per SONAME: the loader maps a SONAME once per process."""
    seen: Dict[str, RuntimeCopy] = {}
    for c in group:
        seen.setdefault(c.soname, c)
    return list(seen.values())


def _identical_findings(paths: Sequence[str], infos, owners: OwnerIndex) -> List[Finding]:
    out = []
    for digest, group in identical_groups(paths):
        sonames = {infos[p].soname or os.path.basename(p) for p in group if p in infos}
        pkgs = sorted({owner_text(owners, p) or "-" for p in group})
        same = len(sonames) == 1
        out.append(Finding(
            "IDENTICAL_LIBRARY", Severity.INFO,
            f"{len(group)} byte-identical copies of {sorted(sonames)[0]}"
            f" ({', '.join(pkgs)})" + (": the loader maps one of them (same SONAME)" if same
                                         else ": different SONAMEs, so a process can map each copy"),
            fix=None if same else "nothing breaks; shipping one copy would save memory",
            details={"sha256": digest, "paths": list(group), "packages": pkgs}))
    return out
