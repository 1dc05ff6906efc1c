"""x86-64 CPUs as sets of instruction-set features (iced-x86's CpuidFeature names).

- the psABI micro-architecture levels x86-64, -v2, -v3, -v4;
- named CPUs for ``--cpu haswell`` and the like: each generation's features as
  Intel's and AMD's manuals list them (gcc's ``-march=`` tables agree, except
  that gcc 12 leaves AES out of westmere and haswell, which have it);
- this machine's CPU, from the kernel's ``/proc/cpuinfo`` flags (the kernel
  clears AVX and AVX-512 flags when the OS does not save their state, which is
  what matters for SIGILL).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional

__all__ = ["CpuTarget", "LEVELS", "CPU_NAMES", "cpu_target", "this_cpu", "level_needed", "features_from_flags"]

_V2 = frozenset({"CMPXCHG16B", "LAHF_SAHF", "POPCNT", "SSE3", "SSE4_1", "SSE4_2", "SSSE3"})
_V3 = _V2 | {"AVX", "AVX2", "BMI1", "BMI2", "F16C", "FMA", "LZCNT", "MOVBE", "XSAVE"}
_V4 = _V3 | {"AVX512F", "AVX512BW", "AVX512CD", "AVX512DQ", "AVX512VL"}
LEVELS: Dict[int, FrozenSet[str]] = {1: frozenset(), 2: _V2, 3: frozenset(_V3), 4: frozenset(_V4)}

_NEHALEM = _V2 | {"RDTSCP"}
_WESTMERE = _NEHALEM | {"AES", "PCLMULQDQ"}
_SANDYBRIDGE = _WESTMERE | {"AVX", "XSAVE", "XSAVEOPT"}
_IVYBRIDGE = _SANDYBRIDGE | {"F16C", "FSGSBASE", "RDRAND"}
_HASWELL = _V3 | _IVYBRIDGE
_BROADWELL = _HASWELL | {"ADX", "RDSEED", "PREFETCHW"}
_SKYLAKE = _BROADWELL | {"CLFLUSHOPT", "XSAVEC", "XSAVES"}
_SKYLAKE_AVX512 = _SKYLAKE | _V4 | {"CLWB", "PKU"}
_CASCADELAKE = _SKYLAKE_AVX512 | {"AVX512_VNNI"}
_COOPERLAKE = _CASCADELAKE | {"AVX512_BF16"}
_ICELAKE = _SKYLAKE_AVX512 | {"AVX512_VBMI", "AVX512_IFMA", "AVX512_VNNI", "AVX512_VBMI2", "AVX512_BITALG",
                              "AVX512_VPOPCNTDQ", "GFNI", "VAES", "VPCLMULQDQ", "SHA", "RDPID"}
_SAPPHIRERAPIDS = _ICELAKE | {"AVX512_BF16", "AVX512_FP16", "AMX_TILE", "AMX_INT8", "AMX_BF16", "AVX_VNNI",
                              "SERIALIZE", "TSXLDTRK", "MOVDIRI", "MOVDIR64B", "ENQCMD", "CLDEMOTE",
                              "WAITPKG", "UINTR", "PTWRITE"}
_GRANITERAPIDS = _SAPPHIRERAPIDS | {"AMX_FP16", "PREFETCHITI"}
_ZNVER1 = _V3 | {"AES", "PCLMULQDQ", "ADX", "RDSEED", "SHA", "CLZERO", "SSE4A", "XSAVEC", "XSAVES",
                 "XSAVEOPT", "CLFLUSHOPT", "MONITORX", "PREFETCHW", "FSGSBASE", "RDRAND", "RDTSCP"}
_ZNVER2 = _ZNVER1 | {"CLWB", "RDPID", "WBNOINVD"}
_ZNVER3 = _ZNVER2 | {"VAES", "VPCLMULQDQ", "PKU", "INVPCID"}
_ZNVER4 = _ZNVER3 | _V4 | {"AVX512_IFMA", "AVX512_VBMI", "AVX512_VBMI2", "AVX512_VNNI", "AVX512_BF16",
                           "AVX512_BITALG", "AVX512_VPOPCNTDQ", "GFNI"}

CPU_NAMES: Dict[str, FrozenSet[str]] = {
    "x86-64": LEVELS[1], "x86-64-v1": LEVELS[1], "x86-64-v2": LEVELS[2], "x86-64-v3": LEVELS[3],
    "x86-64-v4": LEVELS[4],
    "nehalem": frozenset(_NEHALEM), "westmere": frozenset(_WESTMERE), "sandybridge": frozenset(_SANDYBRIDGE),
    "ivybridge": frozenset(_IVYBRIDGE), "haswell": frozenset(_HASWELL), "broadwell": frozenset(_BROADWELL),
    "skylake": frozenset(_SKYLAKE), "skylake-avx512": frozenset(_SKYLAKE_AVX512),
    "cascadelake": frozenset(_CASCADELAKE), "cooperlake": frozenset(_COOPERLAKE),
    "icelake-server": frozenset(_ICELAKE), "sapphirerapids": frozenset(_SAPPHIRERAPIDS),
    "emeraldrapids": frozenset(_SAPPHIRERAPIDS), "graniterapids": frozenset(_GRANITERAPIDS),
    "znver1": frozenset(_ZNVER1), "znver2": frozenset(_ZNVER2), "znver3": frozenset(_ZNVER3),
    "znver4": frozenset(_ZNVER4),
}

# /proc/cpuinfo flag -> feature (flags the kernel spells differently, and the ones it has)
_FLAG_FEATURES = {
    "pni": "SSE3", "ssse3": "SSSE3", "sse4_1": "SSE4_1", "sse4_2": "SSE4_2", "cx16": "CMPXCHG16B",
    "lahf_lm": "LAHF_SAHF", "popcnt": "POPCNT", "avx": "AVX", "avx2": "AVX2", "bmi1": "BMI1", "bmi2": "BMI2",
    "f16c": "F16C", "fma": "FMA", "abm": "LZCNT", "movbe": "MOVBE", "xsave": "XSAVE", "xsaveopt": "XSAVEOPT",
    "xsavec": "XSAVEC", "xsaves": "XSAVES", "aes": "AES", "pclmulqdq": "PCLMULQDQ", "rdrand": "RDRAND",
    "rdseed": "RDSEED", "adx": "ADX", "sha_ni": "SHA", "fsgsbase": "FSGSBASE", "clflushopt": "CLFLUSHOPT",
    "clwb": "CLWB", "pku": "PKU", "rdpid": "RDPID", "gfni": "GFNI", "vaes": "VAES", "vpclmulqdq": "VPCLMULQDQ",
    "avx512f": "AVX512F", "avx512bw": "AVX512BW", "avx512cd": "AVX512CD", "avx512dq": "AVX512DQ",
    "avx512vl": "AVX512VL", "avx512ifma": "AVX512_IFMA", "avx512vbmi": "AVX512_VBMI",
    "avx512_vbmi2": "AVX512_VBMI2", "avx512_vnni": "AVX512_VNNI", "avx512_bitalg": "AVX512_BITALG",
    "avx512_vpopcntdq": "AVX512_VPOPCNTDQ", "avx512_bf16": "AVX512_BF16", "avx512_fp16": "AVX512_FP16",
    "avx512_vp2intersect": "AVX512_VP2INTERSECT", "avx512er": "AVX512ER", "avx512pf": "AVX512PF",
    "avx512_4fmaps": "AVX512_4FMAPS", "avx512_4vnniw": "AVX512_4VNNIW", "amx_tile": "AMX_TILE",
    "amx_int8": "AMX_INT8", "amx_bf16": "AMX_BF16", "amx_fp16": "AMX_FP16", "amx_complex": "AMX_COMPLEX",
    "avx_vnni": "AVX_VNNI", "avx_ifma": "AVX_IFMA", "avx_vnni_int8": "AVX_VNNI_INT8",
    "avx_ne_convert": "AVX_NE_CONVERT", "avx_vnni_int16": "AVX_VNNI_INT16", "sse4a": "SSE4A", "fma4": "FMA4",
    "xop": "XOP", "tbm": "TBM", "clzero": "CLZERO", "mwaitx": "MONITORX", "3dnowprefetch": "PREFETCHW",
    "rdtscp": "RDTSCP", "serialize": "SERIALIZE", "tsxldtrk": "TSXLDTRK", "movdiri": "MOVDIRI",
    "movdir64b": "MOVDIR64B", "enqcmd": "ENQCMD", "cldemote": "CLDEMOTE", "waitpkg": "WAITPKG",
    "wbnoinvd": "WBNOINVD", "invpcid": "INVPCID", "rtm": "RTM", "hle": "HLE", "sha512": "SHA512",
    "sm3": "SM3", "sm4": "SM4", "cmpccxadd": "CMPCCXADD", "prefetchiti": "PREFETCHITI", "3dnow": "D3NOW",
    "3dnowext": "D3NOWEXT", "ptwrite": "PTWRITE", "uintr": "UINTR", "monitor": "MONITOR",
}


@dataclass(frozen=True)
class CpuTarget:
    """The CPU the scan's findings are about."""
    name: str                       # "this machine (AMD EPYC 9R14)", "haswell", "x86-64-v2"
    features: FrozenSet[str]
    level: int                      # the x86-64 level it reaches (1..4)
    known: FrozenSet[str]           # features whose presence is known (the rest: not judged)

    def lacks(self, features) -> FrozenSet[str]:
        return frozenset(f for f in features if f in self.known and f not in self.features)


_ALL_KNOWN = frozenset(_FLAG_FEATURES.values()) | _V4


def _level_of(features: FrozenSet[str]) -> int:
    level = 1
    for lv in (2, 3, 4):
        if LEVELS[lv] <= features:
            level = lv
    return level


def level_needed(features) -> int:
    """The lowest x86-64 level that has every level feature in ``features`` (others ignored)."""
    for lv in (1, 2, 3, 4):
        if not (set(features) & _V4) - LEVELS[lv]:
            return lv
    return 4


def cpu_target(name: str) -> CpuTarget:
    """A named CPU (``haswell``, ``x86-64-v2``, ...); ValueError for an unknown name."""
    key = name.strip().lower()
    if key not in CPU_NAMES:
        raise ValueError(f"unknown CPU {name!r}: use one of {', '.join(sorted(CPU_NAMES))}, or leave --cpu "
                         "out for this machine")
    feats = frozenset(CPU_NAMES[key])
    return CpuTarget(key, feats, _level_of(feats), _ALL_KNOWN)


def features_from_flags(flags) -> FrozenSet[str]:
    return frozenset(_FLAG_FEATURES[f] for f in flags if f in _FLAG_FEATURES)


def this_cpu(cpuinfo_text: Optional[str] = None) -> Optional[CpuTarget]:
    """This machine's CPU from /proc/cpuinfo; None when it is not x86-64 or has no flags."""
    import platform

    from mltools._sysfs import cpuinfo_fields, first_cpuinfo_block

    if cpuinfo_text is None:
        if platform.machine() not in ("x86_64", "AMD64"):
            return None
        fields = first_cpuinfo_block()
    else:
        fields = cpuinfo_fields(cpuinfo_text)
    flags = fields.get("flags", "").split()
    if not flags:
        return None
    feats = features_from_flags(flags)
    model = " ".join(fields.get("model name", "").split())
    return CpuTarget(f"this machine ({model})" if model else "this machine", feats, _level_of(feats), _ALL_KNOWN)
