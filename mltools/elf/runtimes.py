"""Runtime families: libraries of which a process should hold only one copy.

Classification is by name (SONAME, else file name) after removing the hash
that auditwheel and delocate add to grafted copies (``libgomp-a34b3233.so.1``
is a GNU OpenMP). A library whose name says nothing can still be recognised by
the symbols it exports (an OpenMP runtime renamed to ``libfoo.so`` still
exports ``__kmpc_fork_call`` or ``GOMP_parallel``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

# auditwheel: libname-<8 hex>[-<8 hex>].so[.N...]; delocate/older: libname-<hex>.so
_GRAFT_HASH = re.compile(r"-[0-9a-f]{8}(?:-[0-9a-f]{8})?(?=\.so)")


@dataclass(frozen=True)
class RuntimeKind:
    family: str                 # openmp, blas, libstdc++, cuda-runtime, cudnn, nccl, cublas
    implementation: str         # gnu, intel, llvm, openblas, mkl, blis, reference, flexiblas, ...
    major: Optional[str]        # the SONAME major where it matters (CUDA libraries)


def strip_graft_hash(name: str) -> str:
    """``libgomp-a34b3233.so.1`` -> ``libgomp.so.1``."""
    return _GRAFT_HASH.sub("", name)


_NAME_RULES = (
    # (regex on the de-hashed name, family, implementation, capture major?)
    (r"^libgomp\.so", "openmp", "gnu", False),
    (r"^libiomp5(md)?\.so", "openmp", "intel", False),
    (r"^libomp5?\.so", "openmp", "llvm", False),
    (r"^lib(scipy_)?openblas[\w.-]*?\.so", "blas", "openblas", False),
    (r"^libmkl_(rt|core)\.so", "blas", "mkl", False),
    (r"^libblis(-mt)?\.so", "blas", "blis", False),
    (r"^libflexiblas\.so", "blas", "flexiblas", False),
    (r"^libblas\.so", "blas", "reference", False),
    (r"^libstdc\+\+\.so", "libstdc++", "gnu", False),
    (r"^libc\+\+\.so", "libc++", "llvm", False),
    (r"^libcudart\.so\.(\d+)", "cuda-runtime", "nvidia", True),
    (r"^libcudnn\.so\.(\d+)", "cudnn", "nvidia", True),
    (r"^libnccl\.so\.(\d+)", "nccl", "nvidia", True),
    (r"^libcublas\.so\.(\d+)", "cublas", "nvidia", True),
)
_COMPILED = tuple((re.compile(rx), fam, impl, major) for rx, fam, impl, major in _NAME_RULES)


def classify_name(name: str) -> Optional[RuntimeKind]:
    """The runtime family of a library from its SONAME or file name, or None."""
    base = strip_graft_hash(name.rsplit("/", 1)[-1])
    for rx, fam, impl, want_major in _COMPILED:
        m = rx.search(base)
        if m:
            return RuntimeKind(fam, impl, m.group(1) if want_major else None)
    return None


# Exported symbols that only an OpenMP runtime defines. Intel's and LLVM's
# runtimes share one code base (the kmp "__kmpc_" entry points, and both also
# export GOMP_ for GCC-compiled code); GNU's exports GOMP_ only.
_KMP_MARKERS = ("__kmpc_fork_call", "__kmpc_global_thread_num")
_GOMP_MARKERS = ("GOMP_parallel", "GOMP_parallel_start")
_OPENBLAS_MARKERS = ("openblas_get_config", "openblas_get_config64_")
_MKL_MARKERS = ("mkl_get_version", "MKL_Get_Version")
_BLIS_MARKERS = ("bli_info_get_version_str",)


def classify_symbols(defined: Iterable[str]) -> Optional[RuntimeKind]:
    """The runtime family a library belongs to, judged by the symbols it defines."""
    names = set(defined)
    if any(s in names for s in _KMP_MARKERS):
        return RuntimeKind("openmp", "intel-or-llvm", None)
    if any(s in names for s in _GOMP_MARKERS):
        return RuntimeKind("openmp", "gnu", None)
    if any(s in names for s in _OPENBLAS_MARKERS):
        return RuntimeKind("blas", "openblas", None)
    if any(s in names for s in _MKL_MARKERS):
        return RuntimeKind("blas", "mkl", None)
    if any(s in names for s in _BLIS_MARKERS):
        return RuntimeKind("blas", "blis", None)
    return None


def is_kmp_family(kind: RuntimeKind) -> bool:
    """Intel and LLVM OpenMP: two copies in one process abort with OMP Error #15."""
    return kind.family == "openmp" and kind.implementation in ("intel", "llvm", "intel-or-llvm")


# Symbol-based recognition reads the dynamic symbol table: keep it to
# libraries of runtime size (OpenMP runtimes are 1-3 MB).
SYMBOL_CLASSIFY_MAX_BYTES = 8 << 20


def classify_file(path: Optional[str], soname: Optional[str] = None, *, by_symbols: bool = True) -> Optional[RuntimeKind]:
    """By SONAME, then file name, then (for a small enough file) the symbols it exports."""
    import os

    kind = (classify_name(soname) if soname else None) or (classify_name(os.path.basename(path)) if path else None)
    if kind is not None or not path or not by_symbols:
        return kind
    try:
        if os.path.getsize(path) > SYMBOL_CLASSIFY_MAX_BYTES:
            return None
        from mltools.elf.reader import read_symbols
        syms = read_symbols(path)
    except Exception:   # not readable as ELF: the static pass reports the file itself
        return None
    return classify_symbols(s.name for s in syms.symbols if s.defined)


# Builds made to coexist: every exported symbol carries a prefix (numpy's and
# scipy's ``libscipy_openblas``), so two copies in one process do not clash.
_COEXISTING = re.compile(r"^libscipy_openblas")


def duplicate_family(name: str) -> Optional[str]:
    """The family under which two copies in one process are a problem, or None
    (not a runtime, or a symbol-prefixed build made to coexist)."""
    base = strip_graft_hash(name.rsplit("/", 1)[-1])
    if _COEXISTING.search(base):
        return None
    kind = classify_name(base)
    return kind.family if kind else None


def duplicate_copies(paths: Iterable[str]) -> List[Tuple[str, Tuple[str, ...]]]:
    """(family, paths) for each runtime family that two or more distinct files
    (by realpath) among ``paths`` belong to, in first-seen order of the paths.

    libgomp and libiomp5 are one family (openmp): two OpenMP runtimes in one
    process are the problem, whichever they are.
    """
    import os

    families: Dict[str, List[str]] = {}
    seen = set()
    for path in paths:
        fam = duplicate_family(path)
        real = os.path.realpath(path)
        if fam and real not in seen:
            seen.add(real)
            families.setdefault(fam, []).append(path)
    return [(fam, tuple(ps)) for fam, ps in sorted(families.items()) if len(ps) > 1]
