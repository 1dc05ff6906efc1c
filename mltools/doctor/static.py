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
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from mltools.doctor import cuda
from mltools.doctor.cuda_context import PassContext, cuda_stack, framework_reach, retry_after_pathfinder
from mltools.elf import runtimes as rt
from mltools.python import InterpreterInfo
from mltools.doctor.model import DlopenLibrary, GpuTarget, PackageGpuCode, RuntimeCopy
from mltools.doctor.owners import OwnerIndex
from mltools.elf.files import ElfCandidate, identical_groups
from mltools.findings import Finding, Severity


@dataclass(frozen=True)
class StaticResult:
    findings: Tuple[Finding, ...]
    runtimes: Tuple[RuntimeCopy, ...]
    cuda_majors: Dict[int, Tuple[str, ...]] = field(default_factory=dict)   # major -> who brings it
    scope: Tuple[str, ...] = ()
    gpu_code: Tuple[PackageGpuCode, ...] = ()
    dlopens: Tuple[DlopenLibrary, ...] = ()
    timings_s: Dict[str, float] = field(default_factory=dict)
    libraries: Tuple[Tuple[str, Optional[str]], ...] = ()     # (SONAME, path or None) of every library resolved


class _Steps:
    """One progress count over the pass's phases (files read, trees resolved, files checked,
    sections scanned, dlopen names resolved); phases add their size when they start."""

    def __init__(self, progress: Optional[Callable[..., None]]):
        self.progress = progress
        self.total = 0
        self.done = 0

    def plan(self, n: int) -> None:
        self.total += n

    def step(self, n: int = 1) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, max(self.total, self.done))


@dataclass
class _Node:
    """A library some environment file needs, wherever it was found."""
    soname: str
    path: Optional[str]
    needed_by: Set[str] = field(default_factory=set)


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
                   f"{path}: {reason}: a search of the loader that reaches this file fails there "
                   "(it does not search further)", fix=fix,
                   details={"path": path, "package": owners.label(path), "git_lfs_pointer": lfs})


# Resolver findings passed on as they are. MISSING is regrouped per module as
# MISSING_LIBRARY; LD_LIBRARY_PATH traps come from the environment pass; hwcaps
# picks and skipped foreign-class files are normal.
_TREE_CODES_KEPT = {"FATAL_CANDIDATE", "LOAD_ORDER_DEPENDENT", "PRELOAD_NOT_FOUND"}
_CHECK_CODES_KEPT = {"VERSION_MISSING", "VERSION_MISSING_WEAK", "UNDEFINED", "ABI_MISMATCH", "FRAGILE_ORDER"}


def static_pass(interp: InterpreterInfo, candidates: Sequence[ElfCandidate], owners: OwnerIndex,
                environ: Mapping[str, str], *, gpus: Sequence[GpuTarget] = (), driver: Optional[str] = None,
                progress: Optional[Callable[..., None]] = None) -> StaticResult:
    import time

    from mltools.doctor.frameworks import read_frameworks
    from mltools.doctor.requirements import RequirementIndex, marker_environment, requirement_findings
    from mltools.elf.reader import ElfFormatError, read_elf

    findings: List[Finding] = []
    scope: List[str] = []
    timings: Dict[str, float] = {}
    steps = _Steps(progress)
    steps.plan(3 * len(candidates))     # read, resolve, check; the CUDA phases add theirs
    t = time.perf_counter()
    infos = {}
    for c in candidates:
        steps.step()
        try:
            infos[c.path] = read_elf(c.path)
        except ElfFormatError as exc:
            if exc.kind == "unreadable":
                # ld.so cannot open it either, and goes on to the next directory
                findings.append(Finding("UNREADABLE", Severity.WARNING,
                                        f"{c.path}: {exc.reason}: the loader skips it and searches on",
                                        fix="make the file readable (the loader needs to read it too)",
                                        details={"path": c.path}))
                continue
            findings.append(_bad_elf_finding(c.path, exc.reason, owners))
        except OSError as exc:
            findings.append(Finding("UNREADABLE", Severity.WARNING, f"{c.path}: {exc.strerror}",
                                    fix="make the file readable (the loader needs to read it too)",
                                    details={"path": c.path}))
    ext = {c.path for c in candidates if c.is_extension}
    reqs = RequirementIndex(interp.site_dirs, marker_environment(interp.version, interp.implementation))
    frameworks = read_frameworks(interp.sys_path, interp.site_dirs, reqs.versions)
    scope += frameworks.scope
    from mltools.elf.ldtree import Resolver

    resolver = Resolver()        # one loader model (cache, directory listings, headers) for the pass
    ctx = PassContext(interp, owners, reqs, frameworks, infos, candidates, environ)
    programs = {p for p, as_ext in _roots(candidates, infos) if not as_ext}
    # one read of every library's sections: the names it may dlopen, its GPU code
    libs = [p for p, info in infos.items() if info.type == 3 and p not in programs]
    steps.plan(len(libs))
    ctx.scan = cuda.scan_files(libs, steps.step)
    ctx.holders = {path: (infos[path].soname, infos[path].needed, names) for path, names in ctx.scan.names.items()}
    timings["read"] = time.perf_counter() - t
    t = time.perf_counter()
    trees, tree_findings, nodes, after = _resolve(interp, candidates, infos, resolver, ctx, steps)
    findings += _missing_findings(trees, owners, ext, programs, ctx)
    findings += [_with_owner(f, owners) for f in tree_findings]
    timings["resolve"] = time.perf_counter() - t
    t = time.perf_counter()
    checks = _check_findings(trees, owners, programs, interp.executable, ctx.loader_env, resolver, after, steps)
    findings += cuda.version_skew(checks, trees, owners, ctx.env_by_soname)
    if programs:
        scope.append(f"symbol and version checks of the {len(programs)} programs found (not extension "
                     "modules): only their libraries are resolved")
    timings["check"] = time.perf_counter() - t
    copies, cuda_majors = _runtime_copies(nodes, set(infos), owners)
    findings += _runtime_findings(copies)
    findings += _identical_findings([p for p in infos if p not in ext], infos, owners)
    t = time.perf_counter()
    cres = cuda_stack(interp, programs, trees, after, owners, resolver, ctx, gpus, driver)
    findings += cres["findings"]
    scope += cres["scope"]
    findings += requirement_findings(reqs)
    timings["cuda"] = time.perf_counter() - t
    libraries = tuple(sorted({(n.soname, n.path) for n in nodes.values()}, key=lambda x: (x[0], x[1] or "")))
    return StaticResult(tuple(_dedupe(findings)), tuple(copies), cuda_majors, tuple(scope),
                        cres["gpu_code"], cres["dlopens"], {k: round(v, 4) for k, v in timings.items()},
                        libraries)


def _internal_error(path: str, doing: str, exc: BaseException) -> Finding:
    """A bug in mltools met on one file: said once, and the rest of the report still stands."""
    return Finding("INTERNAL_ERROR", Severity.WARNING,
                   f"mltools failed {doing} {path}: {type(exc).__name__}: {' '.join(str(exc).split())}",
                   fix="report it to mltools with the file; the other files were checked",
                   details={"path": path})


def _dedupe(findings: Sequence[Finding]) -> List[Finding]:
    seen = set()
    out = []
    for f in findings:
        key = (f.code, f.message)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def _with_owner(f: Finding, owners: OwnerIndex) -> Finding:
    """The finding with ``path`` and ``package`` in its details."""
    d = dict(f.details)
    path = d.get("path") or d.get("object") or d.get("required_by") or d.get("requester")
    if path:
        d["path"] = path
        d.setdefault("package", owners.label(str(path)))
    return Finding(f.code, f.severity, f.message, f.fix, d)


def _roots(candidates: Sequence[ElfCandidate], infos) -> List[Tuple[str, bool]]:
    """(path, as_extension): extension modules load into Python; programs start on their own."""
    out = []
    for c in candidates:
        info = infos.get(c.path)
        if info is None or not info.has_dynamic:
            continue
        if c.is_extension:
            out.append((c.path, True))
        elif info.interp:
            out.append((c.path, False))
    return out


def _resolve(interp, candidates, infos, resolver, ctx: "PassContext", steps: _Steps):
    """Resolve every extension module (in the interpreter's process, after the preloads of its
    framework) and program (on its own), then the environment's libraries no root reaches (as a
    dlopen from Python would)."""
    from mltools.elf.ldtree import resolve_tree
    from mltools.errors import MltoolsError

    loader_env = ctx.loader_env
    main = interp.executable
    roots = _roots(candidates, infos)
    trees = {}
    tree_findings: List[Finding] = []

    def resolve(path, as_dlopen, loaded=None):
        """``loaded``: what is mapped before it (default: for a dlopen, its framework's preloads)."""
        try:
            if loaded is None:
                loaded = list(ctx.loaded_before(path)) if as_dlopen else ()
            trees[path] = resolve_tree(path, env=loader_env, main=main if as_dlopen else None,
                                       loaded=loaded, resolver=resolver)
        except MltoolsError as exc:
            tree_findings.append(Finding("UNRESOLVABLE", Severity.WARNING, exc.message,
                                         fix="check the file with mltools elf inspect", details={"path": path}))
        except Exception as exc:  # noqa: BLE001 - one odd file must not sink the whole report
            tree_findings.append(_internal_error(path, "resolving", exc))

    for path, as_ext in roots:
        resolve(path, as_ext)
        steps.step()
    after = _retry_after_imports(trees, roots, infos, candidates, loader_env, main, resolver, tree_findings, ctx)
    after.update(retry_after_pathfinder(trees, roots, loader_env, main, resolver, tree_findings, ctx))
    for path, as_ext in roots:          # the symbol checks see the same process
        if as_ext and path not in after:
            before = ctx.loaded_before(path)
            if before:
                after[path] = before
    ctx.reach = framework_reach(trees, ctx)
    reached = {lib.path for t in trees.values() for lib in t.libraries if lib.path}
    for path, info in infos.items():
        if path in trees or info.type != 3 or not info.has_dynamic or ctx.realpath(path) in reached:
            continue
        first = ctx.opened_after(path, main, loader_env, resolver)
        if first:
            after[path] = first
        resolve(path, True, list(first))
        steps.step()
    for t in trees.values():
        for f in t.findings:
            if f.code in _TREE_CODES_KEPT:
                tree_findings.append(_graft_order(f))
    nodes: Dict[str, _Node] = {}
    ext_roots = {p for p, as_ext in roots if as_ext}
    for path, info in infos.items():          # every environment library is a node, reached or not
        if info.type == 3 and path not in ext_roots:
            nodes.setdefault(ctx.realpath(path), _Node(info.soname or os.path.basename(path), path))
    spelled = _one_spelling(infos, ctx.realpath)
    for t in trees.values():
        for lib in t.libraries:
            key = lib.path or "missing:" + lib.soname
            node = nodes.setdefault(key, _Node(lib.soname, lib.path))
            node.needed_by.update(spelled(n) for n in lib.needed_by if n)
    return trees, tree_findings, nodes, after


def _one_spelling(walked: Iterable[str], realpath: Callable[[str], str] = os.path.realpath):
    """path -> the path as the walk spelled it. A tree names its root as given and the objects
    it reaches by the loader's paths, which are real paths: in a venv reached through a symlink
    one file would otherwise be two needers. ``realpath``: the pass's memoized one."""
    by_real: Dict[str, str] = {}
    for path in walked:
        by_real.setdefault(realpath(path), path)
    cache: Dict[str, str] = {}

    def spelled(path: str) -> str:
        got = cache.get(path)
        if got is None:
            got = cache[path] = by_real.get(realpath(path), path)
        return got
    return spelled


def _module_name(path: str, candidates: Sequence[ElfCandidate]) -> str:
    """``.../site-packages/torch/_C.cpython-311-x86_64-linux-gnu.so`` -> ``torch._C``."""
    top = next((c.root for c in candidates if c.path == path), os.path.dirname(path))
    rel = os.path.relpath(path, top)
    return rel.split(".", 1)[0].replace(os.sep, ".")


def _retry_after_imports(trees, roots, infos, candidates, loader_env, main, resolver,
                         tree_findings: List[Finding], ctx: "PassContext") -> Dict[str, Tuple[str, ...]]:
    """Extension modules that find their libraries only once another import loaded them.

    torch's C++ extensions need ``libc10.so`` and ``libtorch*.so`` but carry no
    RUNPATH to ``torch/lib``: they load because ``import torch`` mapped those
    libraries first (the loader reuses them by SONAME). When every library an
    extension misses is one that another extension module of the environment
    maps, the extension is resolved again after that module, as the loader
    would see it after the import; the finding is then a note naming the
    import that must come first. Returns root -> the modules loaded before it.
    """
    from mltools.elf.ldtree import resolve_tree
    from mltools.errors import MltoolsError

    ext_roots = sorted((p for p, as_ext in roots if as_ext), key=lambda p: (p.count("/"), p))
    by_soname: Dict[str, str] = {}
    for path, info in infos.items():
        if info.type == 3 and path not in trees:
            by_soname.setdefault(info.soname or os.path.basename(path), ctx.realpath(path))
    loaded_by: Dict[str, str] = {}          # library realpath -> an extension whose import maps it
    for root in ext_roots:
        t = trees.get(root)
        if t is None or any(lib.path is None for lib in t.libraries):
            continue
        for lib in t.libraries:
            if lib.path:
                loaded_by.setdefault(lib.path, root)
    after: Dict[str, Tuple[str, ...]] = {}
    for root in ext_roots:
        t = trees.get(root)
        if t is None:
            continue
        missing = [lib.soname for lib in t.libraries if lib.path is None and not lib.error]
        if not missing or not all(by_soname.get(m) in loaded_by for m in missing):
            continue
        importers = tuple(sorted({loaded_by[by_soname[m]] for m in missing}))
        if root in importers:
            continue
        first = tuple(dict.fromkeys(p for i in importers for p in ctx.loaded_before(i)))
        try:
            retry = resolve_tree(root, env=loader_env, main=main, loaded=list(first + importers), resolver=resolver)
        except MltoolsError:
            continue
        if any(lib.path is None for lib in retry.libraries):
            continue
        trees[root] = retry
        after[root] = first + importers
        modules = sorted({_module_name(i, candidates).split(".", 1)[0] for i in importers})
        tree_findings.append(Finding(
            "NEEDS_IMPORT_FIRST", Severity.INFO,
            f"{root} finds {', '.join(missing)} only after `import {', '.join(modules)}` has loaded "
            f"{'them' if len(missing) > 1 else 'it'} (it has no search path of its own to "
            f"{'them' if len(missing) > 1 else 'it'})",
            fix=f"nothing, as long as {', '.join(modules)} is imported first (its package normally does that); "
                f"importing {_module_name(root, candidates)} on its own fails",
            details={"path": root, "missing_alone": missing, "after": list(importers), "modules": modules}))
    return after


def _graft_order(f: Finding) -> Finding:
    """auditwheel-grafted libraries without their own RUNPATH rely on the extension's
    RPATH: that is how those wheels are built, so it is a note, not a warning."""
    if f.code != "LOAD_ORDER_DEPENDENT":
        return f
    req = str(f.details.get("requester", ""))
    prov = str(f.details.get("provider", ""))
    if os.path.dirname(req).endswith(".libs") and os.path.dirname(req) == os.path.dirname(prov):
        return Finding("GRAFT_NEEDS_LOADER_RPATH", Severity.INFO, f.message,
                       "nothing to do unless the library is loaded on its own", dict(f.details))
    return f


def _missing_findings(trees, owners: OwnerIndex, ext: Set[str], programs: Set[str],
                      ctx: "PassContext") -> List[Finding]:
    """One finding per set of files that miss libraries, judged by what can load those files.

    - an extension module (Python imports it): an error, unless every library it
      misses is an NVIDIA one that its package does not require (an optional part);
    - only programs shipped inside a package (test binaries, tools): a note, as
      Python never loads them;
    - only libraries no extension module reaches: a note, as nothing loads them
      at import; they are plugins and optional parts that their users dlopen
      (after loading what they need, when it is in the environment).
    Libraries of the NVIDIA driver are left to the driver finding of the CUDA pass.
    """
    from mltools.doctor.cuda_libs import is_driver_library
    from mltools.doctor.fixes import missing_library_fix

    missing: Dict[str, dict] = {}
    spelled = _one_spelling(trees, ctx.realpath)
    for root, t in trees.items():
        for lib in t.libraries:
            if lib.path is not None or lib.error:
                continue
            m = missing.setdefault(lib.soname, {"needed_by": set(), "roots": set(), "near": None, "tried": 0})
            m["needed_by"].update(spelled(n) for n in (lib.needed_by or (root,)))
            m["roots"].add(root)
            m["tried"] = max(m["tried"], len(lib.tried))
            if lib.near_misses and m["near"] is None:
                m["near"] = lib.near_misses[0]
    # one finding per set of files that miss libraries: a module missing three
    # libraries is one problem with one fix
    groups: Dict[Tuple[str, ...], List[str]] = defaultdict(list)
    for soname, m in sorted(missing.items()):
        if is_driver_library(soname) and not any(r in ext for r in m["roots"]):
            ctx.driver_needers.setdefault(soname, []).extend(sorted(m["needed_by"]))
            continue
        groups[tuple(sorted(m["needed_by"]))].append(soname)
    out = []
    for needers, sonames in sorted(groups.items(), key=lambda kv: kv[1]):
        first = needers[0]
        owner = owners.owner(first)
        pkgs = sorted({owners.label(p) or "-" for p in needers})
        roots = set().union(*(missing[s]["roots"] for s in sonames))
        if any(r in ext for r in roots):
            kind = "import"
        elif all(r in programs for r in roots):
            kind = "program"
        else:
            kind = "dlopen"
        nears = [(s, missing[s]["near"]) for s in sonames if missing[s]["near"] is not None]
        near_dirs = sorted({os.path.dirname(os.path.normpath(n.path)) for _, n in nears
                            if "another version" not in n.reason})
        who = ", ".join(os.path.basename(p) for p in needers[:3]) + (f" and {len(needers) - 3} more"
                                                                    if len(needers) > 3 else "")
        msg = f"{', '.join(sonames)} not found, needed by {who}"
        if nears:
            s0, n0 = nears[0]
            msg += f" (near miss: {os.path.normpath(n0.path)}: {n0.reason})"
        severity = Severity.ERROR
        fixes: List[str] = []
        optional = kind == "import" and _optional_nvidia(sonames, owner, ctx)
        if kind == "program":
            severity = Severity.INFO
            msg += (f"; {'it is a program' if len(needers) == 1 else 'these are programs'} shipped inside "
                    f"{', '.join(pkgs)}, not something Python imports: imports are not affected")
            fixes.append("nothing to do for imports; such programs (tests, tools) are run the way their "
                         "package documents")
        elif kind == "dlopen":
            severity = Severity.INFO
            present = [s for s in sonames if s in ctx.env_sonames]
            if present and len(present) == len(sonames):
                where = sorted({os.path.dirname(ctx.env_sonames[s]) for s in present})
                one = len(sonames) == 1
                msg += (f"; nothing Python imports needs {'it' if len(needers) == 1 else 'them'}, and "
                        f"{'it is' if one else 'they are'} in {', '.join(where)}: "
                        f"{'it loads' if len(needers) == 1 else 'they load'} once {'that library is' if one else 'those are'} "
                        "loaded, which is how their users open them")
                fixes.append("nothing to do: imports are not affected")
            else:
                msg += ("; no extension module needs it: it is a plugin or optional part that is opened with "
                        "dlopen when its feature is used, and only that feature is unavailable")
                fixes.append("nothing to do for imports; install "
                             + ", ".join(s for s in sonames if s not in ctx.env_sonames)
                             + " only if you use that feature")
        elif optional:
            severity = Severity.INFO
            msg += (f"; {owner.name if owner else 'its package'} does not require a package that ships "
                    f"{'it' if len(sonames) == 1 else 'them'}: an optional part, whose module fails to import "
                    "until it is installed")
        if kind == "import":
            # LD_LIBRARY_PATH advice only for a directory outside the environment: inside it,
            # pip owns the layout and the library's own users load it first
            near_dir = next((d for d in near_dirs if not ctx.in_env(d + "/x")), None)
            from mltools.doctor.cuda_libs import cuda_major_of_file
            info = ctx.infos.get(first)
            major = cuda_major_of_file(first, info.needed if info else (), owner.name if owner else None)
            for soname in sonames:
                fx = missing_library_fix(soname, owner, near_dir, cuda_major=str(major) if major else None,
                                         required=_required_pin(soname, owner, ctx))
                if fx not in fixes:
                    fixes.append(fx)
        elif kind == "dlopen" and not fixes:
            fixes.append("nothing to do: imports are not affected")
        out.append(Finding(
            "MISSING_LIBRARY", severity, msg,
            fix="; ".join(fixes),
            details={"sonames": sonames, "soname": sonames[0], "path": first,
                     "package": owners.label(first), "needed_by": list(needers), "packages": pkgs,
                     "loaded_by": kind,
                     "near_misses": [{"soname": s, "path": os.path.normpath(n.path), "reason": n.reason}
                                     for s, n in nears]}))
    return out


def _optional_nvidia(sonames: Sequence[str], owner, ctx: "PassContext") -> bool:
    """Every library is NVIDIA's and no requirement of the package brings a wheel that ships it."""
    from mltools.doctor.cuda_libs import nvidia_library, wheel_names

    if owner is None or owner.manager != "pip":
        return False
    required = ctx.requires(str(owner))
    for s in sonames:
        if nvidia_library(s) is None or set(wheel_names(s)) & required:
            return False
    return True


def _required_pin(soname: str, owner, ctx: "PassContext") -> Optional[str]:
    """``nvidia-cudnn-cu13==9.24.0.43`` when the needer's package requires the wheel that ships ``soname``."""
    from mltools.doctor.cuda_libs import wheel_names

    if owner is None or owner.manager != "pip":
        return None
    for wheel in wheel_names(soname):
        req = ctx.reqs.requirement_of(owner.name, wheel)
        if req is not None:
            return f"{req.name}{req.specifier}"
    return None


def _check_findings(trees, owners: OwnerIndex, programs: Set[str], python: str,
                    loader_env: Mapping[str, str], resolver, after: Mapping[str, Tuple[str, ...]],
                    steps: _Steps) -> List[Finding]:
    """Version needs and undefined symbols (mltools.elf.check) of every extension
    module and library, in the interpreter's process: one symbol cache for the
    whole pass, so each library is read and checked against a given scope once.
    Programs shipped in site-packages (mostly test binaries) are only resolved."""
    from mltools.elf.check import SymbolCache, check_file
    from mltools.python import interpreter_binary
    from mltools.errors import MltoolsError

    cache = SymbolCache()
    try:
        exe = interpreter_binary(python)
    except MltoolsError:
        return []
    out: List[Finding] = []
    for root in sorted(trees):
        steps.step()
        if root in programs:
            continue
        try:
            fc = check_file(root, python=exe, loaded=list(after.get(root, ())), resolver=resolver,
                            env=loader_env, symbol_cache=cache)
        except MltoolsError:
            continue          # the resolver pass already reported why this file cannot be read
        except Exception as exc:  # noqa: BLE001 - one odd file must not sink the whole report
            out.append(_internal_error(root, "checking the symbols of", exc))
            continue
        out += [_enrich_check(f, owners) for f in fc.findings if f.code in _CHECK_CODES_KEPT]
    return out


def _enrich_check(f: Finding, owners: OwnerIndex) -> Finding:
    f = _with_owner(f, owners)
    d = dict(f.details)
    fix = f.fix
    if f.code in ("VERSION_MISSING", "VERSION_MISSING_WEAK"):
        version = str(d.get("version", ""))
        library = os.path.basename(str(d.get("library", "")))
        owner = owners.owner(str(d.get("path")))
        if version.startswith("GLIBC_") and library.startswith(("libc.so", "libm.so", "libpthread", "libdl", "librt")):
            try:
                glibc = os.confstr("CS_GNU_LIBC_VERSION") or "an older glibc"
            except (ValueError, OSError):
                glibc = "an older glibc"
            fix = (f"it was built for {version.replace('_', ' ')} or newer but this system has {glibc}: "
                   "install a wheel built for an older manylinux"
                   + (f" (pip install --force-reinstall --no-deps --only-binary :all: {owner.name})"
                      if owner is not None and owner.manager == "pip" else "")
                   + ", or run on a newer OS")
        elif version.startswith(("GLIBCXX_", "CXXABI_")):
            fix = (f"the {library} that loads ({d.get('library')}) is older than the one it was built with: make "
                   "a newer libstdc++ load first (conda install -c conda-forge libstdcxx-ng, or a newer "
                   "apt libstdc++6), or install a build of the package made for this system")
    return Finding(f.code, f.severity, f.message, fix, d)


def _classify(node: _Node, env_files: Set[str]) -> Optional[rt.RuntimeKind]:
    # system libraries carry their canonical names; only shipped copies may be renamed
    return rt.classify_file(node.path, node.soname, by_symbols=node.path in env_files)


def _runtime_copies(nodes: Mapping[str, _Node], env_files: Set[str], owners: OwnerIndex):
    copies: List[RuntimeCopy] = []
    cuda: Dict[int, Set[str]] = defaultdict(set)
    for key, node in sorted(nodes.items()):
        kind = _classify(node, env_files)
        if kind is None:
            continue
        if kind.family == "blas" and kind.implementation == "reference" and node.path:
            kind = _which_blas_really(node.path, kind)
        pkg = owners.label(node.path)
        copies.append(RuntimeCopy(kind.family, kind.implementation, kind.major, node.soname,
                                  node.path or "", pkg, tuple(sorted(node.needed_by))))
        if kind.family == "cuda-runtime" and kind.major and kind.major.isdigit():
            brought = {owners.label(p) or p for p in node.needed_by} or {pkg or node.path or node.soname}
            cuda[int(kind.major)].update(brought)
    return copies, {k: tuple(sorted(v)) for k, v in cuda.items()}


def _which_blas_really(path: str, kind: rt.RuntimeKind) -> rt.RuntimeKind:
    """``libblas.so.3`` is the reference BLAS's name, but Debian's alternatives (and
    conda's libblas) point it at OpenBLAS, BLIS or MKL: judge by the realpath, then
    by the exports."""
    real = os.path.realpath(path).lower()
    for impl in ("openblas", "blis", "mkl", "atlas"):
        if impl in real:
            return rt.RuntimeKind("blas", impl, None)
    try:
        from mltools.elf.reader import read_symbols
        by_exports = rt.classify_symbols(s.name for s in read_symbols(path).symbols if s.defined)
    except Exception:   # unreadable: reported by the reader pass when it is in the environment
        by_exports = None
    return by_exports if by_exports is not None and by_exports.family == "blas" else kind


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
    for c in by_family.get("blas", []):
        if c.implementation == "reference" and c.needed_by:
            out.append(Finding(
                "REFERENCE_BLAS", Severity.WARNING,
                f"{len(c.needed_by)} file{'s' if len(c.needed_by) != 1 else ''} link the reference BLAS "
                f"{c.path} ({c.package or 'no package'}): matrix products run unblocked on one thread, "
                "often 10-100x slower than OpenBLAS or MKL",
                fix="apt-get install libopenblas0-pthread (Debian points libblas.so.3 at it through "
                    "update-alternatives), or use the numpy/scipy wheels from PyPI, which bundle OpenBLAS",
                details={"path": c.path, "package": c.package, "needed_by": list(c.needed_by)}))
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
    out += _libstdcxx_findings(by_family.get("libstdc++", []), details)
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


def _glibcxx_level(path: str) -> Optional[Tuple[int, ...]]:
    """The newest GLIBCXX_3.4.N a libstdc++ defines, as (3, 4, N)."""
    from mltools.elf.reader import read_symbols
    try:
        defs = read_symbols(path).version_defs
    except Exception:   # unreadable: the reader pass reports the file
        return None
    levels = [tuple(int(x) for x in d.name[len("GLIBCXX_"):].split(".")) for d in defs
              if d.name.startswith("GLIBCXX_") and d.name[len("GLIBCXX_"):].replace(".", "").isdigit()]
    return max(levels) if levels else None


def _libstdcxx_findings(group: Sequence[RuntimeCopy], details) -> List[Finding]:
    """Two C++ runtimes under different SONAMEs share a process (exceptions and RTTI
    crossing between them break); under one SONAME the first loaded wins, and an
    older copy shipped in the environment starves modules built for a newer one."""
    out: List[Finding] = []
    distinct = _distinct_sonames(group)
    if len(distinct) > 1:
        out.append(Finding(
            "DUP_LIBSTDCXX", Severity.WARNING,
            f"{len(distinct)} C++ runtimes can be loaded into one process: {', '.join(_who(c) for c in distinct)}; "
            "exceptions, RTTI and std:: objects passed between them break",
            fix="use builds that link the one system libstdc++.so.6", details=details(distinct)))
    copies = [c for c in group if c.soname == "libstdc++.so.6" and c.path]
    levels = {c.path: _glibcxx_level(c.path) for c in copies}
    newest = max((lv for lv in levels.values() if lv), default=None)
    for c in copies:
        lv = levels[c.path]
        if lv is None or newest is None or lv >= newest or c.path.startswith(("/usr/", "/lib")):
            continue          # the system's own copy is what the others are compared with
        have = "GLIBCXX_" + ".".join(map(str, lv))
        want = "GLIBCXX_" + ".".join(map(str, newest))
        out.append(Finding(
            "OLDER_LIBSTDCXX", Severity.WARNING,
            f"{c.package or os.path.dirname(c.path)} ships a libstdc++.so.6 that stops at {have} ({c.path}) "
            f"while another copy here has "
            f"{want}: whichever loads first serves every module, and modules built for the newer one fail "
            f"with `version GLIBCXX_... not found` when this one wins",
            fix="let the newer libstdc++ load first (conda install -c conda-forge libstdcxx-ng to update the "
                "environment's copy), or remove the bundled one if its package allows",
            details={"path": c.path, "package": c.package, "has": have, "newest": want}))
    return out


def _distinct_sonames(group: Sequence[RuntimeCopy]) -> List[RuntimeCopy]:
    """One copy per SONAME: the loader maps a SONAME once per process."""
    seen: Dict[str, RuntimeCopy] = {}
    for c in group:
        seen.setdefault(c.soname, c)
    return list(seen.values())


def _identical_findings(paths: Sequence[str], infos, owners: OwnerIndex) -> List[Finding]:
    out = []
    # ordered by their paths, as the report has always listed them
    for digest, group in sorted(identical_groups(paths).groups, key=lambda g: g[1]):
        sonames = {infos[p].soname or os.path.basename(p) for p in group if p in infos}
        pkgs = sorted({owners.label(p) or "-" for p in group})
        same = len(sonames) == 1
        out.append(Finding(
            "IDENTICAL_LIBRARY", Severity.INFO,
            f"{len(group)} byte-identical copies of {sorted(sonames)[0]}"
            f" ({', '.join(pkgs)})" + (": the loader maps one of them (same SONAME)" if same
                                         else ": different SONAMEs, so a process can map each copy"),
            fix="nothing to do: one copy is mapped" if same
            else "nothing breaks; one shared copy would save memory",
            details={"sha256": digest, "paths": list(group), "packages": pkgs}))
    return out
