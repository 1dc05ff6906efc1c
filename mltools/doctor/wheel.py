"""``doctor --wheel``: the checks of a wheel before it is installed.

The ELF members are read from the archive into a private temporary directory
(nothing is installed, nothing is run) and resolved as the loader would:
inside the wheel first (``$ORIGIN`` RUNPATHs to the ``.libs`` directory that
``auditwheel repair`` grafts, or a member with that SONAME), then on this
machine. What the wheel does not ship is what the target must provide: each
versioned need on those libraries is judged against every ``--target`` (and
against this machine when none is given), and the most compatible manylinux
policy the wheel satisfies is worked out the way ``auditwheel show`` does
(set membership in auditwheel's policy, plus its whitelist of system
libraries). The members' CPU instructions are scanned too (``--cpu``).
"""
from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

from mltools.doctor.isa import IsaSummary
from mltools.doctor.targets import TargetCheck
from mltools.errors import InputError
from mltools.findings import FailOn, Finding, ItemError, Severity

__all__ = ["WheelCheck", "WheelReport", "check_wheels"]


@dataclass(frozen=True)
class WheelCheck:
    """One wheel."""
    wheel: str
    name: Optional[str]
    version: Optional[str]
    tags: Tuple[str, ...]                       # as its WHEEL file declares them
    elf_files: int
    shipped: Tuple[str, ...]                    # SONAMEs it brings (its .libs and its own libraries)
    external: Dict[str, Tuple[str, ...]]        # SONAME it needs from the system -> members needing it
    needs: Dict[str, Tuple[str, ...]]           # system library -> versions needed (what auditwheel lists)
    newest: Dict[str, str]                      # GLIBC -> 2.27, GLIBCXX -> 3.4.22, CXXABI, GCC
    manylinux: Optional[str]                    # the most compatible policy its needs satisfy
    targets: Tuple[TargetCheck, ...]
    isa: Optional[IsaSummary]
    findings: Tuple[Finding, ...]


@dataclass(frozen=True)
class WheelReport:
    SCHEMA: ClassVar[str] = "mltools.doctor.wheel"
    SCHEMA_VERSION: ClassVar[int] = 1

    wheels: Tuple[WheelCheck, ...]
    errors: Tuple[ItemError, ...]
    fail_on: str
    failed: bool


def _metadata(z: zipfile.ZipFile) -> Tuple[Optional[str], Optional[str], Tuple[str, ...]]:
    name = version = None
    tags: List[str] = []
    for info in z.infolist():
        parts = info.filename.split("/")
        if len(parts) != 2 or not parts[0].endswith(".dist-info"):
            continue
        if parts[1] == "WHEEL":
            text = z.read(info).decode("utf-8", "replace")
            tags = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]
        elif parts[1] == "METADATA":
            for line in z.read(info).decode("utf-8", "replace").splitlines():
                if line.startswith("Name:") and name is None:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("Version:") and version is None:
                    version = line.split(":", 1)[1].strip()
                elif not line.strip():
                    break
    return name, version, tuple(tags)


def _extract_elf(z: zipfile.ZipFile, dest: str) -> List[str]:
    out = []
    for info in z.infolist():
        if info.is_dir() or info.file_size < 64:
            continue
        norm = os.path.normpath(info.filename)
        if norm.startswith(("..", "/")) or os.path.isabs(norm):
            continue                                    # never write outside the directory
        with z.open(info) as fh:
            if fh.read(4) != b"\x7fELF":
                continue
        target = os.path.join(dest, norm)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                dst.write(block)
        out.append(target)
    return out


def _vkey(v: str):
    return [int(x) if x.isdigit() else -1 for x in re.split(r"[._]", v.split("_", 1)[-1])]


def check_wheel(path: str, targets, cpu, *, jobs: int = 1, progress: Optional[Callable] = None,
                explicit_cpu: bool = False) -> WheelCheck:
    from mltools._lifecycle import temp_dir
    from mltools.doctor.targets import PROVIDED, best_manylinux, judge_targets, versioned_needs
    from mltools.elf.ldtree import Resolver, resolve_tree
    from mltools.elf.reader import read_elf
    from mltools.errors import MltoolsError

    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not a wheel (zip archive): {exc}") from None
    with z, temp_dir("mltools-wheel-") as tmp:
        name, version, tags = _metadata(z)
        members = _extract_elf(z, tmp)
        rel = {m: os.path.relpath(m, tmp) for m in members}
        findings: List[Finding] = []
        infos = {}
        for m in members:
            try:
                infos[m] = read_elf(m)
            except MltoolsError as exc:
                findings.append(Finding("BAD_ELF", Severity.ERROR, f"{rel[m]}: {exc.message}",
                                        fix="rebuild the wheel", details={"path": rel[m]}))
        # a member answers to its SONAME and to its file name (auditwheel's grafted copies are
        # needed under the file name)
        shipped = {n for m, i in infos.items() for n in (i.soname, os.path.basename(m)) if n}
        resolver = Resolver()
        external: Dict[str, List[str]] = {}
        missing: Dict[str, List[str]] = {}
        real_tmp = os.path.realpath(tmp)
        for m, info in infos.items():
            if not info.has_dynamic:
                continue
            try:
                tree = resolve_tree(m, resolver=resolver)
            except MltoolsError:
                continue
            for lib in tree.libraries:
                if lib.path and lib.path.startswith(real_tmp + os.sep):
                    continue
                needers = [rel.get(n, n) for n in lib.needed_by if n and n.startswith(real_tmp)] or [rel[m]]
                if lib.soname in shipped or lib.soname.startswith("ld-linux"):
                    continue        # in the wheel (found once another member loaded it), or the loader itself
                if lib.path is None:
                    missing.setdefault(lib.soname, []).extend(needers)
                external.setdefault(lib.soname, []).extend(needers)
        for soname, needers in sorted(missing.items()):
            findings.append(Finding(
                "MISSING_LIBRARY", Severity.ERROR if soname in PROVIDED else Severity.WARNING,
                f"{soname} is neither in the wheel nor on this machine, needed by {sorted(set(needers))[0]}"
                + (f" and {len(set(needers)) - 1} more" if len(set(needers)) > 1 else ""),
                fix=f"install the system package that provides {soname} before installing the wheel",
                details={"soname": soname, "needed_by": sorted(set(needers)), "path": sorted(set(needers))[0]}))
        needs_by_file = {}
        for m, info in infos.items():
            try:
                needs_by_file[rel[m]] = versioned_needs(m)
            except MltoolsError:
                continue
        system_needs: Dict[str, set] = {}
        for ns in needs_by_file.values():
            for n in ns:
                if n.library not in shipped and not n.library.startswith("ld-linux"):
                    system_needs.setdefault(n.library, set()).add(n.version)
        newest: Dict[str, str] = {}
        for lib, vers in system_needs.items():
            if lib not in PROVIDED:
                continue
            for v in vers:
                prefix = v.split("_", 1)[0]
                if prefix in ("GLIBC", "GLIBCXX", "CXXABI", "GCC") and re.fullmatch(r"[A-Z]+_[0-9.]+", v):
                    if prefix not in newest or _vkey(v) > _vkey(newest[prefix]):
                        newest[prefix] = v
        all_needs = [n for ns in needs_by_file.values() for n in ns]
        manylinux = best_manylinux(all_needs, shipped, external)
        owner = f"{name} {version}" if name else os.path.basename(path)
        target_fs, checks = judge_targets(needs_by_file, targets, lambda p: owner, shipped,
                                          {k: tuple(v) for k, v in external.items()})
        findings += target_fs
        isa_summary = None
        from mltools.elf.isa import decoder_available
        if cpu is not None and decoder_available():
            from mltools.doctor.isa import isa_pass
            isa_summary, isa_findings, _scope = isa_pass(members, lambda p: owner, cpu, {}, jobs=jobs,
                                                         progress=progress, unproven_notes=explicit_cpu)
            isa_summary = _relative_isa(isa_summary, rel)
            findings += [_relative_finding(f, rel) for f in isa_findings]
    return WheelCheck(
        wheel=path, name=name, version=version, tags=tags, elf_files=len(members), shipped=tuple(sorted(shipped)),
        external={k: tuple(sorted(set(v))) for k, v in sorted(external.items())},
        needs={k: tuple(sorted(v, key=_vkey)) for k, v in sorted(system_needs.items())},
        newest=dict(sorted(newest.items())), manylinux=manylinux, targets=tuple(checks), isa=isa_summary,
        findings=tuple(sorted(findings, key=lambda f: (-f.severity.rank, f.code, f.message))))


def _relative_finding(f: Finding, rel: Dict[str, str]) -> Finding:
    d = dict(f.details)
    msg = f.message
    for abs_path, r in rel.items():
        msg = msg.replace(abs_path, r)
    if d.get("path") in rel:
        d["path"] = rel[d["path"]]
    if "files" in d:
        d["files"] = [rel.get(p, p) for p in d["files"]]
    return Finding(f.code, f.severity, msg, f.fix, d)


def _relative_isa(summary: IsaSummary, rel: Dict[str, str]) -> IsaSummary:
    import dataclasses
    files = tuple(dataclasses.replace(f, path=rel.get(f.path, f.path)) for f in summary.files)
    return dataclasses.replace(summary, files=files)


def check_wheels(paths: Sequence[str], target_names: Sequence[str] = (), cpu: Optional[str] = None,
                 isa: bool = True, fail_on: Optional[FailOn] = None, jobs: Optional[int] = 1,
                 progress: Optional[Callable] = None) -> WheelReport:
    """Check each wheel; one that cannot be read is an ItemError and the others go on.
    Without ``target_names`` the target is this machine (its glibc and system libstdc++).
    ``jobs``: worker processes of the CPU-instruction scan (None or 0: the usable CPUs)."""
    from mltools._sysfs import usable_cpus
    from mltools.doctor.core import resolve_cpu, resolve_targets
    from mltools.doctor.targets import this_machine
    from mltools.findings import require_some_processed

    fail_on = fail_on or FailOn()
    jobs = jobs or usable_cpus()
    targets = resolve_targets(target_names) or [this_machine(_system_libs())]
    cpu_t = resolve_cpu(cpu) if isa else None
    wheels, errors = [], []
    for p in paths:
        if not os.path.isfile(p):
            errors.append(ItemError(p, f"{p}: no such file"))
            continue
        try:
            wheels.append(check_wheel(p, targets, cpu_t, jobs=jobs, progress=progress, explicit_cpu=bool(cpu)))
        except InputError as exc:
            errors.append(ItemError(p, exc.message))
    require_some_processed(errors, len(paths), "wheels")
    findings = [f for w in wheels for f in w.findings]
    return WheelReport(tuple(wheels), tuple(errors), str(fail_on), fail_on.matches(findings) or bool(errors))


def _system_libs() -> Dict[str, str]:
    """Where this machine's loader finds libc, libstdc++ and libgcc_s (the ld.so cache)."""
    from mltools.elf.ldcache import read_ld_cache

    cache = read_ld_cache()
    out: Dict[str, str] = {}
    for soname in ("libc.so.6", "libstdc++.so.6", "libgcc_s.so.1"):
        entry = cache.lookup(soname) if cache else None
        if entry is not None:
            out[soname] = os.path.realpath(entry.path)
    return out
