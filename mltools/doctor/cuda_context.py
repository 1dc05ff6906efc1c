"""The CUDA side of the static pass: the process each library is loaded in, and the CUDA checks.

The static pass (:mod:`mltools.doctor.static`) resolves every file; this
module knows what the frameworks add to the process first (their preloads,
cuda-pathfinder's loads, the library that dlopens another), which libraries a
framework's processes reach, and runs the CUDA checks of
:mod:`mltools.doctor.cuda` and :mod:`mltools.doctor.gpucode` over the
sections scanned once per library.
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Set, Tuple

from mltools.doctor.cuda import dlopen_pass, dlopen_targets, in_environment, shadow_findings
from mltools.doctor.owners import OwnerIndex
from mltools.findings import Finding, Severity
from mltools.python import InterpreterInfo

__all__ = ["PassContext", "LOADER_VARS", "framework_reach", "retry_after_pathfinder", "cuda_stack"]

LOADER_VARS = ("LD_LIBRARY_PATH", "LD_PRELOAD")


class PassContext:
    """What the judgements of the pass need to know about the environment beyond the ELF files."""

    def __init__(self, interp: InterpreterInfo, owners: OwnerIndex, reqs, frameworks, infos, candidates,
                 environ: Mapping[str, str]):
        self.owners = owners
        # the variables of ``environ`` the loader reads, those that are set: what every resolution is given
        self.loader_env: Dict[str, str] = {k: environ[k] for k in LOADER_VARS if environ.get(k)}
        self.infos = infos
        self.reqs = reqs
        self.frameworks = frameworks
        self.site_dirs = tuple(interp.site_dirs)
        self.env_dirs = tuple(sorted({c.root for c in candidates}))
        self.env_by_soname: Dict[str, List[str]] = defaultdict(list)
        for path, info in infos.items():
            if info.type == 3:
                self.env_by_soname[info.soname or os.path.basename(path)].append(path)
        self.env_sonames = {k: v[0] for k, v in self.env_by_soname.items()}
        self.driver_needers: Dict[str, List[str]] = {}    # driver SONAME -> files whose NEEDED names it
        self.scan = None                                   # cuda.SectionScan of the environment's libraries
        self.holders: Dict[str, tuple] = {}                # path -> (soname, needed, DlopenNames)
        self.reach: Dict[str, Set[str]] = {}               # framework -> realpaths its processes map
        self._opens: Optional[Dict[str, List[str]]] = None  # library SONAME -> the holders that dlopen it
        self._real: Dict[str, str] = {}                    # path -> its realpath, each asked once

    def realpath(self, path: str) -> str:
        """``os.path.realpath``, once per path for the pass (its files do not move while it runs)."""
        real = self._real.get(path)
        if real is None:
            real = self._real[path] = os.path.realpath(path)
        return real

    def opened_after(self, path: str, main: str, loader_env, resolver) -> Tuple[str, ...]:
        """What is mapped when a library no extension module reaches is loaded.

        In a framework's process (the framework's reach holds it): the framework's
        preloads, the library that dlopens it, and the other libraries that one
        dlopens and this one needs (cuDNN opens libcudnn_graph.so.9 before
        libcudnn_cnn.so.9 needs it; the copy is the one cuDNN's own search path
        finds). Otherwise what cuda-pathfinder loads first, or nothing.
        """
        from mltools.elf.ldtree import resolve_dlopen
        from mltools.errors import MltoolsError

        real = self.realpath(path)
        info = self.infos.get(path)
        soname = info.soname if info is not None else None
        preload = next((p for p in self.frameworks.preloads if real in self.reach.get(p.framework, ())), None)
        if preload is None or not soname:
            return self.loaded_before(path)
        if self._opens is None:
            self._opens = defaultdict(list)
            for h, (hs, hn, names) in self.holders.items():
                for name in dlopen_targets(h, hs, hn, names, None):
                    self._opens[name].append(h)
        first: List[str] = list(preload.paths)
        for holder in self._opens.get(soname, ()):
            if self.realpath(holder) not in self.reach.get(preload.framework, ()):
                continue
            first.append(holder)
            hs, hn, names = self.holders[holder]
            opened = set(dlopen_targets(holder, hs, hn, names, None))
            # the holder's own targets this one needs, each after the targets it needs itself
            # (libcudnn_graph.so.9 before libcudnn_ops.so.9, which needs it)
            order: List[str] = []

            def visit(name: str, depth: int) -> None:
                if name in order or depth > 8:
                    return
                dep = self.env_sonames.get(name)
                dep_info = self.infos.get(dep) if dep else None
                for n in (dep_info.needed if dep_info else ()):
                    if n in opened:
                        visit(n, depth + 1)
                order.append(name)
            for name in info.needed:
                if name in opened:
                    visit(name, 0)
            for name in order:
                try:
                    t = resolve_dlopen(name, holder, main=main, loaded=list(preload.paths), env=loader_env,
                                       resolver=resolver)
                except MltoolsError:
                    continue
                if t.libraries and t.libraries[0].path and t.libraries[0].path not in first:
                    first.append(t.libraries[0].path)
            break
        return tuple(first)

    def loaded_before(self, path: str) -> Tuple[str, ...]:
        """What is mapped before ``path`` loads: its framework's preloads, or for an NVIDIA
        library cuda-pathfinder would load, the dependencies pathfinder loads first."""
        first = self.frameworks.loaded_before(path)
        pf = self.frameworks.pathfinder
        info = self.infos.get(path)
        if first or pf is None or info is None or not info.soname:
            return first
        order = pf.load_order(info.soname)
        if order and self.realpath(order[-1]) == self.realpath(path):
            return order[:-1]
        return first

    def in_env(self, path: Optional[str]) -> bool:
        return in_environment(path, self.env_dirs)

    def requires(self, package: Optional[str]) -> Set[str]:
        if not package:
            return set()
        return self.reqs.required_names(package.split(" ")[0])


def retry_after_pathfinder(trees, roots, loader_env, main, resolver, tree_findings: List[Finding],
                            ctx: "PassContext") -> Dict[str, Tuple[str, ...]]:
    """Extension modules whose NVIDIA libraries cuda-pathfinder loads first.

    CuPy's ``cupy_backends/cuda/libs/cublas.so`` needs ``libcublas.so.12`` and
    has no search path to the wheel; ``cupy_backends.cuda.libs`` imports it
    only after ``cuda.pathfinder.load_nvidia_dynamic_lib("cublas")`` mapped the
    wheel's copy by path (its dependencies first), and the loader reuses that
    object by SONAME. A module of a package that requires cuda-pathfinder is
    resolved again after those loads; when that finds everything it is a note.
    """
    from mltools.elf.ldtree import resolve_tree
    from mltools.errors import MltoolsError

    pf = ctx.frameworks.pathfinder
    after: Dict[str, Tuple[str, ...]] = {}
    if pf is None:
        return after
    for root, as_ext in roots:
        t = trees.get(root)
        if not as_ext or t is None:
            continue
        missing = [lib.soname for lib in t.libraries if lib.path is None and not lib.error]
        if not missing:
            continue
        pkg = ctx.owners.owner(root)
        if pkg is None or "cuda-pathfinder" not in ctx.requires(str(pkg)):
            continue
        loads: List[str] = []
        for soname in missing:
            loads += [p for p in pf.load_order(soname) if p not in loads]
        if not loads:
            continue
        try:
            retry = resolve_tree(root, env=loader_env, main=main, loaded=list(ctx.loaded_before(root)) + loads,
                                 resolver=resolver)
        except MltoolsError:
            continue
        still = [lib.soname for lib in retry.libraries if lib.path is None]
        found = [s for s in missing if s not in still]
        if not found:
            continue
        trees[root] = retry
        after[root] = tuple(loads)
        tree_findings.append(Finding(
            "NEEDS_PRELOAD", Severity.INFO,
            f"{root} finds {', '.join(found)} only once cuda-pathfinder {pf.version} has loaded "
            f"{', '.join(loads)} (it has no search path of its own to "
            f"{'them' if len(found) > 1 else 'it'}); {pkg.name} does that before it imports the module",
            fix=f"nothing, as long as the module is imported through {pkg.name}; importing it on its own fails",
            details={"path": root, "package": str(pkg), "missing_alone": found, "after": loads,
                     "preloader": f"cuda-pathfinder {pf.version}"}))
    return after


def cuda_stack(interp, programs: Set[str], trees, after, owners: OwnerIndex, resolver,
               ctx: "PassContext", gpus, driver) -> dict:
    """The CUDA pass: the sections of every library (dlopen names, GPU code), then what those
    names resolve to, shadowed copies, the driver, and the GPU code against the GPUs."""
    from mltools.doctor import gpucode
    from mltools.elf.ldtree import resolve_tree
    from mltools.errors import MltoolsError

    scan, holders, reach = ctx.scan, ctx.holders, ctx.reach
    recorded_missing = {}
    for path, owner in owners.recorded():
        base = os.path.basename(path)
        if ".so" in base and base not in recorded_missing and not os.path.lexists(path):
            recorded_missing[base] = str(owner)
    # every name an installed distribution requires (their closures add nothing: what they
    # walk through is installed, so its own requirements are counted here already)
    required = {r.name for dist in ctx.reqs.versions for r in ctx.reqs.active(dist)}
    res = dlopen_pass(interp.executable, holders, reach, ctx.frameworks, owners, ctx.loader_env, ctx.env_dirs,
                      ctx.env_sonames, recorded_missing, required, resolver, ctx.driver_needers)
    findings = list(res.findings)

    def again(root, env):       # env: the loader variables, without LD_LIBRARY_PATH
        try:
            return resolve_tree(root, env=env,
                                main=None if root in programs else interp.executable,
                                loaded=list(after.get(root, ())) if root not in programs else (), resolver=resolver)
        except MltoolsError:
            return None
    findings += shadow_findings(trees, again, ctx.env_dirs, ctx.env_sonames, owners, ctx.loader_env)
    findings += gpucode.gpu_code_findings(scan.gpu_code, scan.partial, owners, gpus, driver)
    summaries = gpucode.package_summaries(scan.gpu_code, scan.partial, owners)
    scope = list(res.scope) + list(scan.scope)
    if scan.gpu_code and not gpus:
        n = len(scan.gpu_code)
        scope.append(f"GPU code of {n} file{'s' if n != 1 else ''} not compared with a GPU: none found "
                     "(nvidia-smi) and no --gpu-arch given")
    return {"findings": findings, "scope": scope, "gpu_code": summaries, "dlopens": res.dlopens}


def framework_reach(trees, ctx: "PassContext") -> Dict[str, Set[str]]:
    """For each framework with preloads: the realpaths of the libraries its processes map
    (its extension modules' trees, its preloads' trees, and what those open by name)."""
    if not ctx.frameworks.preloads:
        return {}
    realpath = ctx.realpath
    by_real = {realpath(p): t for p, t in trees.items()}
    holders = {realpath(p): v for p, v in ctx.holders.items()}
    out: Dict[str, Set[str]] = {}
    for pre in ctx.frameworks.preloads:
        members: Set[str] = set()
        todo = [realpath(p) for p in pre.paths]
        todo += [realpath(p) for p in trees if pre.covers(p)]
        while todo:
            real = todo.pop()
            if real in members:
                continue
            members.add(real)
            t = by_real.get(real)
            if t is not None:
                todo += [lib.path for lib in t.libraries if lib.path and lib.path not in members]
            h = holders.get(real)
            if h is not None:
                soname, needed, names = h
                for name in dlopen_targets(real, soname, needed, names, None):
                    target = ctx.env_sonames.get(name)
                    if target is not None:
                        todo.append(realpath(target))
        out[pre.framework] = members
    return out
