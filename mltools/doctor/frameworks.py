"""How torch, JAX and CuPy load NVIDIA's libraries, read from their installed source, never run.

Each framework maps CUDA libraries by absolute path before anything opens
them by name, and the loader then reuses those objects by SONAME: that is why
a stale ``LD_LIBRARY_PATH`` does not reach torch's cuBLAS, and why CuPy's
extension modules, which have no search path to the wheels, still import.

- torch (``torch/__init__.py``): ``libtorch_global_deps.so`` (RTLD_GLOBAL),
  then, when that pulled in ``libcudart``, the list in ``_preload_cuda_deps``:
  for each ``(folder, glob)`` the first ``sys.path`` entry with
  ``nvidia/<folder>/lib/<glob>``, ``nvidia/cu<major>/lib/<glob>`` or
  ``<folder>/lib/<glob>``, first match loaded. Applies to torch's own
  extension modules (and to what imports torch first).
- JAX (``jax_plugins/xla_cuda12|13/__init__.py``): ``_load_nvidia_libraries``
  loads ``nvidia.<module>``'s ``lib/<name>`` for each ``_load(module, names)``
  call, at the first CUDA use, before ``xla_cuda_plugin.so``.
- cuda-pathfinder (CuPy, cuda-python): ``load_nvidia_dynamic_lib(name)``
  looks for each SONAME of its descriptor table in the site-packages
  directories of the wheels, after loading the library's dependencies, when
  the package first uses that library.

The lists are read with :mod:`ast`; a framework whose source does not match
(another version) is reported in the scope, not guessed.
"""
from __future__ import annotations

import ast
import glob
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

__all__ = ["Preload", "PathfinderTable", "FrameworkModel", "read_frameworks"]


@dataclass(frozen=True)
class Preload:
    """Libraries a framework maps by absolute path before its CUDA code runs."""
    framework: str                  # "torch 2.14.1"
    source: str                     # where the list was read: torch/__init__.py:_preload_cuda_deps
    when: str                       # "import torch"
    applies_to: Tuple[str, ...]     # directories whose extension modules run after it
    paths: Tuple[str, ...]          # in load order
    not_found: Tuple[str, ...] = () # names it looks for that no directory has (it skips them)

    def covers(self, path: str) -> bool:
        return any(path.startswith(d.rstrip("/") + "/") for d in self.applies_to)


@dataclass(frozen=True)
class PathfinderEntry:
    name: str                       # cublas
    sonames: Tuple[str, ...]        # in preference order
    site_dirs: Tuple[str, ...]      # nvidia/cu13/lib, nvidia/cublas/lib
    dependencies: Tuple[str, ...]   # loaded first (names of other entries)
    driver: bool = False


@dataclass
class PathfinderTable:
    """cuda-pathfinder's descriptor table, and where each library would be found."""
    version: str
    entries: Dict[str, PathfinderEntry]
    site_packages: Tuple[str, ...]
    by_soname: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        for e in self.entries.values():
            for s in e.sonames:
                self.by_soname.setdefault(s, e.name)

    def locate(self, name: str) -> Optional[str]:
        """The file ``load_nvidia_dynamic_lib(name)`` takes from site-packages, if any."""
        e = self.entries.get(name)
        if e is None or e.driver:
            return None
        for sp in self.site_packages:
            for rel in e.site_dirs:
                for soname in e.sonames:
                    p = os.path.join(sp, rel, soname)
                    if os.path.isfile(p):
                        return p
        return None

    def load_order(self, soname: str) -> Tuple[str, ...]:
        """What loading the library that answers ``soname`` maps, dependencies first (paths)."""
        name = self.by_soname.get(soname)
        if name is None:
            return ()
        out: List[str] = []

        def visit(n: str, depth: int) -> None:
            e = self.entries.get(n)
            if e is None or depth > 8:
                return
            for dep in e.dependencies:
                visit(dep, depth + 1)
            p = self.locate(n)
            if p and p not in out:
                out.append(p)
        visit(name, 0)
        return tuple(out)


@dataclass
class FrameworkModel:
    preloads: List[Preload] = field(default_factory=list)
    pathfinder: Optional[PathfinderTable] = None
    scope: List[str] = field(default_factory=list)

    def loaded_before(self, path: str) -> Tuple[str, ...]:
        """What the frameworks have mapped when the extension module ``path`` loads."""
        out: List[str] = []
        for p in self.preloads:
            if p.covers(path):
                out.extend(x for x in p.paths if x not in out)
        return tuple(out)



def _function(tree: ast.AST, name: str) -> Optional[ast.FunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    return None


def _parse(path: str) -> Optional[ast.AST]:
    try:
        with open(path, encoding="utf-8") as fh:
            return ast.parse(fh.read(), filename=path)
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return None


def _literal(node) -> object:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        return None


def _first_with(sys_path: Sequence[str], rel: str) -> Optional[str]:
    for d in sys_path:
        if d and os.path.exists(os.path.join(d, rel)):
            return d
    return None


# ---------------------------------------------------------------- torch

def _torch(sys_path: Sequence[str], site: str, version: str, cuda: str, model: FrameworkModel) -> None:
    from mltools.elf.reader import read_elf

    init = os.path.join(site, "torch", "__init__.py")
    tree = _parse(init)
    deps = _function(tree, "_preload_cuda_deps") if tree is not None else None
    if deps is None:
        model.scope.append(f"torch {version}: _preload_cuda_deps not found in {init}: its CUDA preloads are not modelled")
        return
    pairs: List[Tuple[str, str]] = []
    optional: List[Tuple[str, str]] = []
    best_effort = False         # torch 2.14 passes required=False; 2.13 stops at the first missing library
    for node in ast.walk(deps):
        value = getattr(node, "value", None)
        targets = getattr(node, "targets", None) or [getattr(node, "target", None)]
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and any(
                isinstance(t, ast.Name) and t.id == "cuda_libs" for t in targets if t is not None):
            lit = _literal(value)
            if isinstance(lit, list) and all(isinstance(x, tuple) and len(x) == 2 for x in lit):
                pairs = [(str(a), str(b)) for a, b in lit]
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_preload_cuda_lib":
            args = [_literal(a) for a in node.args[:2]]
            if all(isinstance(a, str) for a in args):
                optional.append((args[0], args[1]))
            elif any(k.arg == "required" for k in node.keywords):
                best_effort = True
    if not pairs:
        model.scope.append(f"torch {version}: the cuda_libs list of _preload_cuda_deps was not understood: "
                           "its CUDA preloads are not modelled")
        return
    global_deps = os.path.join(site, "torch", "lib", "libtorch_global_deps.so")
    paths: List[str] = []
    if os.path.isfile(global_deps):
        paths.append(global_deps)
        try:
            needs_cudart = any(n.startswith("libcudart.so") for n in read_elf(global_deps).needed)
        except Exception:  # noqa: BLE001 - unreadable: the reader pass reports it
            needs_cudart = False
        if not needs_cudart:       # a CPU build: torch preloads nothing else
            model.preloads.append(Preload(f"torch {version}", "torch/__init__.py:_load_global_deps",
                                          "import torch", (os.path.join(site, "torch"),), tuple(paths)))
            return
    major = cuda.split(".")[0] if cuda else ""
    not_found = []
    for folder, pattern in pairs + optional:
        hit = None
        for d in sys_path:
            if not d:
                continue
            cands = glob.glob(os.path.join(d, "nvidia", folder, "lib", pattern))
            if major:
                cands += glob.glob(os.path.join(d, "nvidia", f"cu{major}", "lib", pattern))
            cands += glob.glob(os.path.join(d, folder, "lib", pattern))
            if cands:
                hit = cands[0]
                break
        if hit is None:
            if (folder, pattern) in pairs:
                not_found.append(pattern)
                if not best_effort:
                    break       # ValueError from _preload_cuda_lib; _load_global_deps swallows it
        elif hit not in paths:
            paths.append(hit)
    model.preloads.append(Preload(f"torch {version}", "torch/__init__.py:_preload_cuda_deps", "import torch",
                                  (os.path.join(site, "torch"),), tuple(paths), tuple(not_found)))


# ---------------------------------------------------------------- JAX

def _jax(sys_path: Sequence[str], plugin_dir: str, version: str, model: FrameworkModel) -> None:
    init = os.path.join(plugin_dir, "__init__.py")
    tree = _parse(init)
    fn = _function(tree, "_load_nvidia_libraries") if tree is not None else None
    name = os.path.basename(plugin_dir)
    if fn is None:
        model.scope.append(f"{name}: _load_nvidia_libraries not found: its CUDA preloads are not modelled")
        return
    paths: List[str] = []
    not_found: List[str] = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_load" and len(node.args) >= 2:
            module, libs = _literal(node.args[0]), _literal(node.args[1])
            if not isinstance(module, str) or not isinstance(libs, list):
                continue
            # nvidia.<module> is a namespace package: __path__[0] is the first sys.path entry with it
            base = _first_with(sys_path, os.path.join("nvidia", module))
            for lib in libs:
                p = os.path.join(base, "nvidia", module, "lib", lib) if base else None
                if p and os.path.isfile(p):
                    if p not in paths:
                        paths.append(p)
                elif module.startswith("cu") and module[2:].isdigit():
                    continue        # the other CUDA major's layout: absent by design
                else:
                    not_found.append(lib)
    model.preloads.append(Preload(
        f"{name} {version}".strip(), f"jax_plugins/{name}/__init__.py:_load_nvidia_libraries",
        "the first JAX call that uses CUDA (jax.devices())", (plugin_dir,), tuple(paths), tuple(not_found)))


# ---------------------------------------------------------------- cuda-pathfinder

def _pathfinder(site: str, version: str, site_packages: Sequence[str], model: FrameworkModel) -> None:
    cat = os.path.join(site, "cuda", "pathfinder", "_dynamic_libs", "descriptor_catalog.py")
    tree = _parse(cat)
    entries: Dict[str, PathfinderEntry] = {}
    if tree is not None:
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DescriptorSpec"):
                continue
            kw = {k.arg: _literal(k.value) for k in node.keywords if k.arg}
            name = kw.get("name")
            if not isinstance(name, str):
                continue
            entries[name] = PathfinderEntry(
                name, tuple(kw.get("linux_sonames") or ()), tuple(kw.get("site_packages_linux") or ()),
                tuple(kw.get("dependencies") or ()), driver=kw.get("packaged_with") == "driver")
    if not entries:
        model.scope.append(f"cuda-pathfinder {version}: its library table (descriptor_catalog.py) was not "
                           "understood: libraries it loads for CuPy are not modelled")
        return
    model.pathfinder = PathfinderTable(version, entries, tuple(site_packages))


def read_frameworks(sys_path: Sequence[str], site_dirs: Sequence[str],
                    versions: Dict[str, str]) -> FrameworkModel:
    """The preload models of the frameworks installed on ``sys_path``.

    ``versions`` maps canonical distribution names to installed versions (for
    the labels and to know which frameworks are there).
    """
    from mltools.doctor.host import torch_cuda_version

    model = FrameworkModel()
    torch_site = _first_with(sys_path, os.path.join("torch", "__init__.py"))
    if torch_site is not None:
        tv = torch_cuda_version([torch_site])
        _torch(sys_path, torch_site, versions.get("torch", tv[0] if tv else "?"), tv[1] if tv else "", model)
    for d in sys_path:
        for plugin in sorted(glob.glob(os.path.join(d, "jax_plugins", "xla_cuda[0-9]*"))):
            if os.path.isfile(os.path.join(plugin, "__init__.py")):
                major = os.path.basename(plugin)[len("xla_cuda"):]
                _jax(sys_path, plugin, versions.get(f"jax-cuda{major}-plugin", ""), model)
    for p in model.preloads:
        if p.not_found:
            model.scope.append(f"{p.framework} looks for {', '.join(p.not_found)} ({p.source}) and no directory "
                               "here has it: that preload does not happen")
    pf_site = _first_with(sys_path, os.path.join("cuda", "pathfinder", "__init__.py"))
    if pf_site is not None:
        _pathfinder(pf_site, versions.get("cuda-pathfinder", "?"), list(site_dirs), model)
    return model

