"""``mltools elf check``: what ld.so would reject, found without running anything.

Given the objects a file loads, in the loader's order (from the resolver in
``ldtree``), two checks follow glibc's own rules:

* **versions** (``elf/dl-version.c``): every version an object needs from a
  library (``.gnu.version_r``) must be defined by the copy of that library that
  actually resolves (``.gnu.version_d``); ld.so says ``version `FOO_2' not
  found (required by ./m2)``. A weak need (``VER_FLG_WEAK``) is only a warning.
* **symbols** (``elf/dl-lookup.c``, ``check_match``): every undefined, non-weak
  dynamic symbol must be defined by an object in the lookup scope: the global
  scope in load order (the executable, then breadth-first), then the object's
  own dependencies. A versioned reference matches the definition with that
  version, or an unversioned one; an unversioned reference matches the
  default (``@@``) or the oldest version, never a hidden (``@``) one unless it
  is the oldest.

A C++ symbol that is missing but exists with the other ``std::string`` ABI
(``[abi:cxx11]``/``__cxx11``) is reported as ``ABI_MISMATCH``. A symbol found
only in a library that an earlier import loaded (``--after``) but that is not a
dependency is ``FRAGILE_ORDER``: it resolves only if that library was loaded
with ``RTLD_GLOBAL``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import ClassVar, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from mltools.elf.files import is_linker_script_file, is_tagged_extension_name
from mltools.elf.runtimes import duplicate_copies
from mltools.findings import FailOn, Finding, ItemError, Severity, require_some_processed

# this check's own finding codes (the resolver's pass through too)
CHECK_CODES = ("MISSING", "VERSION_MISSING", "VERSION_MISSING_WEAK", "UNDEFINED", "ABI_MISMATCH",
               "FRAGILE_ORDER", "DUP_RUNTIME", "FATAL_CANDIDATE", "UNREADABLE")
_SYMBOLS_SHOWN = 5      # symbols named in one finding's message (details list all)


@dataclass(frozen=True)
class ScopeObject:
    """One object in the process, as the resolver placed it."""
    path: str                                   # as the loader names it (l_name)
    needed: Tuple[Tuple[str, Optional[str]], ...] = ()   # DT_NEEDED name -> resolved path (None: missing)
    context: bool = False       # already loaded by the interpreter / --after imports: not checked itself
    in_scope: bool = True       # in the checked file's lookup scope
    label: Optional[str] = None  # the name ld.so prints (the path as opened); default: path

    @property
    def shown(self) -> str:
        return self.label or self.path


@dataclass(frozen=True)
class SymbolRef:
    name: str
    demangled: str
    version: Optional[str]
    needed_from: Optional[str]      # the library its version names (verneed vn_file)


@dataclass(frozen=True)
class CheckStats:
    objects: int
    symbols_checked: int
    versions_checked: int
    elapsed_s: float


# --------------------------------------------------------------------------
# Reading symbols once per object

@dataclass
class _ObjSyms:
    path: str
    has_versym: bool
    # name -> list of (version name or None, version index, hidden)
    defined: Dict[str, List[Tuple[Optional[str], int, bool]]]
    undefined: List[Tuple[str, Optional[str], Optional[str], str]]   # name, version, vn_file, binding
    version_defs: Tuple[str, ...]
    version_needs: Tuple[Tuple[str, Tuple[str, ...], Tuple[str, ...]], ...]
    error: Optional[str] = None


def _read_object_symbols(path: str) -> _ObjSyms:
    from mltools.elf.reader import ElfFormatError, read_symbols

    try:
        es = read_symbols(path)
    except (ElfFormatError, OSError) as exc:
        return _ObjSyms(path, False, {}, [], (), (), error=str(exc))
    def_index = {vd.name: vd.index for vd in es.version_defs}
    has_versym = bool(es.version_defs or es.version_needs) or any(s.version for s in es.symbols)
    defined: Dict[str, List[Tuple[Optional[str], int, bool]]] = {}
    undefined = []
    for s in es.symbols:
        if not s.name:
            continue
        if s.defined:
            if s.binding not in ("GLOBAL", "WEAK", "GNU_UNIQUE"):
                continue
            # version index 1 = the object's base name (global), 0 = local-unversioned
            idx = def_index.get(s.version, 1) if s.version else 1
            defined.setdefault(s.name, []).append((s.version, idx, s.hidden))
        elif s.binding == "GLOBAL":
            undefined.append((s.name, s.version, s.version_file, s.binding))
    return _ObjSyms(
        path, has_versym, defined, undefined,
        tuple(vd.name for vd in es.version_defs if not vd.base),
        tuple((vn.file, tuple(vn.versions), tuple(vn.weak)) for vn in es.version_needs))


class SymbolCache:
    """Symbols read once per object, shared by the checks of many files.

    Besides the objects it keeps: which objects define each name, which need
    it, for each object the objects defining one of its undefined names, and
    the unresolved symbols of an object for a given set of those in scope
    (system libraries recur in every tree with the same answer).
    """

    def __init__(self) -> None:
        self.objects: Dict[str, _ObjSyms] = {}
        self.definers: Dict[str, List[str]] = {}       # symbol name -> objects defining it
        self._needers: Dict[str, set] = {}             # symbol name -> objects with it undefined
        self.relevant: Dict[str, set] = {}             # object -> objects defining one of its names
        self.unresolved: Dict[tuple, list] = {}        # (object, relevant in scope) -> unresolved

    def get(self, path: str) -> _ObjSyms:
        read = self.objects.get(path)
        if read is None:
            read = self.objects[path] = _read_object_symbols(path)
            mine = self.relevant.setdefault(path, set())
            for name, _, _, _ in read.undefined:
                self._needers.setdefault(name, set()).add(path)
                mine.update(self.definers.get(name, ()))
            for name in read.defined:
                self.definers.setdefault(name, []).append(path)
                for needer in self._needers.get(name, ()):
                    self.relevant[needer].add(path)
        return read


def _matches(obj: _ObjSyms, name: str, version: Optional[str]) -> bool:
    """glibc's check_match for one object (symbol visibility/type aside)."""
    defs = obj.defined.get(name)
    if not defs:
        return False
    if not obj.has_versym:
        return True
    if version is not None:
        # l_versions[ndx].hash is non-zero for every defined index (the base
        # name included), so only the exact version matches
        return any(dver == version for dver, _, _ in defs)
    versioned_default = 0
    for dver, idx, hidden in defs:
        if idx < 3:                          # unversioned, base, or the oldest version
            return True
        if not hidden:
            versioned_default += 1
    return versioned_default == 1


# --------------------------------------------------------------------------
# C++ names

_ABI_TAG = re.compile(r"\[abi:cxx11\]")


def _abi_normal(demangled: str) -> str:
    return _ABI_TAG.sub("", demangled).replace("std::__cxx11::", "std::")


def parameter_list_start(demangled: str) -> int:
    """Where the parameter list of a demangled function name starts: its first ``(``
    outside template arguments and parentheses; -1 when there is none."""
    depth = 0
    for i, ch in enumerate(demangled):
        if ch in "<(":
            if ch == "(" and depth == 0:
                return i
            depth += 1
        elif ch in ">)":
            depth -= 1
    return -1


def _innermost_identifier(demangled: str) -> Optional[str]:
    """``c10::detail::torchCheckFail(char const*, ...)`` -> ``torchCheckFail``."""
    end = parameter_list_start(demangled)
    head = _ABI_TAG.sub("", demangled[:end if end >= 0 else len(demangled)])
    # drop template arguments at the end, then take the last qualified part
    while head.endswith(">"):
        d = 0
        for j in range(len(head) - 1, -1, -1):
            if head[j] == ">":
                d += 1
            elif head[j] == "<":
                d -= 1
                if d == 0:
                    head = head[:j]
                    break
        else:
            break
    last = head.rsplit("::", 1)[-1].strip()
    return last if re.fullmatch(r"[A-Za-z_]\w*", last or "") else None


def demangle_all(names: Sequence[str]) -> List[str]:
    from mltools.elf.inspect import demangle

    return demangle(list(names)) if names else []


# --------------------------------------------------------------------------
# The check

def check_objects(objects: Sequence[ScopeObject], *, extra_findings: Iterable[Finding] = (),
                  symbol_cache: Optional[SymbolCache] = None) -> Tuple[List[Finding], CheckStats]:
    """Version and symbol checks over ``objects`` (in load order).

    ``symbol_cache`` is shared across calls for many files.
    """
    import time

    start = time.perf_counter()
    cache = SymbolCache() if symbol_cache is None else symbol_cache
    # objects outside the lookup scope (loaded earlier, RTLD_LOCAL) matter only for a symbol
    # nothing in scope defines: read lazily (a framework's preloads are large)
    syms: Dict[str, _ObjSyms] = {o.path: cache.get(o.path) for o in objects if o.in_scope or not o.context}
    shown = {o.path: o.shown for o in objects}
    findings: List[Finding] = list(extra_findings)
    for path, s in syms.items():
        if s.error:
            findings.append(Finding("UNREADABLE", Severity.ERROR, f"{path}: {s.error}"))

    # --- versions ---------------------------------------------------------
    versions_checked = 0
    # ld.so looks the verneed file up by name among all loaded objects (find_needed)
    every_name = {n: p for o in objects for n, p in o.needed if p is not None}
    for o in objects:
        if o.context:
            continue
        s = syms[o.path]
        needed = dict(o.needed)
        for vn_file, versions, weak in s.version_needs:
            target = needed.get(vn_file) or every_name.get(vn_file)
            if target is None or target not in syms or syms[target].error:
                continue        # MISSING (resolver) or unreadable (reported)
            have = set(syms[target].version_defs)
            for v in versions:
                versions_checked += 1
                if v in have:
                    continue
                users = sorted({n for n, ver, f, _ in s.undefined if ver == v})
                pretty_users = demangle_all(users[:_SYMBOLS_SHOWN])
                is_weak = v in weak
                findings.append(Finding(
                    "VERSION_MISSING_WEAK" if is_weak else "VERSION_MISSING",
                    Severity.WARNING if is_weak else Severity.ERROR,
                    f"{shown.get(target, target)}: version `{v}' not found (required by {o.shown})"
                    + (f"; used by {_names_text(users, pretty_users)}" if users else ""),
                    fix=f"that copy defines {_versions_text(have)}: make a copy of {vn_file} that "
                        f"defines {v} load first, or rebuild {os.path.basename(o.shown)} against "
                        f"the {vn_file} that is loaded",
                    details={"library": shown.get(target, target), "required_by": o.shown, "version": v,
                             "needed_name": vn_file, "symbols": users,
                             "available": sorted(have)}))

    # a symbol whose version is already reported missing is not reported again
    missing_versions = {(f.details["required_by"], f.details["version"]) for f in findings
                        if f.code == "VERSION_MISSING"}
    missing_versions = {(o.path, v) for o in objects for (who, v) in missing_versions if who == o.shown}

    # --- symbols ----------------------------------------------------------
    scope = [syms[o.path] for o in objects if o.in_scope and not syms[o.path].error]
    outside_objs = [o for o in objects if not o.in_scope]
    outside: Optional[List[_ObjSyms]] = None
    seen_scope: set = set()
    scope = [s for s in scope if not (s.path in seen_scope or seen_scope.add(s.path))]
    scope_paths = {s.path for s in scope}
    unresolved: List[Tuple[ScopeObject, str, Optional[str], Optional[str]]] = []
    fragile: List[Tuple[ScopeObject, str, Optional[str], str]] = []
    symbols_checked = 0
    for o in objects:
        if o.context:
            continue
        s = syms[o.path]
        if any(p is None for _, p in o.needed):
            continue    # ld.so stops at the missing library (MISSING); its symbols are unknown
        symbols_checked += len(s.undefined)
        # The answer depends only on which of the objects defining one of its
        # names are in scope: memoized on that set (system libraries recur).
        key = (o.path, frozenset(cache.relevant.get(o.path, ()) & scope_paths))
        unres = cache.unresolved.get(key)
        if unres is None:
            unres = cache.unresolved[key] = [
                (name, version, vn_file) for name, version, vn_file, _ in s.undefined
                if not any(_matches(cache.objects[d], name, version)
                           for d in cache.definers.get(name, ()) if d in scope_paths)]
        for name, version, vn_file in unres:
            if (o.path, version) in missing_versions:
                continue
            if outside is None:
                outside = [x for x in (cache.get(p.path) for p in outside_objs) if not x.error]
            provider = next((p.path for p in outside if _matches(p, name, version)), None)
            if provider is not None:
                fragile.append((o, name, version, provider))
            else:
                unresolved.append((o, name, version, vn_file))

    # demangle what is reported, then look for ABI twins
    names = sorted({n for _, n, _, _ in unresolved} | {n for _, n, _, _ in fragile})
    pretty = dict(zip(names, demangle_all(names)))
    abi_twins = _abi_twins([n for n in names if n.startswith("_Z")], pretty,
                           [p for p in scope + (outside or [])])

    by_obj: Dict[Tuple[str, str], List[SymbolRef]] = {}
    for o, name, version, vn_file in unresolved:
        code = "ABI_MISMATCH" if name in abi_twins else "UNDEFINED"
        by_obj.setdefault((code, o.shown), []).append(
            SymbolRef(name, pretty.get(name, name), version, vn_file))
    for (code, path), refs in by_obj.items():
        shown = ", ".join(_ref_text(r) for r in refs[:_SYMBOLS_SHOWN])
        more = f" and {len(refs) - _SYMBOLS_SHOWN} more" if len(refs) > _SYMBOLS_SHOWN else ""
        if code == "ABI_MISMATCH":
            twins = {r.name: abi_twins[r.name] for r in refs}
            first_twin = twins[refs[0].name]
            findings.append(Finding(
                code, Severity.ERROR,
                f"{path}: undefined symbol{'s' if len(refs) > 1 else ''}: {shown}{more}; "
                f"defined with the other std::string ABI as {first_twin[1]} in {first_twin[2]}",
                fix="build with the same _GLIBCXX_USE_CXX11_ABI as the library that defines it "
                    "(torch: torch._C._GLIBCXX_USE_CXX11_ABI)",
                details={"object": path, "symbols": [r.__dict__ for r in refs],
                         "defined_as": {k: {"symbol": v[0], "demangled": v[1], "in": v[2]}
                                        for k, v in twins.items()}}))
        else:
            findings.append(Finding(
                code, Severity.ERROR,
                f"{path}: undefined symbol{'s' if len(refs) > 1 else ''}: {shown}{more}",
                fix="load the library that defines it (a missing DT_NEEDED, or an import that "
                    "must come first), or rebuild against the version that is loaded",
                details={"object": path, "symbols": [r.__dict__ for r in refs]}))
    frag_by: Dict[Tuple[str, str], List[SymbolRef]] = {}
    for o, name, version, provider in fragile:
        frag_by.setdefault((o.shown, shown.get(provider, provider)), []).append(SymbolRef(name, pretty.get(name, name), version, None))
    for (path, provider), refs in frag_by.items():
        shown = ", ".join(_ref_text(r) for r in refs[:_SYMBOLS_SHOWN])
        more = f" and {len(refs) - _SYMBOLS_SHOWN} more" if len(refs) > _SYMBOLS_SHOWN else ""
        findings.append(Finding(
            "FRAGILE_ORDER", Severity.WARNING,
            f"{path}: {shown}{more} found only in {provider}, which is loaded but not a dependency: "
            "it resolves only if that library was loaded with RTLD_GLOBAL first",
            fix=f"add {os.path.basename(provider)} to the DT_NEEDED of {os.path.basename(path)}",
            details={"object": path, "provider": provider, "symbols": [r.__dict__ for r in refs]}))
    findings.extend(_dup_runtimes(objects))
    stats = CheckStats(len(syms), symbols_checked, versions_checked, round(time.perf_counter() - start, 4))
    return findings, stats


def _names_text(names: Sequence[str], pretty: Sequence[str]) -> str:
    shown = ", ".join(pretty[:_SYMBOLS_SHOWN])
    more = len(names) - min(len(names), _SYMBOLS_SHOWN)
    return shown + (f" and {more} more" if more else "")


def _versions_text(versions) -> str:
    vs = sorted(versions, key=lambda v: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)])
    if not vs:
        return "no versions"
    return ", ".join(vs) if len(vs) <= 4 else f"{len(vs)} versions, up to {vs[-1]}"


def _ref_text(r: SymbolRef) -> str:
    text = r.name if r.demangled in ("", r.name) else f"{r.name} ({r.demangled})"
    return text + (f", version {r.version}" if r.version else "")


def _abi_twins(names: Sequence[str], pretty: Mapping[str, str],
               objects: Sequence[_ObjSyms]) -> Dict[str, Tuple[str, str, str]]:
    """Unresolved C++ names whose other-ABI form is defined: name -> (twin, demangled, where)."""
    if not names:
        return {}
    wanted: Dict[str, List[str]] = {}        # "<len><ident>" -> unresolved names
    for n in names:
        ident = _innermost_identifier(pretty.get(n, n))
        if ident:
            wanted.setdefault(f"{len(ident)}{ident}", []).append(n)
    if not wanted:
        return {}
    candidates: Dict[str, str] = {}
    for obj in objects:
        for dname in obj.defined:
            if dname.startswith("_Z") and dname not in candidates:
                for token in wanted:
                    if token in dname:
                        candidates[dname] = obj.path
                        break
    if not candidates:
        return {}
    cand_names = sorted(candidates)
    cand_pretty = dict(zip(cand_names, demangle_all(cand_names)))
    by_normal: Dict[str, str] = {}
    for c in cand_names:
        by_normal.setdefault(_abi_normal(cand_pretty[c]), c)
    out = {}
    for n in names:
        twin = by_normal.get(_abi_normal(pretty.get(n, n)))
        if twin is not None and twin != n:
            out[n] = (twin, cand_pretty[twin], candidates[twin])
    return out


def _dup_runtimes(objects: Sequence[ScopeObject]) -> List[Finding]:
    return [Finding("DUP_RUNTIME", Severity.WARNING,
                    f"{len(paths)} copies of {fam} would be in one process: {', '.join(paths)}",
                    fix="make every package use one copy (or preload the one you want)",
                    details={"runtime": fam, "paths": list(paths)})
            for fam, paths in duplicate_copies(o.path for o in objects)]


# --------------------------------------------------------------------------
# Files: resolve with the loader's rules (ldtree), then check

@dataclass(frozen=True)
class CheckedObject:
    path: str                   # realpath
    loaded_as: str              # the name ld.so uses for it
    context: bool               # loaded before FILE (interpreter, --after imports)
    in_scope: bool              # in FILE's symbol lookup scope


@dataclass(frozen=True)
class FileCheck:
    file: str
    python: Optional[str]               # the interpreter it was checked inside, if any
    after: Tuple[str, ...]              # modules imported first
    loaded_before: int                  # objects those imports had loaded
    objects: Tuple[CheckedObject, ...]  # in lookup order
    stats: CheckStats
    findings: Tuple[Finding, ...]


@dataclass(frozen=True)
class CheckReport:
    SCHEMA: ClassVar[str] = "mltools.elf.check"
    SCHEMA_VERSION: ClassVar[int] = 1

    files: Tuple[FileCheck, ...]
    fail_on: Tuple[str, ...]
    failed: bool                        # a finding matched --fail-on
    elapsed_s: float
    findings: Tuple[Finding, ...] = field(default=())   # every file's findings together


def _names_map(libraries) -> Dict[str, str]:
    names: Dict[str, str] = {}
    for lib in libraries:
        if not lib.found:
            continue
        for n in tuple(lib.requested_as) + ((lib.soname,) if lib.soname else ()):
            names.setdefault(n, lib.path)
    return names


def _needed(names: Sequence[str], names_map: Mapping[str, str]) -> Tuple[Tuple[str, Optional[str]], ...]:
    return tuple((n, names_map.get(n)) for n in names)


def check_file(path: str, *, python: Optional[str] = None, after: Sequence[str] = (),
               loaded: Sequence[str] = (), resolver=None,
               env: Optional[Mapping[str, str]] = None,
               symbol_cache: Optional[SymbolCache] = None) -> FileCheck:
    """Resolve ``path`` as ld.so would (inside ``python`` after ``loaded``) and check it."""
    from mltools.elf.ldtree import Resolver, resolve_tree

    r = resolver or Resolver()
    env = {k: v for k, v in (os.environ if env is None else env).items()
           if k in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
    real = os.path.realpath(path)
    objects: List[ScopeObject] = []
    if python is None:
        tree = resolve_tree(path, env=env, resolver=r)
        names = _names_map(tree.libraries)
        objects.append(ScopeObject(real, _needed(tree.root_needed, names), label=path))
        for lib in tree.libraries:
            if lib.found:
                objects.append(ScopeObject(lib.path, _needed(lib.needed, names), label=lib.found_as))
    else:
        tree = resolve_tree(path, env=env, main=python, loaded=list(loaded), resolver=r)
        gtree = resolve_tree(python, env=env, resolver=r)
        names = _names_map(gtree.libraries)
        names.update(_names_map(tree.libraries))
        # the global scope: the interpreter and what it needs, in load order
        exe_info_needed = gtree.root_needed
        objects.append(ScopeObject(os.path.realpath(python), _needed(exe_info_needed, names),
                                   context=True, label=python))
        global_paths = {os.path.realpath(python)}
        for lib in gtree.libraries:
            if lib.found:
                objects.append(ScopeObject(lib.path, _needed(lib.needed, names), context=True,
                                           label=lib.found_as))
                global_paths.add(lib.path)
        # then FILE's own breadth-first closure (already-loaded objects reused by SONAME)
        context_real = {os.path.realpath(c) for c in tree.context} | global_paths
        objects.append(ScopeObject(real, _needed(tree.root_needed, names), label=path))
        in_tree = {real}
        for lib in tree.libraries:
            if lib.found and lib.path not in global_paths:
                objects.append(ScopeObject(lib.path, _needed(lib.needed, names),
                                           context=lib.path in context_real, label=lib.found_as))
                in_tree.add(lib.path)
        # loaded by earlier imports, but neither global nor a dependency of FILE
        for c in tree.context:
            rc = os.path.realpath(c)
            if rc not in in_tree and rc not in global_paths:
                in_tree.add(rc)
                objects.append(ScopeObject(rc, context=True, in_scope=False, label=c))
    resolver_findings = [f for f in tree.findings]
    findings, stats = check_objects(objects, extra_findings=resolver_findings, symbol_cache=symbol_cache)
    checked = tuple(CheckedObject(o.path, o.shown, o.context, o.in_scope) for o in objects)
    return FileCheck(path, python, tuple(after), len(loaded), checked, stats, tuple(findings))


def check_files(paths: Sequence[str], *, python: Optional[str] = None, after: Sequence[str] = (),
                fail_on: Optional[FailOn] = None, auto_python: Optional[str] = None) -> CheckReport:
    """Check every file; extension modules go inside ``python`` (or ``auto_python``).

    ``python`` is an interpreter as the user named it (see
    :func:`mltools.python.resolve_interpreter`; "" is the running one), or None
    to check files on their own.
    """
    import time

    from mltools.elf.ldtree import Resolver
    from mltools.python import interpreter_binary, loaded_by_imports, resolve_interpreter

    if python is not None:
        python = resolve_interpreter(python, label="--as-python")

    start = time.perf_counter()
    fail_on = fail_on or FailOn()
    from mltools.errors import InputError, UsageError

    resolver = Resolver()
    loaded_cache: Dict[str, Tuple[str, ...]] = {}
    symbol_cache = SymbolCache()
    results = []
    unreadable: List[ItemError] = []
    binaries: Dict[str, str] = {}
    for p in paths:
        exe = python
        if exe is None and (after or (auto_python and is_tagged_extension_name(p))):
            exe = auto_python
        if exe is not None:
            if exe not in binaries:
                binaries[exe] = interpreter_binary(exe, label="--as-python")
            exe = binaries[exe]
        loaded: Tuple[str, ...] = ()
        if exe is not None and after:
            if exe not in loaded_cache:
                loaded_cache[exe] = loaded_by_imports(exe, after)
            loaded = loaded_cache[exe]
        try:
            results.append(check_file(p, python=exe, after=after if exe else (), loaded=loaded,
                                      resolver=resolver, symbol_cache=symbol_cache))
        except (InputError, UsageError) as exc:
            # one bad file among many is a finding; a run where no file can be read is an error
            if len(paths) == 1:
                raise
            unreadable.append(ItemError(p, exc.message))
            # a linker script (libc.so, libm.so) is for ld at link time; ld.so never opens it
            sev = Severity.INFO if is_linker_script_file(p) else Severity.ERROR
            results.append(FileCheck(p, exe, tuple(after) if exe else (), len(loaded), (),
                                     CheckStats(0, 0, 0, 0.0),
                                     (Finding("UNREADABLE", sev, exc.message),)))
    require_some_processed(unreadable, len(paths), "files")
    every = tuple(f for fc in results for f in fc.findings)
    return CheckReport(tuple(results), fail_on.tokens, fail_on.matches(every),
                       round(time.perf_counter() - start, 4), every)
