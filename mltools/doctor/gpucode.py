"""Is there code for this GPU: the SASS and PTX each file carries, against the GPUs present or named.

The fatbin listing is :mod:`mltools.elf.fatbin`'s (headers only). The GPUs
come from ``nvidia-smi`` (name and compute capability) or from
``--gpu-arch sm_90,sm_120`` for another machine. For each GPU and each file
with GPU code:

- ``NO_KERNEL_IMAGE``: no cubin the GPU runs and no PTX it can compile: the
  kernels of that file fail with "no kernel image is available for execution
  on the device";
- ``PTX_ONLY``: only PTX fits: the driver compiles it at first use (minutes
  for a big library; cached in ``~/.nv/ComputeCache``), and only a driver that
  knows that PTX ISA version can (``PTX_NEWER_THAN_DRIVER`` when the driver
  is known to be older).

Files that keep more GPU code outside ``.nv_fatbin`` and load it themselves
(cuFFT's ``.ldata``, cuBLASLt's and cuDNN's ``.cask_resource``) are listed
but never judged: the headers there are not the runtime's.
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from mltools.doctor.model import GpuTarget, PackageGpuCode
from mltools.doctor.owners import OwnerIndex
from mltools.elf.fatbin import GpuCode, target_key, entry_runs_on, parse_arch
from mltools.errors import UsageError
from mltools.findings import Finding, Severity

__all__ = ["parse_gpu_arch", "detected_gpus", "gpu_code_findings", "package_summaries", "PTX_ISA_DRIVER",
           "ptx_driver_branch"]

# PTX ISA version -> (the CUDA release that introduced it, the first driver branch whose JIT
# accepts it); PTX ISA manual, "PTX Release History". 8.5 came with CUDA 12.5 (r555) and 12.6.
PTX_ISA_DRIVER: Dict[Tuple[int, int], Tuple[str, int]] = {
    (7, 0): ("11.0", 445), (7, 1): ("11.1", 455), (7, 2): ("11.2", 460), (7, 3): ("11.3", 465),
    (7, 4): ("11.4", 470), (7, 5): ("11.5", 495), (7, 6): ("11.6", 510), (7, 7): ("11.7", 515),
    (7, 8): ("11.8", 520), (8, 0): ("12.0", 525), (8, 1): ("12.1", 530), (8, 2): ("12.2", 535),
    (8, 3): ("12.3", 545), (8, 4): ("12.4", 550), (8, 5): ("12.5", 555), (8, 6): ("12.7", 565),
    (8, 7): ("12.8", 570), (8, 8): ("12.9", 575), (9, 0): ("13.0", 580), (9, 1): ("13.1", 590),
    (9, 2): ("13.2", 595), (9, 3): ("13.3", 610),
}


def ptx_driver_branch(isa: Tuple[int, int]) -> Optional[int]:
    """The first driver branch (e.g. 580) whose JIT compiles PTX of this ISA version."""
    hit = PTX_ISA_DRIVER.get(isa)
    if hit is not None:
        return hit[1]
    newer = [v for k, v in PTX_ISA_DRIVER.items() if k > isa]
    return min(v for _, v in newer) if newer else None


def parse_gpu_arch(text: str) -> Tuple[GpuTarget, ...]:
    """``sm_90,sm_120a`` -> GPU targets; a UsageError names a bad element."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            arch, variant = parse_arch(part)
        except ValueError as exc:
            raise UsageError(f"--gpu-arch: {exc}") from None
        out.append(GpuTarget(f"sm_{arch}{variant}", divmod(arch, 10), "--gpu-arch", variant))
    if not out:
        raise UsageError("--gpu-arch: give one or more architectures, e.g. sm_90,sm_120")
    return tuple(out)


def detected_gpus(gpus=None) -> Tuple[Tuple[GpuTarget, ...], Optional[str]]:
    """(the GPUs nvidia-smi lists, the driver version), both empty without a driver. ``gpus``:
    what :func:`mltools.env.report.collect_gpus` already listed (asked here when None)."""
    if gpus is None:
        from mltools.env.report import collect_gpus

        _smi, gpus = collect_gpus()
    out = []
    driver = None
    for g in gpus:
        driver = driver or g.driver_version
        if g.compute_capability:
            major, _, minor = g.compute_capability.partition(".")
            if major.isdigit() and minor.isdigit():
                out.append(GpuTarget(g.name, (int(major), int(minor)), "nvidia-smi"))
    return tuple(out), driver


def _compact(targets: Sequence[str]) -> str:
    if not targets:
        return ""
    if len(targets) <= 3:
        return ", ".join(targets)
    return f"{targets[0]}-{targets[-1]} ({len(targets)} targets)"


def _summary(sass: Sequence[str], ptx: Sequence[str], isa: Optional[str]) -> str:
    parts = []
    if sass:
        parts.append(_compact(sass))
    if ptx:
        parts.append(f"PTX {', '.join(ptx)}" + (f" (ISA {isa})" if isa else ""))
    return " + ".join(parts) if parts else "-"


def package_summaries(codes: Mapping[str, GpuCode], partial: Mapping[str, Sequence[str]],
                      owners: OwnerIndex) -> Tuple[PackageGpuCode, ...]:
    from mltools.elf.fatbin import summarize_targets

    by_pkg: Dict[str, List[str]] = defaultdict(list)
    for path in codes:
        o = owners.owner(path)
        by_pkg[str(o) if o else os.path.dirname(path)].append(path)
    out = []
    for pkg, paths in sorted(by_pkg.items()):
        entries = [e for p in paths for e in codes[p].entries]
        sass, ptx = summarize_targets(entries)
        isas = [e.version for e in entries if e.kind == "ptx"]
        isa = "%d.%d" % max(isas) if isas else None
        out.append(PackageGpuCode(pkg, len(paths), sass, ptx, isa, _summary(sass, ptx, isa),
                                  tuple(sorted(p for p in paths if p in partial))))
    return tuple(out)


def _driver_major(driver: Optional[str]) -> Optional[int]:
    if not driver:
        return None
    head = driver.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def gpu_code_findings(codes: Mapping[str, GpuCode], partial: Mapping[str, Sequence[str]], owners: OwnerIndex,
                      targets: Sequence[GpuTarget], driver: Optional[str]) -> List[Finding]:
    """NO_KERNEL_IMAGE, PTX_ONLY and PTX_NEWER_THAN_DRIVER, one finding per package and GPU."""
    out: List[Finding] = []
    drv = _driver_major(driver)
    for gpu in targets:
        cc = gpu.capability
        label = f"{gpu.name} (compute capability {cc[0]}.{cc[1]})" if gpu.source != "--gpu-arch" else \
            f"{gpu.name} (compute capability {cc[0]}.{cc[1]}, from --gpu-arch)"
        none: Dict[str, List[str]] = defaultdict(list)
        ptx_only: Dict[str, List[Tuple[str, Tuple[int, int]]]] = defaultdict(list)
        for path, code in sorted(codes.items()):
            if path in partial or not code.has_kernels:
                continue                # code it loads itself, or only nvcc's empty cubins
            usable = [e for e in code.entries if e.kernels is not False and entry_runs_on(e, cc)]
            pkg = str(owners.owner(path) or os.path.dirname(path))
            if not usable:
                none[pkg].append(path)
            elif not any(e.kind == "sass" for e in usable):
                ptx_only[pkg].append((path, max(e.version for e in usable)))
        for pkg, paths in sorted(none.items()):
            sass = sorted({t for p in paths for t in codes[p].sass}, key=target_key)
            ptx = sorted({t for p in paths for t in codes[p].ptx}, key=target_key)
            names = ", ".join(os.path.basename(p) for p in paths[:4]) + (f" and {len(paths) - 4} more"
                                                                          if len(paths) > 4 else "")
            out.append(Finding(
                "NO_KERNEL_IMAGE", Severity.ERROR,
                f"{pkg}: {names} carr{'ies' if len(paths) == 1 else 'y'} no GPU code for {label}: "
                f"SASS {', '.join(sass) or 'none'}, PTX {', '.join(ptx) or 'none'}; its kernels fail with "
                "'no kernel image is available for execution on the device'",
                fix=f"install a build of {pkg.split(' ')[0]} compiled for sm_{cc[0]}{cc[1]} (or with PTX for an "
                    "older target), or run on a GPU it was built for",
                details={"path": paths[0], "package": pkg, "paths": paths, "gpu": gpu.name,
                         "capability": f"{cc[0]}.{cc[1]}", "sass": sass, "ptx": ptx}))
        for pkg, items in sorted(ptx_only.items()):
            paths = [p for p, _ in items]
            isa = max(v for _, v in items)
            branch = ptx_driver_branch(isa)
            names = ", ".join(os.path.basename(p) for p in paths[:4]) + (f" and {len(paths) - 4} more"
                                                                          if len(paths) > 4 else "")
            too_old = drv is not None and branch is not None and drv < branch
            need = f"a driver from the r{branch} branch on" if branch else "a driver that knows it"
            if too_old:
                out.append(Finding(
                    "PTX_NEWER_THAN_DRIVER", Severity.ERROR,
                    f"{pkg}: {names} {'has' if len(paths) == 1 else 'have'} only PTX for {label}, of PTX ISA {isa[0]}.{isa[1]}, which needs {need}; "
                    f"the driver is {driver}: the JIT fails with CUDA_ERROR_UNSUPPORTED_PTX_VERSION",
                    fix=f"upgrade the NVIDIA driver to r{branch} or newer, or install a build with SASS for "
                        f"sm_{cc[0]}{cc[1]}",
                    details={"path": paths[0], "package": pkg, "paths": paths, "gpu": gpu.name,
                             "ptx_isa": f"{isa[0]}.{isa[1]}", "driver": driver, "min_driver_branch": branch}))
            else:
                out.append(Finding(
                    "PTX_ONLY", Severity.WARNING,
                    f"{pkg}: {names} {'has' if len(paths) == 1 else 'have'} no SASS for {label}, only PTX (ISA {isa[0]}.{isa[1]}, needs {need}): "
                    "the driver compiles it at first use, which can take minutes for a large library "
                    "(cached in ~/.nv/ComputeCache)",
                    fix="expect a slow first run (set CUDA_CACHE_MAXSIZE large enough to keep the result), or "
                        f"install a build with SASS for sm_{cc[0]}{cc[1]}",
                    details={"path": paths[0], "package": pkg, "paths": paths, "gpu": gpu.name,
                             "ptx_isa": f"{isa[0]}.{isa[1]}", "driver": driver, "min_driver_branch": branch}))
    return out
