"""The instruction-set pass of ``doctor``: will this environment's code run on that CPU?

Every x86-64 ELF file of the environment is scanned by :mod:`mltools.elf.isa`
(once per file content: results are cached by sha256 under the user's cache
dir), big files split over worker processes, and the uses are compared with
the target CPU (this machine's, or ``--cpu``):

- ``ILLEGAL_INSTRUCTION_RISK`` (error): code that runs at load, or code in a
  file with no CPU check at all, needs a feature the CPU lacks;
- ``ISA_GUARD_UNPROVEN`` (note, one per package, for ``--cpu``): such code in
  files that do check the CPU, where the guard of those functions was not traced;
- ``CPU_DISPATCH_OVERRIDE``: a variable that forces a library's dispatch
  (``ATEN_CPU_CAPABILITY``, ``OPENBLAS_CORETYPE``, ...), which no scan can see
  through.
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from mltools.elf.cpus import CpuTarget, level_needed
from mltools.elf.isa import FileIsa, IsaUse
from mltools.findings import Finding, Severity

__all__ = ["IsaFile", "IsaSummary", "isa_pass", "file_isa_from_json"]

# Code per worker task: big files (libtorch_cpu has 280 MB of code) are cut in slices
# so two workers share them.
_SLICE_BYTES = 8 << 20
# Below this much code to decode, one process is faster than starting workers.
_POOL_MIN_BYTES = 24 << 20

DISPATCH_VARIABLES = ("ATEN_CPU_CAPABILITY", "OPENBLAS_CORETYPE", "NPY_ENABLE_CPU_FEATURES",
                      "NPY_DISABLE_CPU_FEATURES", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "DNNL_MAX_CPU_ISA",
                      "ONEDNN_MAX_CPU_ISA", "MKL_DEBUG_CPU_TYPE")


@dataclass(frozen=True)
class IsaFile:
    """One scanned file of the environment, as the report keeps it."""
    path: str
    package: Optional[str]
    sha256: str
    needs_level: int                     # x86-64 level of the code that runs unguarded (load + no check)
    uses_level: int                      # x86-64 level of all its code, dispatched included
    unguarded: Tuple[str, ...]           # features used at load or with no CPU check
    dispatched: Tuple[str, ...]          # features used only behind a check (traced or not)
    dispatch: Tuple[str, ...]            # the CPU-check evidence
    instructions: int
    cached: bool


@dataclass(frozen=True)
class IsaSummary:
    cpu: str
    cpu_level: int
    cpu_features: Tuple[str, ...]
    files: Tuple[IsaFile, ...]           # the files that use any extension beyond x86-64 v1
    scanned: int
    from_cache: int
    code_bytes: int                      # decoded in this run (not from the cache)
    cache_dir: Optional[str]


def file_isa_from_json(d: Mapping) -> FileIsa:
    d = dict(d)
    d["uses"] = tuple(IsaUse(**u) for u in d.get("uses", ()))
    d["dispatch"] = tuple(d.get("dispatch", ()))
    return FileIsa(**{k: v for k, v in d.items() if k in FileIsa.__dataclass_fields__})


def _file_to_json(r: FileIsa) -> dict:
    from mltools._jsonio import to_jsonable
    return to_jsonable(r)


# --- the work, in this process or in forked workers ------------------------------------------

_WORK: Dict[int, Tuple[str, object]] = {}        # index -> (path, CodeLayout), set before the fork


def _task_cost(task, layouts) -> int:
    kind, idx, lo, hi = task
    iv = layouts[idx][1].intervals
    if kind == "walk":       # a walk decodes instruction by instruction: weigh it like a slice
        return _SLICE_BYTES
    return int((iv[lo:hi, 1] - iv[lo:hi, 0]).sum())


def _forked(tasks, jobs: int, layouts):
    """Run ``tasks`` in ``jobs`` forked workers, yielding (task, result) as each finishes.

    The tasks are split up front (longest first, each to the least loaded worker) and
    every worker streams its results through its own pipe: no queue or lock is shared,
    so a worker ended by a signal can never leave the parent waiting on one."""
    import contextlib
    import pickle
    import selectors
    import struct

    from mltools._lifecycle import owned_process, worker_signals

    parts: List[list] = [[] for _ in range(jobs)]
    loads = [0] * jobs
    for task in sorted(tasks, key=lambda t: -_task_cost(t, layouts)):
        i = loads.index(min(loads))
        parts[i].append(task)
        loads[i] += _task_cost(task, layouts)
    with contextlib.ExitStack() as owned:
        sel = selectors.DefaultSelector()
        pids = []
        for part in parts:
            if not part:
                continue
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:                                   # the worker
                os.close(r)
                worker_signals()                                  # the parent ends the workers
                code = 0
                try:
                    with os.fdopen(w, "wb") as out:
                        for task in part:
                            data = pickle.dumps(_run_task(task), protocol=pickle.HIGHEST_PROTOCOL)
                            out.write(struct.pack("<Q", len(data)) + data)
                            out.flush()
                except BaseException:       # noqa: BLE001 - reported by the parent as a missing result
                    code = 1
                os._exit(code)
            os.close(w)
            owned.enter_context(owned_process(pid, own_group=False))
            pids.append(pid)
            sel.register(os.fdopen(r, "rb"), selectors.EVENT_READ)
        pending = {key.fileobj: b"" for key in sel.get_map().values()}
        while pending:
            for key, _ev in sel.select():
                fh = key.fileobj
                chunk = os.read(fh.fileno(), 1 << 20)
                if not chunk:
                    sel.unregister(fh)
                    fh.close()
                    pending.pop(fh)
                    continue
                buf = pending[fh] + chunk
                while len(buf) >= 8:
                    n = struct.unpack_from("<Q", buf)[0]
                    if len(buf) < 8 + n:
                        break
                    yield pickle.loads(buf[8:8 + n])
                    buf = buf[8 + n:]
                pending[fh] = buf
        for pid in pids:
            _pid, status = os.waitpid(pid, 0)
            if status != 0:
                from mltools.errors import MltoolsError
                raise MltoolsError(f"a CPU-instruction scan worker failed (wait status {status})")


def _run_task(task):
    from mltools.elf.code import open_mapped
    from mltools.elf.isa import decode_slice, walk_from

    kind, idx, lo, hi = task
    path, layout = _WORK[idx]
    buf = open_mapped(path)
    try:
        if kind == "decode":
            return task, decode_slice(layout, buf, lo, hi)
        reached, complete, _ = walk_from(layout, buf, [a for _w, a in layout.entries])
        return task, (reached, complete)
    finally:
        buf.close()


def _tasks(layouts: Dict[int, Tuple[str, object]]) -> List[Tuple[str, int, int, int]]:
    tasks = []
    for idx, (_path, layout) in layouts.items():
        iv = layout.intervals
        if layout.entries:
            tasks.append(("walk", idx, 0, 0))
        lo, acc = 0, 0
        sizes = (iv[:, 1] - iv[:, 0]).tolist()
        for k, n in enumerate(sizes):
            acc += n
            if acc >= _SLICE_BYTES:
                tasks.append(("decode", idx, lo, k + 1))
                lo, acc = k + 1, 0
        if lo < len(sizes):
            tasks.append(("decode", idx, lo, len(sizes)))
    # the walks first (the longest single tasks), then the slices of the biggest files
    code = {idx: sum(s for _v, _o, s in layout.sections) for idx, (_p, layout) in layouts.items()}
    tasks.sort(key=lambda t: (t[0] != "walk", -code[t[1]]))
    return tasks


def _scan_many(layouts: Dict[int, Tuple[str, object]], jobs: int,
               progress: Optional[Callable]) -> Dict[int, Tuple[list, Tuple[set, bool]]]:
    tasks = _tasks(layouts)
    total = sum(sum(s for _v, _o, s in lay.sections) for _p, lay in layouts.values())
    results: Dict[int, list] = defaultdict(list)
    walks: Dict[int, Tuple[set, bool]] = {}
    done_bytes = 0
    _WORK.clear()
    _WORK.update(layouts)

    def take(task, value):
        nonlocal done_bytes
        kind, idx, lo, hi = task
        if kind == "walk":
            walks[idx] = value
            return
        results[idx].append(value)
        iv = layouts[idx][1].intervals
        done_bytes += int((iv[lo:hi, 1] - iv[lo:hi, 0]).sum())
        if progress:
            progress(done_bytes, total)

    try:
        if jobs <= 1 or total < _POOL_MIN_BYTES:
            for task in tasks:
                take(*_run_task(task))
        else:
            for task, value in _forked(tasks, jobs, layouts):
                take(task, value)
    finally:
        _WORK.clear()
    return {idx: (results.get(idx, []), walks.get(idx, (set(), True))) for idx in layouts}


def scan_files(paths: Sequence[str], *, jobs: int = 1, progress: Optional[Callable] = None,
               use_cache: bool = True) -> Tuple[Dict[str, Tuple[FileIsa, bool]], List[Tuple[str, str]], dict]:
    """Scan ``paths`` (x86-64 ELF files). Returns ({path: (scan, from_cache)}, [(path, error)], stats)."""
    from mltools._cache import ContentCache
    from mltools._files import sha256_file
    from mltools.elf.code import open_mapped, read_code_layout
    from mltools.elf.isa import SCAN_VERSION, classify
    from mltools.errors import MltoolsError

    cache = ContentCache("isa", SCAN_VERSION) if use_cache else None
    out: Dict[str, Tuple[FileIsa, bool]] = {}
    errors: List[Tuple[str, str]] = []
    by_sha: Dict[str, List[str]] = defaultdict(list)
    for p in paths:
        try:
            sha = cache.digest(p) if cache else sha256_file(p)
        except OSError as exc:
            errors.append((p, exc.strerror or str(exc)))
            continue
        by_sha[sha].append(p)
    todo: Dict[int, Tuple[str, object]] = {}
    shas: Dict[int, str] = {}
    for sha, group in by_sha.items():
        hit = cache.get(sha) if cache else None
        if hit is not None:
            try:
                r = file_isa_from_json(hit)
            except (TypeError, ValueError):
                r = None
            if r is not None:
                for p in group:
                    out[p] = (r, True)
                continue
        try:
            layout = read_code_layout(group[0])
        except MltoolsError as exc:
            errors.append((group[0], exc.message))
            continue
        shas[len(todo)] = sha
        todo[len(todo)] = (group[0], layout)
    code_bytes = sum(sum(s for _v, _o, s in lay.sections) for _p, lay in todo.values())
    scanned = _scan_many(todo, jobs, progress) if todo else {}
    for idx, (decoded, (reached, complete)) in scanned.items():
        path, layout = todo[idx]
        buf = open_mapped(path)
        try:
            r = classify(layout, buf, path, shas[idx], decoded, reached, complete)
        finally:
            buf.close()
        if cache:
            cache.put(shas[idx], _file_to_json(r))
        for p in by_sha[shas[idx]]:
            out[p] = (r, False)
    stats = {"code_bytes": code_bytes, "cache_dir": cache.dir if cache else None}
    return out, errors, stats


def _is_x86_64_elf(path: str) -> bool:
    from mltools._files import read_head

    head = read_head(path, 20)
    return len(head) == 20 and head[:4] == b"\x7fELF" and head[4] == 2 and head[5] == 1 and head[18:20] == b"\x3e\x00"


# --- the findings -------------------------------------------------------------------------------

def _levels(r: FileIsa) -> Tuple[int, int]:
    unguarded = r.features_of("load", "unguarded") - {"LZCNT"}
    return level_needed(unguarded), level_needed(set(r.features) - {"LZCNT"})


def _risk_finding(path: str, package: Optional[str], r: FileIsa, cpu: CpuTarget) -> Optional[Finding]:
    from mltools.elf.isa import NON_TRAPPING

    parts, missing_all, examples = [], set(), {}
    for how in ("load", "unguarded"):
        uses = [u for u in r.uses if u.how == how and u.feature not in NON_TRAPPING
                and u.feature in cpu.lacks([u.feature])]
        if not uses:
            continue
        feats = sorted({u.feature for u in uses})
        missing_all.update(feats)
        n = max(u.functions for u in uses)
        ex = max(uses, key=lambda u: u.functions).example
        examples[how] = {"features": feats, "functions": n, "example": ex}
        if how == "load":
            parts.append(f"runs {', '.join(feats)} at load (in {ex}), before any CPU check could choose: "
                         "loading it dies with SIGILL")
        else:
            parts.append(f"uses {', '.join(feats)} in {n} function{'s' if n != 1 else ''} (e.g. {ex}) and "
                         "nothing in the file checks the CPU: the first call dies with SIGILL")
    if not parts:
        return None
    owner = package or "its package"
    return Finding(
        "ILLEGAL_INSTRUCTION_RISK", Severity.ERROR,
        f"{path} {'; it also '.join(parts)} on {cpu.name}, which lacks {', '.join(sorted(missing_all))} "
        f"('Illegal instruction'); the scan follows direct calls only",
        fix=f"install a build of {owner} that supports {cpu.name} (x86-64-v{cpu.level}), or build it from source "
            f"for that CPU, or run on a CPU with {', '.join(sorted(missing_all))}",
        details={"path": path, "package": package, "cpu": cpu.name, "missing": sorted(missing_all),
                 "uses": examples})


def _unproven_findings(rows: Sequence[Tuple[str, Optional[str], FileIsa]], cpu: CpuTarget) -> List[Finding]:
    by_pkg: Dict[str, dict] = {}
    for path, package, r in rows:
        lack = {u.feature for u in r.uses if u.how == "unproven"} - {"LZCNT"}
        lack = set(cpu.lacks(lack))
        if not lack:
            continue
        slot = by_pkg.setdefault(package or os.path.dirname(path), {"features": set(), "files": [], "functions": 0})
        slot["features"] |= lack
        slot["files"].append(path)
        slot["functions"] += max(u.functions for u in r.uses if u.how == "unproven" and u.feature in lack)
    out = []
    for pkg, s in sorted(by_pkg.items()):
        feats = sorted(s["features"])
        out.append(Finding(
            "ISA_GUARD_UNPROVEN", Severity.INFO,
            f"{pkg}: {s['functions']} functions in {len(s['files'])} file{'s' if len(s['files']) != 1 else ''} use "
            f"{', '.join(feats)}, which {cpu.name} lacks; the files check the CPU, but these functions' guard was "
            "not traced (static helpers, function-pointer tables): assumed to run only where the CPU has them",
            fix="nothing, unless a variable forces a dispatch target (CPU_DISPATCH_OVERRIDE) or the library "
                "crashes with 'Illegal instruction' there",
            details={"package": pkg, "cpu": cpu.name, "features": feats, "files": s["files"],
                     "path": s["files"][0]}))
    return out


_ATEN_LEVELS = {"default": set(), "avx2": {"AVX2", "FMA"}, "avx512": {"AVX512F", "AVX512BW", "AVX512DQ", "AVX512VL"},
                "avx512_vnni": {"AVX512_VNNI"}, "avx512_bf16": {"AVX512_BF16"}, "amx": {"AMX_TILE"}}
_OPENBLAS_CORES = {"haswell": {"AVX2"}, "zen": {"AVX2"}, "skylakex": {"AVX512F"}, "cooperlake": {"AVX512_BF16"},
                   "sapphirerapids": {"AMX_TILE", "AVX512_FP16"}, "sandybridge": {"AVX"}}


def dispatch_override_findings(environ: Mapping[str, str], cpu: CpuTarget) -> List[Finding]:
    out = []
    for var in DISPATCH_VARIABLES:
        value = environ.get(var)
        if not value:
            continue
        needs = set()
        if var == "ATEN_CPU_CAPABILITY":
            needs = _ATEN_LEVELS.get(value.lower(), set())
        elif var == "OPENBLAS_CORETYPE":
            needs = _OPENBLAS_CORES.get(value.lower(), set())
        lack = sorted(cpu.lacks(needs))
        if lack:
            out.append(Finding(
                "CPU_DISPATCH_OVERRIDE", Severity.WARNING,
                f"{var}={value} forces code that needs {', '.join(lack)}, which {cpu.name} lacks: it dies with "
                "'Illegal instruction' there",
                fix=f"unset {var} (the library then picks from the CPU)", details={"variable": var, "value": value}))
        else:
            out.append(Finding(
                "CPU_DISPATCH_OVERRIDE", Severity.INFO,
                f"{var}={value} overrides a library's CPU dispatch; the instruction scan cannot see what it selects",
                fix=f"unset {var} unless it is meant", details={"variable": var, "value": value}))
    return out


def isa_pass(paths: Sequence[str], owner_of: Callable[[str], Optional[str]], cpu: CpuTarget,
             environ: Mapping[str, str], *, jobs: int = 1, progress: Optional[Callable] = None,
             use_cache: bool = True, unproven_notes: bool = True) -> Tuple[IsaSummary, List[Finding], List[str]]:
    """Scan ``paths`` and judge them against ``cpu``: (summary, findings, scope lines).
    ``unproven_notes`` adds ISA_GUARD_UNPROVEN (asked for another CPU; for this machine the
    untraced guards are taken on trust, or every healthy run would carry notes)."""
    x86 = [p for p in paths if _is_x86_64_elf(p)]
    scans, errors, stats = scan_files(x86, jobs=jobs, progress=progress, use_cache=use_cache)
    findings: List[Finding] = []
    rows = []
    files = []
    for path in sorted(scans):
        r, cached = scans[path]
        pkg = owner_of(path)
        rows.append((path, pkg, r))
        f = _risk_finding(path, pkg, r, cpu)
        if f:
            findings.append(f)
        if r.features:
            need, use = _levels(r)
            unguarded = sorted(r.features_of("load", "unguarded"))
            files.append(IsaFile(path, pkg, r.sha256, need, use, tuple(unguarded),
                                 tuple(sorted(set(r.features) - set(unguarded))), r.dispatch, r.instructions, cached))
    if unproven_notes:
        findings += _unproven_findings(rows, cpu)
    findings += dispatch_override_findings(environ, cpu)
    findings += [Finding("INTERNAL_ERROR" if "internal" in msg else "UNSCANNED", Severity.WARNING,
                         f"{path}: not scanned for CPU instructions: {msg}", fix="check the file with mltools elf inspect",
                         details={"path": path}) for path, msg in errors]
    scope = []
    if len(x86) < len(paths):
        scope.append(f"CPU instructions of the {len(paths) - len(x86)} ELF files that are not x86-64 code")
    scope += ["CPU instructions: code generated at run time (oneDNN, MKL and fbgemm JIT) is not seen, and guards "
             "are traced through direct calls only"]
    summary = IsaSummary(cpu.name, cpu.level, tuple(sorted(cpu.features)), tuple(files), len(scans),
                         sum(1 for _r, c in scans.values() if c), stats["code_bytes"], stats["cache_dir"])
    return summary, findings, scope
