"""What the installed distributions declare they need (``Requires-Dist``), checked against what is installed.

pip resolves these at install time, but ``--no-deps``, a later ``pip install``
of one wheel, or two requirement files installed one after the other leave an
environment that contradicts them; the CUDA wheels are where it hurts (torch
pins ``nvidia-cudnn-cu13==9.24.0.43``; ``nvidia-cusparse-cu12`` needs
``nvidia-nvjitlink-cu12`` with no version, so an old nvJitLink stays). The
metadata is read from the target's site dirs with ``importlib.metadata``,
markers are evaluated for the target interpreter (``packaging``), extras count
when their requirements are installed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from mltools.findings import Finding, Severity

__all__ = ["Requirement", "RequirementIndex", "canonical_name", "requirement_findings"]


def canonical_name(name: str) -> str:
    """PEP 503: ``Nvidia_CUDNN.cu13`` -> ``nvidia-cudnn-cu13``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Requirement:
    requirer: str               # canonical name of the distribution that declares it
    name: str                   # canonical name of the requirement
    specifier: str              # "==9.24.0.43", "" for any version
    extra: Optional[str]        # the extra it belongs to (None: always)
    text: str                   # as written in METADATA
    extras: Tuple[str, ...] = ()  # the extras of the requirement it asks for (cuda-toolkit[cublas])


class RequirementIndex:
    """The installed distributions of some site dirs and their requirements."""

    def __init__(self, site_dirs: Sequence[str], marker_env: Optional[Mapping[str, str]] = None):
        from importlib import metadata

        self.versions: Dict[str, str] = {}
        self.display: Dict[str, str] = {}
        self.requires: Dict[str, List[Requirement]] = {}
        self._extras: Optional[Dict[str, FrozenSet[str]]] = None
        self._marker_env = dict(marker_env or {})
        for dist in metadata.distributions(path=list(site_dirs)):
            md = dist.metadata            # each access reads and parses METADATA again
            name = md["Name"] if md else None
            if not name:
                continue
            key = canonical_name(name)
            if key in self.versions:      # the first on the path wins, as for imports
                continue
            self.versions[key] = md["Version"]
            self.display[key] = name
            # an .egg-info keeps them in requires.txt, which only dist.requires reads
            self.requires[key] = self._parse(key, md.get_all("Requires-Dist") or dist.requires or ())

    def _parse(self, requirer: str, lines: Iterable[str]) -> List[Requirement]:
        from packaging.requirements import InvalidRequirement, Requirement as PkgRequirement

        out = []
        for line in lines:
            try:
                req = PkgRequirement(line)
            except InvalidRequirement:      # not PEP 508: pip cannot act on it either
                continue
            extra = None
            if req.marker is not None:
                m = re.search(r"""extra\s*==\s*["']([^"']+)["']""", str(req.marker))
                extra = canonical_name(m.group(1)) if m else None
                env = dict(self._marker_env)
                env["extra"] = extra or ""
                try:
                    if not req.marker.evaluate(env):
                        continue
                except Exception:   # an unknown marker variable: keep the requirement  # noqa: BLE001
                    pass
            out.append(Requirement(requirer, canonical_name(req.name), str(req.specifier), extra, line,
                                   tuple(sorted(canonical_name(x) for x in req.extras))))
        return out

    def _extras_in_use(self) -> Dict[str, FrozenSet[str]]:
        """Per distribution, the extras that apply: those another active requirement asks for
        (``cuda-toolkit[cublas]``) and, as pip records no extras the user asked for, those whose
        requirements are all installed at matching versions, or that name an installed
        distribution nothing else requires (it was installed for that extra)."""
        if self._extras is not None:
            return self._extras
        by_dist: Dict[str, Dict[str, List[Requirement]]] = {}
        for dist, reqs in self.requires.items():
            for r in reqs:
                if r.extra:
                    by_dist.setdefault(dist, {}).setdefault(r.extra, []).append(r)
        def installed(r: Requirement) -> bool:
            if r.name not in self.versions or _satisfied(r.specifier, self.versions[r.name]) is False:
                return False
            own = by_dist.get(r.name, {})
            return all(q.name in self.versions for x in r.extras for q in own.get(x, ()))

        # a distribution installed that only this extra asks for was installed for it
        # (cupy[ctk] brought cuda-toolkit); one that other requirements name proves nothing
        wanted_by: Dict[str, Set[Tuple[str, Optional[str]]]] = {}
        for dist, reqs in self.requires.items():
            for r in reqs:
                wanted_by.setdefault(r.name, set()).add((dist, r.extra))

        def asked_for(dist: str, extra: str, reqs: List[Requirement]) -> bool:
            return all(installed(r) for r in reqs) or any(
                r.name in self.versions and wanted_by.get(r.name) == {(dist, extra)} for r in reqs)

        chosen: Dict[str, Set[str]] = {d: {e for e, reqs in extras.items() if asked_for(d, e, reqs)}
                                       for d, extras in by_dist.items()}
        changed = True
        while changed:
            changed = False
            for dist, reqs in self.requires.items():
                mine = chosen.get(dist, set())
                for r in reqs:
                    if (r.extra is None or r.extra in mine) and r.extras:
                        have = chosen.setdefault(r.name, set())
                        new = set(r.extras) - have
                        if new:
                            have |= new
                            changed = True
        self._extras = {d: frozenset(e) for d, e in chosen.items()}
        return self._extras

    def active(self, dist: str) -> List[Requirement]:
        """The requirements of ``dist`` that apply: unconditional ones and those of extras in use."""
        key = canonical_name(dist)
        extras = self._extras_in_use().get(key, frozenset())
        return [r for r in self.requires.get(key, ()) if r.extra is None or r.extra in extras]

    def required_names(self, dist: str) -> Set[str]:
        """Every name ``dist`` requires, directly or through installed distributions it requires."""
        out: Set[str] = set()
        todo = [canonical_name(dist)]
        seen: Set[str] = set()
        while todo:
            d = todo.pop()
            if d in seen:
                continue
            seen.add(d)
            for r in self.active(d):
                out.add(r.name)
                if r.name in self.versions:
                    todo.append(r.name)
        return out

    def requirement_of(self, dist: str, name: str) -> Optional[Requirement]:
        """The requirement on ``name`` that ``dist`` declares, directly or through what it requires."""
        todo = [canonical_name(dist)]
        seen: Set[str] = set()
        target = canonical_name(name)
        while todo:
            d = todo.pop(0)
            if d in seen:
                continue
            seen.add(d)
            for r in self.active(d):
                if r.name == target:
                    return r
                if r.name in self.versions:
                    todo.append(r.name)
        return None


_CUDA_REQUIREMENT = re.compile(r"^(nvidia-|cuda-|cutensor-|cupy-|jax-cuda|jaxlib|torch$|triton$)")


def _satisfied(spec: str, version: str) -> Optional[bool]:
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        return SpecifierSet(spec).contains(Version(version), prereleases=True)
    except (InvalidSpecifier, InvalidVersion):
        return None


def requirement_findings(index: RequirementIndex) -> List[Finding]:
    """REQUIREMENT_MISMATCH / REQUIREMENT_MISSING for the CUDA-related requirements of the
    installed distributions (as ``pip check`` would, limited to the CUDA stack)."""
    out: List[Finding] = []
    for dist in sorted(index.requires):
        for r in index.active(dist):
            if not _CUDA_REQUIREMENT.match(r.name):
                continue
            have = index.versions.get(r.name)
            who = f"{index.display[dist]} {index.versions[dist]}"
            if have is None:
                out.append(Finding(
                    "REQUIREMENT_MISSING", Severity.WARNING,
                    f"{who} requires {r.name}{r.specifier}, which is not installed",
                    fix=f"pip install '{r.name}{r.specifier}'",
                    details={"package": who, "requirement": r.text, "name": r.name, "specifier": r.specifier}))
                continue
            if r.specifier and _satisfied(r.specifier, have) is False:
                out.append(Finding(
                    "REQUIREMENT_MISMATCH", Severity.WARNING,
                    f"{who} requires {r.name}{r.specifier} but {r.name} {have} is installed",
                    fix=f"pip install '{r.name}{r.specifier}' (or reinstall {index.display[dist]} without --no-deps "
                        "so pip picks matching versions)",
                    details={"package": who, "requirement": r.text, "name": r.name, "specifier": r.specifier,
                             "installed": have}))
    return out


def marker_environment(python_version: str, implementation: str = "cpython") -> Dict[str, str]:
    """The PEP 508 marker variables of a Linux x86-64 CPython interpreter of ``python_version``."""
    import platform

    parts = python_version.split(".")
    return {
        "python_version": ".".join(parts[:2]), "python_full_version": python_version,
        "implementation_name": implementation.lower(), "platform_python_implementation":
            "CPython" if implementation.lower() == "cpython" else implementation,
        "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
        "platform_machine": platform.machine(), "platform_release": platform.release(),
        "implementation_version": python_version, "platform_version": platform.version(),
    }

