"""Which x86 instruction-set extensions a file's code uses, and which of those a CPU check guards.

The code is decoded with iced-x86 (exact CPUID features for every instruction,
AVX-512 FP16/BF16 and AMX included), one function at a time from the
boundaries :mod:`mltools.elf.code` finds, with no Python per instruction
(``Counter(map(code, Decoder(...)))``; the features of a code come from a table
built once). Each function that uses an extension beyond x86-64's baseline is
then put in one of four classes:

``load``
    reached by direct calls and jumps from what the loader or the import runs
    (``DT_INIT``, the init arrays, ``PyInit_*``, a program's entry): it runs
    before any dispatcher could choose. Unguarded, and sure.
``unguarded``
    the file has no CPU check at all (no ``cpuid``, no ifunc, none of the
    dispatchers' symbols, no ISA in the file's own name): nothing in it can
    choose another path, so the first call runs it.
``guarded``
    an ifunc resolver returns it, or its symbol carries a dispatch target's
    name (gcc clones ``f.avx2``, numpy's ``_AVX512_SKX``, OpenBLAS's
    ``_HASWELL``, ATen's ``AVX2::``, MKL's ``_avx512_``, SVML's ``_z0``...).
``unproven``
    the file checks the CPU somewhere, but this function's guard was not
    traced (static helpers of a dispatch target, code reached through
    function-pointer tables): assumed to run only where the CPU has it.

What a static scan cannot know: whether a check really comes before the use
(indirect calls are not followed), code generated at run time (oneDNN, MKL and
fbgemm JIT), variables that force a dispatch target, and libraries opened with
``dlopen`` by another library that chooses by CPU.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter
from typing import ClassVar, Dict, List, Optional, Sequence, Set, Tuple

from mltools.errors import MltoolsError

__all__ = ["IsaUse", "FileIsa", "SCAN_VERSION", "scan_file", "decoder_available", "HOW_ORDER"]

# Bump when a change to the scan changes its results (the cache is keyed on it).
SCAN_VERSION = 1

HOW_ORDER = ("load", "unguarded", "unproven", "guarded")

# Features every x86-64 CPU has, bookkeeping ones, and ones that do not trap where the CPU
# lacks them: endbr64 and the shadow-stack instructions gcc emits are hint NOPs, PREFETCHW
# is a NOP on older Intel parts, LZCNT runs as BSR (a wrong result, no SIGILL).
_BASELINE = frozenset({
    "INTEL8086", "INTEL8086_ONLY", "INTEL186", "INTEL286", "INTEL286_ONLY", "INTEL386", "INTEL386_ONLY",
    "INTEL386_A0_ONLY", "INTEL486", "INTEL486_A_ONLY", "X64", "CPUID", "FPU", "FPU287", "FPU287XL_ONLY",
    "FPU387", "FPU387SL_ONLY", "CMOV", "SSE", "SSE2", "MMX", "TSC", "MULTIBYTENOP", "PAUSE", "CET_IBT",
    "CET_SS", "FXSR", "CX8", "SYSCALL", "CLFSH", "PREFETCHW", "SEP", "MSR", "SMM", "OSS"})
NON_TRAPPING = frozenset({"LZCNT"})

# Symbols of CPU checks (defined or imported): libgcc's __builtin_cpu_supports state, numpy's,
# OpenBLAS's and MKL's dispatchers, cpuinfo (torch), glibc's <sys/platform/x86.h>, Intel's runtime.
_DISPATCH_SYMBOLS = (
    "__cpu_indicator_init", "__cpu_model", "__cpu_features2", "npy_cpu_init", "npy__cpu_init",
    "gotoblas_init", "gotoblas_corename", "mkl_serv_cpu_detect", "mkl_serv_intel_cpu_true",
    "cpuinfo_initialize", "cpuinfo_isa", "__x86_get_cpu_features", "__x86_get_cpuid_feature_leaf",
    "__intel_cpu_feature_indicator", "__intel_cpu_features_init", "__intel_cpu_feature_indicator_x")

_GUARD_NAME = re.compile("|".join((
    r"\.(?:avx\w*|sse\w*|fma\w*|arch_\w+|popcnt|bmi2?|f16c|lzcnt|movbe)(?:\.\w+)*$",   # gcc clones
    r"_(?:X86_V[234]|AVX512_(?:SKX|ICL|SPR|KNL|KNM|CNL|CLX)|AVX512F|AVX512BW|AVX2|FMA3|AVX|SSE4[12]|SSE41"
    r"|SSE42|SSSE3|SSE3|F16C|POPCNT|VSX\d?|NEON)(?:_|$|\.)",                                # numpy
    r"_(?:PRESCOTT|CORE2|PENRYN|DUNNINGTON|NEHALEM|SANDYBRIDGE|HASWELL|SKYLAKEX|COOPERLAKE|SAPPHIRERAPIDS"
    r"|ZEN|BARCELONA|BULLDOZER|PILEDRIVER|STEAMROLLER|EXCAVATOR|ATOM|NANO|OPTERON\w*)(?:\.\w+)*$",  # OpenBLAS
    r"(?:4AVX2|6AVX512|\d+AVX512_\w+?)(?=\d|E|I|S)",                                       # ATen's CPU_CAPABILITY
    r"^mkl_\w*?_(?:avx512(?:_mic)?|avx2|avx|mc3|mc|bdz)_", r"_(?:avx512|avx2|mc3|bdz)$",   # MKL
    r"__svml_\w+_(?:z0|e9|l9|x0|k0|b3|s9|h9)$", r"Sleef_\w*(?:sse4|avx|fma4)",             # SVML, sleef
    r"(?i:avx512|avx2|avx_?vnni|amx_|fma4|_avx\d*_|sse4_?[12])")))                          # generic
_GUARD_FILE = re.compile(r"(?i)[_-](?:avx512\w*|avx2|avx|mc3|mc|sse4_?2|skx|haswell)[._]")


@dataclass(frozen=True)
class IsaUse:
    """The functions of one class that use one feature."""
    feature: str
    how: str                      # load, unguarded, unproven, guarded (see the module doc)
    functions: int
    example: str                  # one of them: its symbol, or its address


@dataclass(frozen=True)
class FileIsa:
    """The instruction-set scan of one file. Content-addressed: the same bytes give the same scan."""
    SCHEMA: ClassVar[str] = "mltools.elf.isa"
    SCHEMA_VERSION: ClassVar[int] = 1

    sha256: str
    code_bytes: int
    instructions: int
    invalid: int                          # bytes that decode to no instruction (data in code)
    features: Dict[str, int]              # extension feature -> instructions using it
    uses: Tuple[IsaUse, ...]
    dispatch: Tuple[str, ...]             # the CPU-check evidence found in the file
    load_entries: int                     # what the loader or the import runs
    load_functions: int                   # functions reached from them
    load_complete: bool                   # False when the walk stopped at its limit
    functions: int                        # decoded ranges (functions and the gaps between them)

    def features_of(self, *hows: str) -> Set[str]:
        return {u.feature for u in self.uses if u.how in hows}


def decoder_available() -> bool:
    try:
        import iced_x86  # noqa: F401 (only whether it imports)
    except ImportError:
        return False
    return True


class _Tables:
    """Per iced code (built once): its extension features, and the branch and LEA codes."""

    def __init__(self) -> None:
        import iced_x86
        from iced_x86 import Code, CpuidFeature, FlowControl, Instruction

        fnames = {getattr(CpuidFeature, k): k for k in dir(CpuidFeature)
                  if not k.startswith("_") and isinstance(getattr(CpuidFeature, k), int)}
        codes = {k: getattr(Code, k) for k in dir(Code) if not k.startswith("_") and isinstance(getattr(Code, k), int)}
        n = max(codes.values()) + 1
        ext: List[Tuple[str, ...]] = [()] * n
        branch = set()
        for name, code in codes.items():
            if code == 0:
                continue
            ins = Instruction.create(code)
            if name.startswith(("TZCNT_", "CPUID", "XGETBV")):
                feats: Tuple[str, ...] = ()          # TZCNT runs as BSF; CPUID/XGETBV are the check itself
            elif name in ("LAHF", "SAHF"):
                feats = ("LAHF_SAHF",)               # iced says 8086; in 64-bit mode it is a CPUID bit
            else:
                feats = tuple(sorted({fnames[f] for f in ins.cpuid_features()} - _BASELINE))
            ext[code] = feats
            if ins.flow_control in (FlowControl.CALL, FlowControl.UNCONDITIONAL_BRANCH,
                                    FlowControl.CONDITIONAL_BRANCH) and "_REL" in name:
                branch.add(code)
        self.ext = ext
        self.ext_codes = frozenset(c for c, f in enumerate(ext) if f)
        self.branch = frozenset(branch)
        self.lea = frozenset(codes[k] for k in codes if k.startswith("LEA_"))
        self.cpuid, self.xgetbv = Code.CPUID, Code.XGETBV
        self.decoder = iced_x86.Decoder


_TABLES: Optional[_Tables] = None


def _tables() -> _Tables:
    global _TABLES
    if _TABLES is None:
        _TABLES = _Tables()
    return _TABLES


@dataclass
class DecodeResult:
    """What a worker returns for a slice of a file's intervals."""
    codes: Counter = field(default_factory=Counter)              # iced code -> instructions
    ext: List[Tuple[int, Tuple[int, ...]]] = field(default_factory=list)   # (interval, extension codes)


def decode_slice(layout, buf, lo: int, hi: int) -> DecodeResult:
    """Decode intervals [lo, hi) of ``layout`` from the mapped file ``buf``."""
    t = _tables()
    decoder, ext_codes = t.decoder, t.ext_codes
    code_of = attrgetter("code")
    out = DecodeResult()
    total = out.codes
    iv = layout.intervals[lo:hi].tolist()
    sec_i = 0
    sections = layout.sections
    for k, (s, e) in enumerate(iv, lo):
        while sec_i < len(sections) and s >= sections[sec_i][0] + sections[sec_i][2]:
            sec_i += 1
        if sec_i >= len(sections) or s < sections[sec_i][0]:
            continue
        va, off, _size = sections[sec_i]
        data = buf[off + s - va:off + e - va]
        c = Counter(map(code_of, decoder(64, data, ip=s)))
        total.update(c)
        if not ext_codes.isdisjoint(c):
            out.ext.append((k, tuple(x for x in c if x in ext_codes)))
    return out


def walk_from(layout, buf, entries: Sequence[int], *, follow_calls: bool = True, limit: int = 200_000,
              collect_lea: bool = False):
    """The intervals reached from ``entries`` by direct calls and jumps (indirect calls
    and calls through the PLT are not followed: a lower bound of what runs). Returns (reached interval indices, complete, LEA targets)."""
    import numpy as np

    t = _tables()
    starts = layout.intervals[:, 0]
    ends = layout.intervals[:, 1]
    branch, lea = t.branch, t.lea
    call_codes = None if follow_calls else _call_codes()
    seen: Set[int] = set()
    targets: Set[int] = set()
    todo = list(entries)
    while todo:
        if len(seen) >= limit:
            return seen, False, targets
        a = todo.pop()
        i = int(np.searchsorted(starts, a, side="right")) - 1
        if i < 0 or a >= int(ends[i]) or i in seen:
            continue
        seen.add(i)
        s, e = int(starts[i]), int(ends[i])
        off = layout.offset(s)
        if off is None:
            continue
        for ins in t.decoder(64, buf[off:off + e - s], ip=s):
            code = ins.code
            if code in branch:
                if call_codes is not None and code in call_codes:
                    continue
                tgt = ins.near_branch_target
                if not s <= tgt < e:
                    todo.append(tgt)
            elif collect_lea and code in lea and ins.is_ip_rel_memory_operand:
                targets.add(ins.ip_rel_memory_address)
    return seen, True, targets


def _call_codes():
    from iced_x86 import Code
    return frozenset(getattr(Code, k) for k in dir(Code) if k.startswith("CALL_REL"))


def dispatch_evidence(layout, path: str, codes: Counter) -> Tuple[str, ...]:
    from mltools.elf.code import has_symbol

    t = _tables()
    out = []
    if codes.get(t.cpuid):
        out.append("cpuid instruction")
    if layout.ifunc_resolvers:
        out.append(f"{len(layout.ifunc_resolvers)} ifunc resolvers")
    out += [name for name in _DISPATCH_SYMBOLS if has_symbol(layout, name)]
    if _GUARD_FILE.search(os.path.basename(path)):
        out.append("an instruction set in the file name (chosen by another library)")
    return tuple(out)


def classify(layout, buf, path: str, sha256: str, decoded: Sequence[DecodeResult],
             reached: Set[int], reach_complete: bool) -> FileIsa:
    """Put each extension-using interval in its class and summarize the file."""
    from mltools.elf.code import interval_names

    t = _tables()
    codes: Counter = Counter()
    ext: List[Tuple[int, Tuple[int, ...]]] = []
    for d in decoded:
        codes.update(d.codes)
        ext += d.ext
    evidence = dispatch_evidence(layout, path, codes)
    file_guarded = bool(_GUARD_FILE.search(os.path.basename(path)))
    ifunc_targets: Set[int] = set()
    if layout.ifunc_resolvers:
        _seen, _ok, ifunc_targets = walk_from(layout, buf, layout.ifunc_resolvers, follow_calls=False,
                                              limit=10_000, collect_lea=True)
    ext.sort()
    starts = [int(layout.intervals[k, 0]) for k, _c in ext]
    names = interval_names(layout, starts)
    tally: Dict[Tuple[str, str], List] = {}
    for (k, ecodes), start, name in zip(ext, starts, names):
        feats = sorted({f for c in ecodes for f in t.ext[c]})
        if k in reached:
            how = "load"
        elif file_guarded or start in ifunc_targets or (name and _GUARD_NAME.search(name)):
            how = "guarded"
        elif evidence:
            how = "unproven"
        else:
            how = "unguarded"
        for f in feats:
            slot = tally.setdefault((f, how), [0, name or f"{start:#x}"])
            slot[0] += 1
    features: Counter = Counter()
    for c, n in codes.items():
        for f in t.ext[c]:
            features[f] += n
    uses = tuple(IsaUse(f, how, n, ex) for (f, how), (n, ex) in
                 sorted(tally.items(), key=lambda kv: (HOW_ORDER.index(kv[0][1]), kv[0][0])))
    return FileIsa(
        sha256=sha256, code_bytes=sum(size for _va, _off, size in layout.sections),
        instructions=sum(codes.values()) - codes.get(0, 0), invalid=codes.get(0, 0),
        features=dict(sorted(features.items())), uses=uses, dispatch=evidence,
        load_entries=len(layout.entries), load_functions=len(reached), load_complete=reach_complete,
        functions=len(layout.intervals))


def scan_file(path: str, sha256: Optional[str] = None) -> FileIsa:
    """Scan one file in this process (the doctor pass splits big files over workers instead)."""
    from mltools._files import sha256_file
    from mltools.elf.code import open_mapped, read_code_layout

    if not decoder_available():
        raise MltoolsError("the instruction scan needs iced-x86 (pip install iced-x86)")
    layout = read_code_layout(path)
    buf = open_mapped(path)
    try:
        decoded = [decode_slice(layout, buf, 0, len(layout.intervals))]
        reached, complete, _t = walk_from(layout, buf, [a for _w, a in layout.entries])
        return classify(layout, buf, path, sha256 or sha256_file(path), decoded, reached, complete)
    finally:
        buf.close()
