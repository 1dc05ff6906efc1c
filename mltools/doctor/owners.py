"""Which package owns a file: pip (RECORD), conda (conda-meta) or the OS (dpkg).

The pip index reads the RECORD of every distribution on the target
interpreter's site dirs with ``importlib.metadata`` (from this process: the
metadata is on disk, no need to ask the target). dpkg and conda lists are read
lazily, only for the few system files a finding names.
"""
from __future__ import annotations

import csv
import glob
import json
import os
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Owner:
    manager: str            # "pip", "conda" or "dpkg"
    name: str
    version: Optional[str]

    def __str__(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name


def _norm(path: str) -> str:
    return os.path.normpath(path)


class OwnerIndex:
    """Maps files to the distribution that installed them."""

    def __init__(self, site_dirs: Sequence[str], prefixes: Sequence[str] = ()):
        self._pip: Dict[str, Owner] = {}
        self._real_pip: Optional[Dict[str, Owner]] = None
        self._dists: List[Owner] = []
        self._prefixes = [p for p in prefixes if p]
        self._conda: Optional[Dict[str, Owner]] = None
        self._dpkg: Optional[Dict[str, str]] = None
        self._load_pip(site_dirs)

    # ---------------------------------------------------------------- pip
    def _load_pip(self, site_dirs: Sequence[str]) -> None:
        from importlib import metadata

        seen = set()
        for dist in metadata.distributions(path=list(site_dirs)):
            md = dist.metadata            # each access reads and parses METADATA again
            name = md["Name"] if md else None
            if not name:
                continue
            base = getattr(dist, "_path", None)          # the .dist-info / .egg-info dir
            key = os.fspath(base) if base is not None else name
            if key in seen:
                continue
            seen.add(key)
            owner = Owner("pip", name, md["Version"])
            self._dists.append(owner)
            root = os.path.dirname(os.fspath(base)) if base is not None else None
            if root is None:
                continue
            record = dist.read_text("RECORD")
            if record is not None:
                prefix = root.rstrip("/") + "/"
                pip = self._pip
                for line in record.splitlines():
                    if line.startswith('"'):          # a quoted path (it has a comma): use csv
                        rel = next(csv.reader([line]))[0]
                    else:
                        rel = line.split(",", 1)[0]
                    if not rel:
                        continue
                    key = prefix + rel if "./" not in rel and not rel.startswith("/") else _norm(os.path.join(root, rel))
                    if key not in pip:
                        pip[key] = owner
                continue
            files = dist.read_text("installed-files.txt")   # legacy egg-info
            if files is not None:
                egg = os.fspath(base)
                for line in files.splitlines():
                    if line.strip():
                        self._pip.setdefault(_norm(os.path.join(egg, line.strip())), owner)

    @property
    def distributions(self) -> Tuple[Owner, ...]:
        return tuple(self._dists)

    def recorded(self) -> Iterable[Tuple[str, Owner]]:
        """(path, owner) of every file the pip RECORDs list, present on disk or not."""
        return self._pip.items()

    def pip_owner(self, path: str) -> Optional[Owner]:
        hit = self._pip.get(_norm(path))
        if hit is not None:
            return hit
        if self._real_pip is None:     # paths reached through symlinks
            self._real_pip = {os.path.realpath(p): o for p, o in self._pip.items()
                              if re.search(r"\.so(\.|$)|/bin/", p)}
        return self._real_pip.get(os.path.realpath(path))

    # ---------------------------------------------------------------- conda
    def _conda_owner(self, path: str) -> Optional[Owner]:
        if self._conda is None:
            self._conda = {}
            for prefix in self._prefixes:
                for meta in glob.glob(os.path.join(prefix, "conda-meta", "*.json")):
                    try:
                        with open(meta) as fh:
                            data = json.load(fh)
                    except (OSError, ValueError):
                        continue
                    owner = Owner("conda", str(data.get("name", "?")), data.get("version"))
                    for rel in data.get("files") or ():
                        self._conda[_norm(os.path.join(prefix, rel))] = owner
        return self._conda.get(_norm(path)) or self._conda.get(os.path.realpath(path))

    # ---------------------------------------------------------------- dpkg
    def _dpkg_index(self) -> Dict[str, str]:
        """Shared objects and programs listed by installed Debian packages (read once)."""
        if self._dpkg is None:
            self._dpkg = {}
            info = "/var/lib/dpkg/info"
            try:
                names = sorted(n for n in os.listdir(info) if n.endswith(".list"))
            except OSError:
                names = []
            for name in names:
                pkg = name[:-5].split(":", 1)[0]          # libc6:amd64 -> libc6
                try:
                    with open(os.path.join(info, name), errors="replace") as fh:
                        for line in fh:
                            if ".so" in line or "/bin/" in line:
                                self._dpkg.setdefault(line.rstrip("\n"), pkg)
                except OSError:
                    continue
        return self._dpkg

    def _dpkg_owner(self, path: str) -> Optional[Owner]:
        index = self._dpkg_index()
        if not index:
            return None
        candidates = [_norm(path), os.path.realpath(path)]
        # merged /usr: the lists may name /lib/... for /usr/lib/... and the other way round
        for c in list(candidates):
            candidates.append(c[4:] if c.startswith("/usr/") else "/usr" + c)
        for c in candidates:
            pkg = index.get(c)
            if pkg:
                return Owner("dpkg", pkg, None)
        return None

    def owner(self, path: Optional[str]) -> Optional[Owner]:
        """The pip, conda or dpkg package that installed ``path``, or None."""
        if not path:
            return None
        return self.pip_owner(path) or (self._conda_owner(path) if self._prefixes else None) \
            or (self._dpkg_owner(path) if path.startswith(("/usr/", "/lib")) else None)

    def label(self, path: Optional[str]) -> Optional[str]:
        """The owner of ``path`` as reports name it (``numpy 2.4.6``), or None."""
        o = self.owner(path)
        return str(o) if o else None

    def owners(self, paths: Iterable[str]) -> Dict[str, Optional[Owner]]:
        return {p: self.owner(p) for p in paths}
