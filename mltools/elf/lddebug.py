"""Parse glibc's ``LD_DEBUG`` output (categories libs, files, versions, bindings).

The format strings come from glibc's ``elf/dl-load.c``, ``dl-cache.c``,
``dl-lookup.c``, ``dl-version.c``, ``dl-open.c`` and ``rtld.c`` (2.36). Every
line starts with ``<pid>:\\t``. One file can hold several programs because
``exec`` keeps the PID: a program's start-up ends with ``initialize program:
NAME`` and ``transferring control: NAME``; the lines after that belong to the
running program (dlopen, lazy bindings, fini) until the next program's
start-up, which begins with its first ``file=X;  needed by NAME`` (or, for a
program without DT_NEEDED, at ld.so's own ``calling init``). The vdso's
self-bindings that open a start-up are no marker: lazy binding repeats them.

Attribution of a library search comes from the ``file=X;  needed by Y`` /
``dynamically loaded by Y`` line that opens it, never from the ``(RPATH from
file Z)`` label, which names whichever object first registered that directory.

Every non-blank line is either understood or counted as unparsed (and kept,
up to a limit, for ``--verbose``): nothing is dropped silently.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

CATEGORIES = ("libs", "files", "versions", "bindings")
UNPARSED_KEEP = 200   # lines kept verbatim per program; the count is always exact

_PREFIX = re.compile(r"^\s*(\d+):\t?(.*)$")
_NEEDED = re.compile(r"^file=(.*) \[(\d+)\];  (needed|dynamically loaded) by (.*) \[(\d+)\]$")
_LINKMAP = re.compile(r"^file=(.*) \[(\d+)\];  generating link map$")
_DESTROY = re.compile(r"^file=(.*) \[(\d+)\];  destroying link map$")
_FIND = re.compile(r"^find library=(.*) \[(\d+)\]; searching$")
_SEARCH_PATH = re.compile(r"^ search path=(.*?)\t\t\((.*)\)$")
_SEARCH_CACHE = re.compile(r"^ search cache=(.*)$")
_TRYING = re.compile(r"^  trying file=(.*)$")
_OPENING = re.compile(r"^opening file=(.*) \[(\d+)\]; direct_opencount=(\d+)$")
_CLOSING = re.compile(r"^closing file=(.*); direct_opencount=(\d+)$")
_DYN = re.compile(r"^  dynamic: 0x[0-9a-f]+  base: 0x[0-9a-f]+\s+size: 0x[0-9a-f]+$")
_ENTRY = re.compile(r"^    entry: 0x[0-9a-f]+  phdr: 0x[0-9a-f]+  phnum:\s+\d+$")
_INIT = re.compile(r"^calling init: (.*)$")
_FINI = re.compile(r"^calling fini: (.*?)(?: \[(\d+)\])?$")
_INITIALIZE = re.compile(r"^initialize program: (.*)$")
_TRANSFER = re.compile(r"^transferring control: (.*)$")
_CHECK_VERSION = re.compile(r"^checking for version `(.*)' in file (.*) \[(\d+)\] required by file (.*) \[(\d+)\]$")
_VERSION_ERROR = re.compile(r"^(.*): error: version lookup error: version `(.*)' not found \(required by (.*)\) \((fatal|continued)\)$")
_ERROR = re.compile(r"^(.*): error: (.*?): (.*) \((fatal|continued)\)$")
_BINDING = re.compile(r"^binding file (.*) \[(\d+)\] to (.*) \[(\d+)\]: (normal|protected) symbol `(.*)'(?: \[(.*)\])?$")
_NODELETE = re.compile(r"^(marking (.*) \[(\d+)\] as NODELETE due to (.*)|activating NODELETE for (.*) \[(\d+)\])$")
_RELOC_DEP = re.compile(r"^file=(.*) \[(\d+)\];  needed by (.*) \[(\d+)\] \(relocation dependency\)$")


@dataclass(frozen=True)
class SearchStep:
    """One place ld.so looked: a path list (with its label) or the cache."""
    source: str                     # "RUNPATH from file X", "LD_LIBRARY_PATH", "system search path", "cache"
    dirs: Tuple[str, ...]           # for the cache: the cache file
    tried: Tuple[str, ...]          # the files it tried, in order


@dataclass(frozen=True)
class LibraryLoad:
    """One object ld.so mapped (or failed to find) for a program."""
    name: str                       # as requested: a soname or a path
    path: Optional[str]             # where it was found; None if not found
    how: str                        # "needed" or "dlopen"
    requested_by: str               # the object that needed / dlopen'ed it
    namespace: int
    searched: bool                  # False when the name had a slash (no search)
    search: Tuple[SearchStep, ...]
    at_startup: bool                # loaded before "initialize program"


@dataclass(frozen=True)
class VersionCheck:
    version: str
    in_file: str
    required_by: str


@dataclass(frozen=True)
class LoaderError:
    """An error ld.so wrote into its debug output (it also goes to stderr)."""
    kind: str                       # "version lookup error", "symbol lookup error", ...
    object: str                     # the object named before ": error:"
    message: str                    # the rest, as ld.so wrote it
    fatal: bool


@dataclass(frozen=True)
class Binding:
    requester: str
    provider: str
    symbol: str
    version: Optional[str]
    kind: str                       # "normal" or "protected"


@dataclass
class ProgramTrace:
    """What ld.so did for one program (one exec) in one process."""
    pid: int
    index: int                      # 0 for the first program in this PID, 1 after the first exec, ...
    forked_from: Optional[int] = None   # a forked child's lines found in its parent's file
    name: Optional[str] = None      # from "initialize program:"; None if it never started
    started: bool = False
    libraries: List[LibraryLoad] = field(default_factory=list)
    version_checks: int = 0
    version_failures: List[LoaderError] = field(default_factory=list)
    errors: List[LoaderError] = field(default_factory=list)
    binding_count: int = 0
    relocation_dependencies: int = 0
    unloaded: List[str] = field(default_factory=list)   # link maps destroyed (dlclose, failed dlopen)
    bindings_by_provider: Dict[str, int] = field(default_factory=dict)
    # symbol -> provider -> count; only kept when bindings were traced
    symbol_providers: Dict[str, Dict[str, int]] = field(default_factory=dict)
    objects: List[str] = field(default_factory=list)   # link-map names in load order
    inits: List[str] = field(default_factory=list)
    unparsed_count: int = 0
    unparsed: List[str] = field(default_factory=list)
    line_count: int = 0


class _Search:
    """A library search being read: the lines after ``find library=``."""

    def __init__(self, name: str, ns: int):
        self.name = name
        self.ns = ns
        self.steps: List[List] = []          # [source, dirs, tried]

    def add_path(self, dirs: str, label: str) -> None:
        self.steps.append([label, tuple(d for d in dirs.split(":") if d), []])

    def add_cache(self, cache: str) -> None:
        self.steps.append(["cache", (cache,), []])

    def trying(self, path: str) -> None:
        if not self.steps:
            self.steps.append(["direct", (), []])
        self.steps[-1][2].append(path)

    def frozen(self) -> Tuple[SearchStep, ...]:
        return tuple(SearchStep(s, d, tuple(t)) for s, d, t in self.steps)

    def last_tried(self) -> Optional[str]:
        for step in reversed(self.steps):
            if step[2]:
                return step[2][-1]
        return None


class _ProgramParser:
    """Feeds the lines of one program into a ProgramTrace."""

    def __init__(self, pid: int, index: int, keep_symbols: bool):
        self.trace = ProgramTrace(pid=pid, index=index)
        self.keep_symbols = keep_symbols
        # pending request: (name, ns, how, requester)
        self._request: Optional[Tuple[str, int, str, str]] = None
        self._search: Optional[_Search] = None

    # -- library loads -------------------------------------------------
    def _finish(self, path: Optional[str]) -> None:
        """Close the pending request/search: found at ``path`` or not found."""
        req, search = self._request, self._search
        if req is None and search is None:
            return
        if req is None:
            # a search with no files= line before it (files category off)
            req = (search.name, search.ns, "needed", "")
        name, ns, how, requester = req
        if self.trace.name is None and not self.trace.started and how == "needed" and requester:
            # the first "needed by" names the main program; "initialize program"
            # confirms it later, or never comes when loading fails
            self.trace.name = requester
        self.trace.libraries.append(LibraryLoad(
            name=name, path=path, how=how, requested_by=requester, namespace=ns,
            searched=search is not None, search=search.frozen() if search else (),
            at_startup=not self.trace.started))
        self._request = None
        self._search = None

    def flush(self) -> None:
        """End of input: a search still open found nothing."""
        if self._request is not None or self._search is not None:
            self._finish(None)

    def feed(self, text: str) -> None:
        t = self.trace
        t.line_count += 1
        if self.feed_known(text):
            return
        t.unparsed_count += 1
        if len(t.unparsed) < UNPARSED_KEEP:
            t.unparsed.append(text)

    def feed_known(self, text: str) -> bool:  # noqa: C901 - one dispatch table
        t = self.trace
        c = text[:1]
        if c == "b":
            m = _BINDING.match(text)
            if m:
                t.binding_count += 1
                provider = m.group(3)
                t.bindings_by_provider[provider] = t.bindings_by_provider.get(provider, 0) + 1
                if self.keep_symbols:
                    sym = m.group(6)
                    if m.group(7):
                        sym = f"{sym}@{m.group(7)}"
                    per = t.symbol_providers.setdefault(sym, {})
                    per[provider] = per.get(provider, 0) + 1
                return True
        if c == " ":
            m = _TRYING.match(text)
            if m:
                if self._search is None:
                    self._search = _Search(self._request[0] if self._request else "?", 0)
                self._search.trying(m.group(1))
                return True
            m = _SEARCH_PATH.match(text)
            if m and self._search is not None:
                self._search.add_path(m.group(1), m.group(2))
                return True
            m = _SEARCH_CACHE.match(text)
            if m and self._search is not None:
                self._search.add_cache(m.group(1))
                return True
            if _DYN.match(text) or _ENTRY.match(text):
                return True
            return False
        if c == "c":
            m = _CHECK_VERSION.match(text)
            if m:
                t.version_checks += 1
                return True
            m = _INIT.match(text)
            if m:
                self.flush()
                t.inits.append(m.group(1))
                return True
            m = _FINI.match(text)
            if m:
                return True
            m = _CLOSING.match(text)
            if m:
                return True
        if c == "f":
            m = _DESTROY.match(text)
            if m:
                # dlclose, or a failed dlopen rolled back
                t.unloaded.append(m.group(1))
                return True
            m = _RELOC_DEP.match(text)
            if m:
                # a symbol binding made the first object depend on the second; no load
                t.relocation_dependencies += 1
                return True
            m = _NEEDED.match(text)
            if m:
                self.flush()
                how = "needed" if m.group(3) == "needed" else "dlopen"
                self._request = (m.group(1), int(m.group(2)), how, m.group(4))
                return True
            m = _FIND.match(text)
            if m:
                if self._search is not None:       # a second search without a link map
                    self._finish(None)
                self._search = _Search(m.group(1), int(m.group(2)))
                return True
            m = _LINKMAP.match(text)
            if m:
                name = m.group(1)
                if self._request is None and self._search is None:
                    # no files= line (the name had a slash, or files is off)
                    self._request = (name, int(m.group(2)), "needed", "")
                path = self._search.last_tried() if self._search else None
                if path is None:
                    # mapped, so found; without a search the name is the best path known
                    path = name
                self._finish(path)
                t.objects.append(path or name)
                return True
        if c == "o":
            m = _OPENING.match(text)
            if m:
                # A dlopen of an object already loaded (under this name, its SONAME, or
                # another path to the same file) prints its file= request and then only
                # this line, naming the object it returns: the request was found.
                if self._request is not None and self._request[2] == "dlopen":
                    self._finish(m.group(1))
                return True
        if c == "i":
            m = _INITIALIZE.match(text)
            if m:
                self.flush()
                t.name = m.group(1)
                t.started = True
                return True
        if c == "t":
            m = _TRANSFER.match(text)
            if m:
                return True
        if c in "ma" and _NODELETE.match(text):
            return True
        if ": error: " in text:
            m = _VERSION_ERROR.match(text)
            if m:
                err = LoaderError("version lookup error", m.group(1),
                                  f"version `{m.group(2)}' not found (required by {m.group(3)})",
                                  m.group(4) == "fatal")
                t.version_failures.append(err)
                t.errors.append(err)
                return True
            m = _ERROR.match(text)
            if m:
                self.flush()
                t.errors.append(LoaderError(m.group(2), m.group(1), m.group(3), m.group(4) == "fatal"))
                return True
        return False


# --------------------------------------------------------------------------
# Splitting a PID file into programs

def _strip(line: str) -> Tuple[Optional[int], str]:
    m = _PREFIX.match(line.rstrip("\n"))
    if not m:
        return None, line.rstrip("\n")
    return int(m.group(1)), m.group(2)


def _is_rtld(path: str) -> bool:
    base = path.rsplit("/", 1)[-1]
    return base.startswith("ld-linux") or base.startswith("ld.so") or base.startswith("ld64.so")


def _starts_program(text: str, next_name: Optional[str], seen_objects: Set[str]) -> bool:
    """Does this line (after a ``transferring control``) open a new program's start-up?"""
    m = _NEEDED.match(text)
    if m and m.group(3) == "needed":
        requester = m.group(4)
        if next_name is not None:
            return requester == next_name
        # A program that never reached "initialize program" (it failed to
        # load): its first request names an object the running one never loaded.
        return requester not in seen_objects
    return False


def _rtld_init_index(texts: Sequence[str], start: int) -> Optional[int]:
    for i in range(start, len(texts)):
        m = _INIT.match(texts[i])
        if m and _is_rtld(m.group(1)):
            return i
    return None


def split_programs(texts: Sequence[str]) -> List[Tuple[int, int]]:
    """[start, end) line ranges, one per program, for the lines of one PID."""
    inits = [i for i, s in enumerate(texts) if s.startswith("initialize program: ")]
    transfers = [i for i, s in enumerate(texts) if s.startswith("transferring control: ")]
    names = [texts[i][len("initialize program: "):] for i in inits]
    bounds: List[int] = [0]
    for k, init_at in enumerate(inits):
        # where does the program after this one start?
        after = next((j for j in transfers if j > init_at), init_at)
        stop = inits[k + 1] if k + 1 < len(inits) else len(texts)
        next_name = names[k + 1] if k + 1 < len(inits) else None
        seen: Set[str] = {names[k]}
        last_tried = None
        start = None
        for i in range(bounds[-1], stop):
            s = texts[i]
            if s[:1] not in ("f", " "):
                continue
            if i > after and _starts_program(s, next_name, seen):
                start = i
                break
            m = _TRYING.match(s)
            if m:
                last_tried = m.group(1)
                continue
            m = _NEEDED.match(s)
            if m:
                seen.add(m.group(1))
                continue
            m = _LINKMAP.match(s)
            if m:
                seen.add(m.group(1))
                if last_tried:
                    seen.add(last_tried)
        if start is None and next_name is not None:
            start = _rtld_init_index(texts, after + 1)
            if start is not None and start >= stop:
                start = None
            if start is None:
                start = after + 1
        if start is not None:
            bounds.append(start)
    bounds.append(len(texts))
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1) if bounds[i + 1] > bounds[i] or i == 0]


def parse_pid_lines(pid: int, lines: Iterable[str], *, keep_symbols: bool = True) -> List[ProgramTrace]:
    """Parse the lines of one ``LD_DEBUG_OUTPUT.<pid>`` file into its programs.

    A child forked without ``exec`` keeps writing into its parent's file with
    its own PID: those lines become programs of that PID (``forked_from``).
    """
    by_pid: Dict[int, List[str]] = {pid: []}
    for line in lines:
        line_pid, text = _strip(line)
        if not text.strip():
            continue
        if line_pid is None:
            by_pid[pid].append("\x00" + text)
        else:
            by_pid.setdefault(line_pid, []).append(text)
    programs: List[ProgramTrace] = []
    for owner, texts in by_pid.items():
        if owner != pid and not texts:
            continue
        for index, (start, end) in enumerate(split_programs(texts)):
            parser = _ProgramParser(owner, index, keep_symbols)
            if owner != pid:
                # it runs its parent's program (no exec, so no start-up of its own)
                parent = programs[-1] if programs else None
                parser.trace.forked_from = pid
                parser.trace.name = parent.name if parent else None
                parser.trace.started = parent.started if parent else False
            for text in texts[start:end]:
                if text.startswith("\x00"):
                    parser.trace.line_count += 1
                    parser.trace.unparsed_count += 1
                    if len(parser.trace.unparsed) < UNPARSED_KEEP:
                        parser.trace.unparsed.append(text[1:])
                    continue
                parser.feed(text)
            parser.flush()
            if owner == pid or parser.trace.line_count:
                programs.append(parser.trace)
    return programs


def parse_pid_file(path: str, pid: int, *, keep_symbols: bool = True) -> List[ProgramTrace]:
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        return parse_pid_lines(pid, fh, keep_symbols=keep_symbols)


def parse_categories(text: str) -> Tuple[str, ...]:
    """``libs,files`` -> ("libs", "files"); ``all`` -> every supported one.

    ``libs`` and ``files`` are always added: ``libs`` says where each object
    was found, and the ``needed by`` lines of ``files`` say who loaded what and
    mark where a program starts after an ``exec``.
    """
    wanted: List[str] = []
    for part in (p.strip().lower() for p in text.split(",")):
        if not part:
            continue
        if part == "all":
            wanted.extend(CATEGORIES)
            continue
        if part not in CATEGORIES:
            raise ValueError(f"unknown LD_DEBUG category {part!r} (use {', '.join(CATEGORIES)} or all)")
        wanted.append(part)
    for always in ("libs", "files"):
        if always not in wanted:
            wanted.append(always)
    return tuple(c for c in CATEGORIES if c in wanted)


def iter_pid_files(directory: str, prefix: str) -> Iterator[Tuple[int, str]]:
    """(pid, path) for every ``<prefix>.<pid>`` file, in PID order."""
    import os

    found = []
    for entry in os.listdir(directory):
        if entry.startswith(prefix + "."):
            tail = entry[len(prefix) + 1:]
            if tail.isdigit():
                found.append((int(tail), os.path.join(directory, entry)))
    yield from sorted(found)
