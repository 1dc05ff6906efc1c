"""The CUDA stack, statically: what will be dlopen'ed, from where, and whether the copies agree.

Three questions the DT_NEEDED walk of the static pass cannot answer:

- **Which library does a dlopen load?** NVIDIA's libraries open each other
  by name at run time (cuDNN its engines, cuBLASLt ``libnvrtc.so.13``). The
  names come from the read-only data of every library
  (:mod:`mltools.elf.dlnames`), limited to the names of
  :mod:`mltools.doctor.cuda_libs`; each is resolved as ``dlopen`` would from
  the library that holds it (:func:`mltools.elf.ldtree.resolve_dlopen`), in a
  process where the framework that uses it has already mapped its preloads
  (:mod:`mltools.doctor.frameworks`).
- **Is it the copy the environment ships?** A copy found through
  ``LD_LIBRARY_PATH`` or the ld.so cache while the environment has its own is
  ``SHADOWED`` (both named, with the variable or directory responsible), for
  DT_NEEDED and dlopen alike.
- **Do the copies agree?** An NVIDIA library that needs a versioned symbol
  (``__nvJitLinkComplete_12_4``) the resolving copy lacks is ``VERSION_SKEW``,
  with what each copy defines and which package to update.

The driver's libraries (``libcuda.so.1``) are summed up in one finding.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from mltools.doctor import cuda_libs
from mltools.doctor.frameworks import FrameworkModel
from mltools.doctor.model import DlopenLibrary
from mltools.doctor.owners import OwnerIndex
from mltools.elf.dlnames import DlopenNames
from mltools.elf.fatbin import GpuCode
from mltools.elf.ldtree import VIA_LABELS, DepTree, Library
from mltools.findings import Finding, Severity

__all__ = ["CudaResult", "SectionScan", "scan_files", "dlopen_targets", "dlopen_pass", "shadow_findings",
           "version_skew", "driver_findings", "in_environment"]


@dataclass(frozen=True)
class CudaResult:
    findings: Tuple[Finding, ...]
    dlopens: Tuple[DlopenLibrary, ...]
    scope: Tuple[str, ...] = ()


def in_environment(path: Optional[str], env_dirs: Sequence[str]) -> bool:
    if not path:
        return False
    real = os.path.realpath(path)
    return any(real.startswith(os.path.realpath(d).rstrip("/") + "/") for d in env_dirs)


def _how(lib: Library) -> str:
    """Why the loader took this copy: 'LD_LIBRARY_PATH element /x', 'DT_RUNPATH of y', ..."""
    via = lib.via or ""
    if via == "ld_library_path":
        d = os.path.dirname(lib.found_as or lib.path or "")
        return f"LD_LIBRARY_PATH element {d}"
    if via in ("rpath", "runpath") and lib.via_object:
        return f"{VIA_LABELS[via][0]} of {os.path.basename(lib.via_object)}"
    if via == "ld.so.cache":
        return "/etc/ld.so.cache"
    return VIA_LABELS.get(via, (via, via))[0]


def _without_llp(environ: Mapping[str, str]) -> Dict[str, str]:
    return {k: v for k, v in environ.items() if k != "LD_LIBRARY_PATH"}


# ---------------------------------------------------------------------- one read of each file

@dataclass
class SectionScan:
    names: Dict[str, DlopenNames]           # files holding NVIDIA or driver library names
    gpu_code: Dict[str, "GpuCode"]          # files with GPU code in .nv_fatbin
    partial: Dict[str, Tuple[str, ...]]     # files keeping more GPU code in other sections
    scope: List[str]


_OTHER_GPU_SECTIONS = (".cask_resource", ".ldata")


def scan_files(paths: Sequence[str], step: Optional[Callable[[], None]] = None) -> SectionScan:
    """Map each file once: the library names in its read-only data and its GPU code."""
    from mltools.elf.dlnames import dlopen_names_of
    from mltools.elf.fatbin import _MAGIC_BYTES, gpu_code_of
    from mltools.elf.sections import mapped_sections

    out = SectionScan({}, {}, {}, [])
    unreadable = 0
    for path in paths:
        if step is not None:
            step()
        try:
            with mapped_sections(path) as m:
                names = dlopen_names_of(m)
                code = gpu_code_of(m)
                other = []
                for sec in m.sections:
                    if sec.name in _OTHER_GPU_SECTIONS and sec.size:
                        # cuBLASLt's and cuDNN's .cask_resource, cuFFT's .ldata: fatbins they load themselves
                        if m.buf.find(_MAGIC_BYTES, sec.offset, sec.offset + min(sec.size, 1 << 22)) >= 0:
                            other.append(sec.name)
        except (OSError, ValueError):
            unreadable += 1         # the reader pass reports unreadable files
            continue
        if any(cuda_libs.nvidia_library(n) or cuda_libs.is_driver_library(n) for n in names.names) \
                or names.templates:
            out.names[path] = names
        if code is not None:
            out.gpu_code[path] = code
            if other:
                out.partial[path] = tuple(other)
    if unreadable:
        out.scope.append(f"{unreadable} files could not be mapped for their sections (see UNREADABLE)")
    return out


# ---------------------------------------------------------------------- names to resolve

def dlopen_targets(holder: str, soname: Optional[str], needed: Sequence[str], names: DlopenNames,
                   package: Optional[str]) -> List[str]:
    """The NVIDIA library names ``holder`` may dlopen, completed as it completes them."""
    out: List[str] = []
    cuda_major = cuda_libs.cuda_major_of_file(holder, needed, package.split(" ")[0] if package else None)
    own_stem = cuda_libs.stem_of(soname or os.path.basename(holder))
    for name in names.names:
        if name.endswith(".so"):
            name = cuda_libs.complete_name(name, soname)    # a stem: cuDNN adds its own major
            if name is None:
                continue
        if cuda_libs.stem_of(name) == own_stem or name == soname:
            continue
        if cuda_libs.nvidia_library(name) is not None or cuda_libs.is_driver_library(name):
            out.append(name)
    for tmpl in names.templates:
        m = re.fullmatch(r"(lib[A-Za-z0-9_+\-]+\.so)\.%d", tmpl)
        if m and cuda_major and cuda_libs.nvidia_library(m.group(1)) is not None:
            out.append(f"{m.group(1)}.{cuda_major}")
    return sorted(set(out))


# ---------------------------------------------------------------------- the dlopen pass

def dlopen_pass(python: str, holders: Mapping[str, Tuple[Optional[str], Sequence[str], DlopenNames]],
                reach: Mapping[str, Set[str]], frameworks: FrameworkModel, owners: OwnerIndex,
                loader_env: Mapping[str, str], env_dirs: Sequence[str], env_sonames: Mapping[str, str],
                recorded_missing: Mapping[str, str], required_wheels: Set[str], resolver,
                driver_needed: Optional[Mapping[str, Sequence[str]]] = None) -> CudaResult:
    """Resolve every NVIDIA name a library of the environment may dlopen.

    ``holders``: path -> (soname, needed, names). ``reach``: preload framework
    label -> the realpaths of libraries its processes map. ``loader_env``: the loader's
    variables that are set (LD_LIBRARY_PATH, LD_PRELOAD). ``env_sonames``:
    SONAME -> a path of the environment with it. ``recorded_missing``: file
    name -> package, for shared objects a RECORD lists but the disk lacks.
    ``required_wheels``: the wheel names the installed packages require.
    ``driver_needed``: driver SONAME -> files whose DT_NEEDED names it (and
    that no extension module reaches): summed up with the dlopen'ed ones.
    """
    from mltools.elf.ldtree import resolve_dlopen
    from mltools.errors import MltoolsError

    findings: List[Finding] = []
    dlopens: List[DlopenLibrary] = []
    driver_needers: Dict[str, List[str]] = defaultdict(list)
    for name, paths in (driver_needed or {}).items():
        driver_needers[name].extend(paths)
    scope: List[str] = []
    preloads = {p.framework: p for p in frameworks.preloads}
    work = []
    for holder, (soname, needed, names) in sorted(holders.items()):
        pkg = owners.label(holder)
        for name in dlopen_targets(holder, soname, needed, names, pkg):
            work.append((holder, soname, pkg, name))
    for holder, soname, pkg, name in work:
        if cuda_libs.is_driver_library(name):
            driver_needers[name].append(holder)
            continue
        real = os.path.realpath(holder)
        contexts = [f for f, members in reach.items() if real in members] or [None]
        for fw in contexts:
            loaded = list(preloads[fw].paths) if fw else []
            try:
                tree = resolve_dlopen(name, holder, main=python, loaded=loaded, env=loader_env, resolver=resolver)
            except MltoolsError as exc:
                scope.append(f"dlopen of {name} from {holder} not resolved: {exc.message}")
                continue
            except Exception as exc:  # noqa: BLE001 - one odd file must not sink the report
                findings.append(Finding("INTERNAL_ERROR", Severity.WARNING,
                                        f"mltools failed resolving dlopen({name}) from {holder}: "
                                        f"{type(exc).__name__}: {exc}", details={"path": holder}))
                continue
            lib = tree.libraries[0]
            preloaded = fw if (lib.via == "loaded" and fw and _is_preloaded(preloads[fw], lib.path)) else None
            dlopens.append(DlopenLibrary(
                name=name, holder=holder, holder_package=pkg, path=_as_opened(lib), package=owners.label(lib.path),
                via=("preload" if preloaded else lib.via), how=(f"preloaded by {fw}" if preloaded else
                                                               (_how(lib) if lib.path else "not found")),
                context=fw))
            findings += _judge_dlopen(name, holder, pkg, tree, lib, fw, python, loaded, loader_env,
                                      env_dirs, env_sonames, recorded_missing, required_wheels, owners, resolver)
    missing_driver: Dict[str, List[str]] = {}
    for name, needers in sorted(driver_needers.items()):
        try:
            tree = resolve_dlopen(name, needers[0], main=python, env=loader_env, resolver=resolver)
        except Exception:  # noqa: BLE001 - a needer that cannot be read: reported by the reader pass
            continue
        if tree.libraries and tree.libraries[0].path is None:
            missing_driver[name] = sorted(set(needers))
    findings += driver_findings(missing_driver, owners)
    return CudaResult(tuple(findings), tuple(dlopens), tuple(scope))


def _is_preloaded(preload, path: Optional[str]) -> bool:
    real = os.path.realpath(path) if path else None
    return any(os.path.realpath(p) == real for p in preload.paths)


def _as_opened(lib: Library) -> Optional[str]:
    """The path as the loader opens it, the one its messages name ("/home/u/..." where /home is a
    link), rather than the real path the library is identified by."""
    return lib.found_as or lib.path


def _judge_dlopen(name, holder, pkg, tree: DepTree, lib: Library, fw, python, loaded, loader_env,
                  env_dirs, env_sonames, recorded_missing, required_wheels, owners, resolver) -> List[Finding]:
    from mltools.elf.ldtree import resolve_dlopen

    who = f"{holder} ({pkg})" if pkg else holder
    ctx = f" in a process where {fw} has mapped its preloads" if fw else ""
    if lib.path is None:
        base = name
        if name in env_sonames:
            where = env_sonames[name]
            return [Finding(
                "DLOPEN_NOT_FOUND", Severity.INFO,
                f"{who} names {name}, which its own search path does not reach{ctx} (the environment has it "
                f"at {where}): a dlopen by that name fails, so unless it opens the file by its path, the "
                "feature that uses it is unavailable",
                fix="nothing to do unless that feature fails; then load the library first (ctypes.CDLL with "
                    "its path)",
                details={"path": holder, "package": pkg, "name": name, "present_at": where})]
        if base in recorded_missing:
            owner = recorded_missing[base]
            return [Finding(
                "DLOPEN_MISSING", Severity.ERROR,
                f"{who} opens {name} at run time, and {owner} lists it among its files, but it is not on disk: "
                "the feature that needs it fails when it is first used",
                fix=f"reinstall it: pip install --force-reinstall --no-deps {owner.replace(' ', '==')}",
                details={"path": holder, "package": pkg, "name": name, "deleted_from": owner})]
        wheels = set(cuda_libs.wheel_names(name))
        wanted = sorted(wheels & required_wheels)
        if wanted:
            return [Finding(
                "DLOPEN_MISSING", Severity.WARNING,
                f"{who} opens {name} at run time{ctx}, and nothing here provides it, though "
                f"{' or '.join(wanted)} is required by an installed package",
                fix=f"pip install {wanted[0]} (REQUIREMENT_MISSING says which version)",
                details={"path": holder, "package": pkg, "name": name, "wheels": wanted})]
        return []       # optional and not installed (or a name in a message): nothing to say
    if lib.via in ("loaded", "rpath", "runpath") and in_environment(lib.path, env_dirs):
        return _missing_deps(name, who, holder, pkg, tree, lib, owners)
    env_copy = env_sonames.get(name)
    if env_copy is None or in_environment(lib.path, env_dirs):
        return _missing_deps(name, who, holder, pkg, tree, lib, owners)
    # found outside the environment while the environment ships its own copy
    expected = None
    if lib.via == "ld_library_path":
        alt = resolve_dlopen(name, holder, main=python, loaded=loaded, env=_without_llp(loader_env),
                             resolver=resolver)
        expected = alt.libraries[0] if alt.libraries and alt.libraries[0].path else None
    broken = _symbols_missing_in_process(lib.path, python, list(loaded) + [holder], loader_env, resolver)
    return [_shadow_finding(f"{who} opens {name} at run time{ctx}", name, holder, pkg, lib, expected, env_copy,
                            tree, owners, broken)]


def _symbols_missing_in_process(path: str, python: str, loaded: Sequence[str], loader_env, resolver) -> List[str]:
    """The symbols (or versions) ``path`` needs that the process it is opened in lacks."""
    from mltools.elf.check import check_file
    from mltools.errors import MltoolsError
    from mltools.python import interpreter_binary

    try:
        fc = check_file(path, python=interpreter_binary(python), loaded=list(loaded), resolver=resolver,
                        env=loader_env)
    except (MltoolsError, OSError):
        return []
    out: List[str] = []
    for f in fc.findings:
        if f.code == "UNDEFINED":
            out += [s["name"] for s in f.details.get("symbols", ()) if isinstance(s, dict)]
        elif f.code == "VERSION_MISSING":
            out.append(f"version {f.details.get('version')}")
    return out


def _missing_deps(name, who, holder, pkg, tree: DepTree, lib: Library, owners) -> List[Finding]:
    """A dlopen target found, but its own libraries are not: the dlopen fails."""
    # the driver's libraries are the driver finding's (NO_DRIVER), not this dlopen's
    missing = [x.soname for x in tree.libraries[1:] if x.path is None and not cuda_libs.is_driver_library(x.soname)]
    if not missing or lib.via == "loaded":
        return []
    optional = not (cuda_libs.nvidia_library(name) and any(cuda_libs.nvidia_library(m) for m in missing))
    return [Finding(
        "DLOPEN_FAILS", Severity.INFO if optional else Severity.WARNING,
        f"{who} opens {name} at run time; it is found ({lib.path}) but needs {', '.join(missing)}, which "
        + ("is" if len(missing) == 1 else "are") + " not found, so that dlopen fails"
        + (" (an optional plugin: only the feature that needs it is unavailable)" if optional else ""),
        fix=("install what it needs if you use that feature" if optional else
             "install the missing libraries' wheels (MISSING_LIBRARY has the commands)"),
        details={"path": holder, "package": pkg, "name": name, "found": lib.path, "missing": missing})]


def _shadow_finding(what: str, name: str, holder: str, pkg: Optional[str], lib: Library,
                    expected: Optional[Library], env_copy: str, tree: Optional[DepTree], owners: OwnerIndex,
                    broken: Sequence[str] = ()) -> Finding:
    responsible = _how(lib)
    exp_path = expected.path if expected is not None else env_copy
    exp_pkg = owners.label(exp_path)
    exp_how = f" ({_how(expected)})" if expected is not None else ""
    missing = [x.soname for x in (tree.libraries[1:] if tree else ())
               if x.path is None and not cuda_libs.is_driver_library(x.soname)]
    msg = (f"{what}: it resolves to {_as_opened(lib)} ({owners.label(lib.path) or 'outside this environment'}, through "
           f"{responsible}), not to the environment's own {exp_path} "
           f"({exp_pkg or 'no package'}{exp_how.strip() and ', ' + exp_how.strip(' ()')})")
    if missing:
        msg += f"; that copy needs {', '.join(missing)}, not found here, so loading it fails"
    if broken:
        shown = ", ".join(broken[:3]) + (f" and {len(broken) - 3} more" if len(broken) > 3 else "")
        msg += (f"; that copy needs {shown}, which the libraries already loaded do not define: loading it fails "
                "with 'undefined symbol'")
    if lib.via == "ld_library_path":
        d = os.path.dirname(lib.found_as or lib.path or "")
        fix = f"remove {d} from LD_LIBRARY_PATH (or unset it): the pip wheels bring their own libraries"
    elif lib.via == "ld.so.cache":
        fix = (f"the ld.so cache lists {lib.path}; preload the environment's copy (import the framework first) "
               f"or remove that directory from /etc/ld.so.conf.d")
    else:
        fix = f"make {exp_path} load first"
    return Finding("SHADOWED", Severity.ERROR if missing or broken else Severity.WARNING, msg, fix=fix,
                   details={"path": holder, "package": pkg, "name": name, "loads": lib.path,
                            "loads_package": owners.label(lib.path), "via": lib.via, "responsible": responsible,
                            "expected": exp_path, "expected_package": exp_pkg, "missing": missing,
                            "undefined": list(broken)})


# ---------------------------------------------------------------------- DT_NEEDED shadowing

def shadow_findings(trees: Mapping[str, DepTree], resolve_again: Callable[[str, Mapping[str, str]], Optional[DepTree]],
                    env_dirs: Sequence[str], env_sonames: Mapping[str, str], owners: OwnerIndex,
                    loader_env: Mapping[str, str]) -> List[Finding]:
    """DT_NEEDED libraries taken from LD_LIBRARY_PATH while the environment's own copy
    would load without it (the stale CUDA toolkit in front of a pip wheel). ``loader_env``:
    the loader's variables that are set; ``resolve_again`` gets them without LD_LIBRARY_PATH."""
    if not loader_env.get("LD_LIBRARY_PATH"):
        return []
    out: List[Finding] = []
    seen: Set[Tuple[str, str]] = set()
    for root, t in sorted(trees.items()):
        suspects = [lib for lib in t.libraries if lib.via == "ld_library_path" and lib.path
                    and not in_environment(lib.path, env_dirs) and lib.soname in env_sonames]
        if not suspects:
            continue
        alt = resolve_again(root, _without_llp(loader_env))
        if alt is None:
            continue
        by = alt.by_soname()
        for lib in suspects:
            exp = by.get(lib.soname)
            if exp is None or not exp.path or os.path.realpath(exp.path) == os.path.realpath(lib.path):
                continue
            needers = [n for n in lib.needed_by if n]
            key = (lib.soname, lib.path)
            if key in seen:
                continue
            seen.add(key)
            needer = needers[0] if needers else root
            pkg = owners.label(needer)
            who = f"{needer} ({pkg})" if pkg else needer
            out.append(_shadow_finding(f"{who} needs {lib.soname}", lib.soname, needer, pkg, lib, exp,
                                       env_sonames[lib.soname], None, owners))
    return out


# ---------------------------------------------------------------------- version skew

_API_SUFFIX = re.compile(r"^(.*?)_(\d+)_(\d+)$")


def _api_level(names: Iterable[str]) -> Optional[Tuple[int, int]]:
    levels = [(int(m.group(2)), int(m.group(3))) for m in (_API_SUFFIX.match(n) for n in names) if m]
    return max(levels) if levels else None


def version_skew(findings: Sequence[Finding], trees: Mapping[str, DepTree], owners: OwnerIndex,
                 env_by_soname: Mapping[str, Sequence[str]]) -> List[Finding]:
    """UNDEFINED and VERSION_MISSING findings between two NVIDIA libraries, told as the skew they are."""
    from mltools.elf.reader import read_symbols

    out: List[Finding] = []
    for f in findings:
        if f.code not in ("UNDEFINED", "VERSION_MISSING"):
            out.append(f)
            continue
        d = dict(f.details)
        if f.code == "UNDEFINED":
            syms = d.get("symbols") or []
            provider = {s.get("needed_from") for s in syms if isinstance(s, dict)} - {None}
            names = [s["name"] for s in syms if isinstance(s, dict)]
        else:
            provider = {d.get("needed_name")}
            names = list(d.get("symbols") or ())
        needer = str(d.get("object") or d.get("required_by") or d.get("path") or "")
        if len(provider) != 1:
            out.append(f)
            continue
        vn_file = provider.pop()
        if not (cuda_libs.nvidia_library(vn_file) and cuda_libs.nvidia_library(os.path.basename(needer))):
            out.append(f)
            continue
        lib = _library_in_trees(trees, needer, vn_file)
        if lib is None or not lib.path:
            out.append(f)
            continue
        try:
            have = {s.name for s in read_symbols(lib.path).symbols if s.defined}
        except Exception:  # noqa: BLE001 - unreadable: reported elsewhere
            out.append(f)
            continue
        better = None
        for cand in env_by_soname.get(vn_file, ()):
            if os.path.realpath(cand) == os.path.realpath(lib.path):
                continue
            try:
                cand_syms = {s.name for s in read_symbols(cand).symbols if s.defined}
            except Exception:  # noqa: BLE001
                continue
            if all(n in cand_syms for n in names):
                better = (cand, cand_syms)
                break
        want = _api_level(names)
        has = _api_level(have)
        npkg = owners.label(needer)
        ppkg = owners.label(lib.path)
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        msg = (f"{needer} ({npkg or 'no package'}) needs {shown} from {vn_file}, but the copy that loads, "
               f"{_as_opened(lib)} ({ppkg or 'outside this environment'}, through {_how(lib)}), "
               + (f"stops at API {has[0]}.{has[1]}" if has else "does not define them")
               + (f" (it needs {want[0]}.{want[1]})" if want else "")
               + ": loading it fails with 'undefined symbol'")
        if better is not None:
            blvl = _api_level(better[1])
            msg += (f"; {better[0]} ({owners.label(better[0]) or 'no package'}) defines them"
                    + (f" (up to {blvl[0]}.{blvl[1]})" if blvl else ""))
        wheels = cuda_libs.wheel_names(vn_file, want[0] if want else None)
        if lib.via == "ld_library_path":
            fix = f"remove {os.path.dirname(lib.found_as or lib.path)} from LD_LIBRARY_PATH"
        elif wheels:
            floor = f">={want[0]}.{want[1]}" if want else ""
            fix = (f"pip install '{wheels[0]}{floor}'"
                   + (f" ({npkg.split(' ')[0]} does not pin the version it needs, so pip kept an older one)"
                      if npkg else ""))
        else:
            fix = f"install a {vn_file} as new as the one {os.path.basename(needer)} was built against"
        out.append(Finding("VERSION_SKEW", Severity.ERROR, msg, fix=fix, details={
            **d, "path": needer, "package": npkg, "library": vn_file, "loads": lib.path, "loads_package": ppkg,
            "via": lib.via, "symbols_needed": names, "needs_api": list(want) if want else None,
            "has_api": list(has) if has else None, "defined_by": better[0] if better else None}))
    return out


def _library_in_trees(trees: Mapping[str, DepTree], needer: str, soname: str) -> Optional[Library]:
    real = os.path.realpath(needer)
    for root, t in trees.items():
        if os.path.realpath(root) != real and not any(
                lib.path and os.path.realpath(lib.path) == real for lib in t.libraries):
            continue
        for lib in t.libraries:
            if lib.soname == soname or soname in lib.requested_as:
                return lib
    return None


# ---------------------------------------------------------------------- the driver

def driver_findings(needers: Mapping[str, Sequence[str]], owners: OwnerIndex) -> List[Finding]:
    """One finding for the driver's libraries that CUDA libraries need or open and that are not found."""
    from mltools.doctor.host import kernel_driver_version

    missing = sorted(needers)
    if not missing:
        return []
    holders = sorted({h for n in missing for h in needers[n]})
    kernel = kernel_driver_version()
    pkgs = sorted({owners.label(h) or "-" for h in holders})
    if kernel is None:
        return [Finding(
            "NO_DRIVER", Severity.INFO,
            f"no NVIDIA driver on this machine: {', '.join(missing)} (the driver's libraries) cannot be found, "
            + (f"so the {len(holders)} CUDA libraries that open them" if len(holders) > 1 else
               "so the CUDA library that opens them")
            + f" ({', '.join(pkgs[:6])}{', ...' if len(pkgs) > 6 else ''}) "
            + ("run" if len(holders) > 1 else "runs")
            + " without a GPU (frameworks fall back to the CPU); nothing to fix for a build or login node",
            fix="on a GPU machine the driver provides them; in a container use the NVIDIA container toolkit "
                "(docker run --gpus all)",
            details={"missing": missing, "holders": holders, "packages": pkgs})]
    return [Finding(
        "DRIVER_LIBRARY_NOT_FOUND", Severity.ERROR,
        f"the NVIDIA kernel driver {kernel} is loaded but its user-space libraries ({', '.join(missing)}) "
        "are not found: every CUDA call fails with 'CUDA driver version is insufficient' or 'no CUDA-capable device'",
        fix="install the driver's user-space libraries of the same version (libnvidia-compute / "
            "nvidia-driver packages), or start the container with the NVIDIA container toolkit",
        details={"missing": missing, "kernel_driver": kernel, "holders": holders})]
