"""``diagnose()``: one run over an interpreter's environment, findings worst first."""
from __future__ import annotations

import os
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from mltools import __version__
from mltools.doctor import host
from mltools.doctor.model import DoctorReport
from mltools.doctor.owners import OwnerIndex
from mltools.elf.files import SITE, walk_elf_candidates
from mltools.errors import InputError
from mltools.findings import FailOn, Finding, Severity
from mltools.python import InterpreterInfo, probe_interpreter, running_interpreter


def _sort_key(f: Finding):
    return (-f.severity.rank, f.code, str(f.details.get("path", "")), f.message)


def environment_pass(interp: InterpreterInfo, environ: Mapping[str, str],
                     cuda_majors: Mapping[int, Sequence[str]], env, *,
                     driver: Optional[str]) -> List[Finding]:
    """The variable traps (mltools.env's), the CPU quota, the CUDA driver, THP and NUMA
    (``env``: this machine's ``collect_env`` report; ``driver``: the NVIDIA driver's version,
    or None)."""
    out = list(env.findings)
    out += host.thread_quota_findings(environ, env.cpu.logical_cpus, env.cpu.cgroup_cpu_limit,
                                      env.cpu.usable_cpus)
    out += host.cuda_driver_findings(driver, cuda_majors)
    out += host.kernel_findings(thp_enabled=env.memory.transparent_hugepages,
                                numa_nodes=len(env.numa_nodes) or 1)
    out += loader_config_findings()
    return out


def loader_config_findings() -> List[Finding]:
    """A stale /etc/ld.so.cache (a library installed without running ldconfig, the
    CUDA toolkit's classic) and a non-empty /etc/ld.so.preload."""
    from mltools.elf import ldcache
    from mltools.errors import MltoolsError

    out: List[Finding] = []
    try:
        out += list(ldcache.ldcache_report().findings)
    except MltoolsError:
        pass
    try:
        with open("/etc/ld.so.preload") as fh:
            preload = [w for line in fh for w in line.split("#", 1)[0].split()]
    except OSError:
        preload = []
    if preload:
        out.append(Finding(
            "LD_SO_PRELOAD", Severity.WARNING,
            f"/etc/ld.so.preload makes every program on this machine load {', '.join(preload)} first",
            fix="empty /etc/ld.so.preload unless every process really needs it",
            details={"items": preload}))
    return out


def diagnose(python: Optional[str] = None, *, imports: Sequence[str] = (), paths: Sequence[str] = (),
             fail_on: Optional[FailOn] = None, environ: Optional[Mapping[str, str]] = None,
             environment_checks: bool = True, scan_sys_path: bool = True,
             env_changes: Optional[Mapping[str, Optional[str]]] = None, gpu_arch: Sequence[str] = (),
             isa: bool = True, cpu: Optional[str] = None, jobs: Optional[int] = None,
             targets: Sequence[str] = (), progress: Optional[Callable[..., None]] = None) -> DoctorReport:
    """Diagnose the native side of a Python environment.

    ``python`` names another interpreter (default: the running one); ``paths``
    adds directories to scan; ``imports`` runs the dynamic pass for those
    modules. ``environ`` is the environment the target would run with;
    ``env_changes`` sets (a value) or unsets (None) variables in it, to see the
    environment as it would be. ``gpu_arch`` (``sm_90``, ``sm_120a``) judges the
    GPU code against those GPUs instead of the ones nvidia-smi finds.
    ``scan_sys_path=False`` scans only ``paths`` (still in that interpreter's
    context); ``environment_checks=False`` leaves out the machine and variables.
    ``isa`` scans the CPU instructions of every file against ``cpu`` (a name
    such as ``haswell`` or ``x86-64-v2``; default this machine's CPU), in
    ``jobs`` worker processes (default: the usable CPUs). ``progress(done,
    total, detail)`` is called while the static pass runs (files and steps)
    and while the instructions are decoded (bytes). ``targets`` (``manylinux_2_28``,
    ``debian-11``, ...) judges every versioned need against another machine's
    glibc, libstdc++ and libgcc_s.
    """
    from mltools.doctor import gpucode, static

    environ = dict(os.environ if environ is None else environ)
    changes = dict(env_changes or {})
    for key, value in changes.items():
        if not key or "=" in key or "\0" in key:
            raise InputError(f"--env/--unset: {key!r} is not a variable name")
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    gpu_targets = gpucode.parse_gpu_arch(",".join(gpu_arch)) if gpu_arch else None
    fail_on = fail_on or FailOn()
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    extra = []
    bad_paths: List[Finding] = []      # one bad --path of several: reported, the rest goes on
    for p in paths:
        problem = ("no such directory" if not os.path.exists(p) else
                   "not a directory" if not os.path.isdir(p) else None)
        if problem is None:
            extra.append(os.path.abspath(p))
        else:
            bad_paths.append(Finding("NO_SUCH_PATH", Severity.ERROR, f"--path {p}: {problem}: not scanned",
                                     fix="give a directory that exists", details={"path": p}))
    if paths and not scan_sys_path and len(bad_paths) == len(paths):
        raise InputError(bad_paths[0].message)
    for mod in imports:
        if not mod or not all(part.isidentifier() for part in mod.split(".")):
            raise InputError(f"--import {mod!r}: not a module name")
    cpu_target = resolve_cpu(cpu) if isa else None
    target_list = resolve_targets(targets)
    interp = probe_interpreter(python) if python else running_interpreter()
    timings["interpreter"] = time.perf_counter() - t0

    t = time.perf_counter()
    walk = walk_elf_candidates((list(interp.sys_path) if scan_sys_path else []) + extra, mode=SITE)
    candidates, walked = walk.candidates, walk.walked
    bad_paths += [Finding("UNREADABLE", Severity.WARNING, f"{e.message}: not scanned",
                          fix="run as a user who may read it (the loader and Python cannot read it either)",
                          details={"path": e.path}) for e in walk.unreadable]
    owners = OwnerIndex(list(interp.site_dirs) + extra, prefixes=[interp.prefix])
    timings["walk"] = time.perf_counter() - t

    env = None
    env_s = 0.0
    if environment_checks:
        # collected before the GPUs: its one nvidia-smi query serves both
        t = time.perf_counter()
        from mltools.env import collect_env
        env = collect_env(environ, with_numpy=False)
        env_s = time.perf_counter() - t

    t = time.perf_counter()
    found_gpus, driver = gpucode.detected_gpus(env.gpus if env is not None else None)
    if driver is None:
        driver = host.kernel_driver_version()
    gpus = gpu_targets if gpu_targets is not None else found_gpus
    timings["gpus"] = time.perf_counter() - t

    t = time.perf_counter()
    result = static.static_pass(interp, candidates, owners, environ, gpus=gpus, driver=driver, progress=progress)
    timings["static"] = time.perf_counter() - t
    timings.update({f"static.{k}": v for k, v in result.timings_s.items()})
    findings = bad_paths + list(result.findings)
    scope = list(result.scope)

    loaded = ()
    if imports:
        t = time.perf_counter()
        from mltools.doctor import dynamic
        dyn = dynamic.dynamic_pass(interp, imports, owners, environ)
        loaded = dyn.loaded
        findings += dyn.findings
        scope += dyn.scope
        timings["dynamic"] = time.perf_counter() - t

    isa_summary = None
    from mltools.elf.isa import decoder_available
    if cpu_target is not None and not decoder_available():
        scope.append("CPU instructions: iced-x86 is not installed (pip install iced-x86)")
    elif cpu_target is not None:
        t = time.perf_counter()
        from mltools._sysfs import usable_cpus
        from mltools.doctor.isa import isa_pass
        isa_summary, isa_findings, isa_scope = isa_pass(
            [c.path for c in candidates], owners.label, cpu_target, environ,
            jobs=jobs or usable_cpus(), progress=progress, unproven_notes=bool(cpu))
        findings += isa_findings
        scope += isa_scope
        timings["isa"] = time.perf_counter() - t
    elif isa:
        scope.append("CPU instructions: this machine is not x86-64 (give --cpu to judge x86-64 files for one)")

    target_checks = ()
    if target_list:
        t = time.perf_counter()
        from mltools.doctor.targets import check_files
        # the packages, not the interpreter's own modules: the target runs its own Python
        tops = tuple(os.path.join(os.path.abspath(d), "") for d in list(interp.site_dirs) + extra)
        target_findings, target_checks = check_files([c.path for c in candidates if c.path.startswith(tops)],
                                                     target_list, owners.label)
        scope.append("--target: the interpreter's own extension modules (lib-dynload) are not judged: the "
                     "target machine runs its own Python")
        findings += target_findings
        timings["targets"] = time.perf_counter() - t

    facts = None
    if env is not None:
        t = time.perf_counter()
        from mltools.doctor.facts import collect_facts
        # the first GPU's driver; without GPUs nvidia-smi gave none, and ``driver`` is the kernel module's
        env_driver = env.gpus[0].driver_version if env.gpus else driver
        findings += environment_pass(interp, environ, result.cuda_majors, env=env, driver=env_driver)
        facts = collect_facts(env, environ, result.libraries, owners, env_driver)
        timings["environment"] = env_s + (time.perf_counter() - t)

    findings.sort(key=_sort_key)
    timings["total"] = time.perf_counter() - t0
    return DoctorReport(
        mltools_version=__version__,
        python=interp,
        scanned_dirs=tuple(walked),
        elf_files=len(candidates),
        extension_modules=sum(1 for c in candidates if c.is_extension),
        distributions=len(owners.distributions),
        runtimes=result.runtimes,
        imported=tuple(imports),
        loaded=tuple(loaded),
        findings=tuple(findings),
        fail_on=str(fail_on),
        failed=fail_on.matches(findings),
        timings_s={k: round(v, 4) for k, v in timings.items()},
        scope=tuple(scope),
        gpus=tuple(gpus),
        gpu_code=result.gpu_code,
        dlopens=result.dlopens,
        environment=changes,
        isa=isa_summary,
        targets=tuple(target_checks),
        facts=facts,
    )


def resolve_targets(names: Sequence[str]):
    from mltools.doctor.targets import target
    from mltools.errors import UsageError

    out = []
    for name in names:
        try:
            out.append(target(name))
        except ValueError as exc:
            raise UsageError(f"--target: {exc}") from None
    return out


def resolve_cpu(name: Optional[str]):
    """The CPU the instruction scan judges against: ``name``, or this machine's (None off x86-64)."""
    from mltools.elf.cpus import cpu_target, this_cpu
    from mltools.errors import UsageError

    if name:
        try:
            return cpu_target(name)
        except ValueError as exc:
            raise UsageError(f"--cpu: {exc}") from None
    return this_cpu()
