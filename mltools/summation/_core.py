"""Sums over numpy arrays: input checks, axes and layouts, ISA choice, diagnostics."""
from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import operator
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Tuple, Union

import numpy as np

from mltools._native import load_extension

METHODS = ("naive", "pairwise", "kahan", "neumaier", "sum2", "exact")
_METHOD_CODE = {name: i for i, name in enumerate(METHODS)}
ISAS = ("sse2", "avx2", "avx512")
ISA_ENV = "MLTOOLS_SUM_ISA"
UNRELIABLE_RELATIVE_BOUND = 1e-3

_forced_isa: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "mltools_summation_isa", default=None)

Axis = Union[None, int, Tuple[int, ...]]


@functools.lru_cache(maxsize=None)
def _kernels():
    return load_extension("summation._kernels")


# ---------------------------------------------------------------- ISA choice

@functools.lru_cache(maxsize=None)
def available_isas() -> Tuple[str, ...]:
    """The kernel builds this CPU can run, slowest first ("sse2" is always there)."""
    k = _kernels()
    return tuple(name for i, name in enumerate(ISAS) if k.isa_available(i))


def active_isa() -> str:
    """The ISA the next sum runs on: ``use_isa``, else $MLTOOLS_SUM_ISA, else the best.

    Every ISA gives the same bits; this only changes the speed.
    """
    name = _forced_isa.get()
    source = "use_isa()"
    if name is None:
        name = os.environ.get(ISA_ENV, "").strip().lower() or None
        source = f"{ISA_ENV}"
    if name is None:
        return available_isas()[-1]
    if name not in ISAS:
        raise ValueError(f"{source}={name!r}: expected one of {', '.join(ISAS)}")
    avail = available_isas()
    if name not in avail:
        raise ValueError(f"{source}={name}: this CPU cannot run it (available: {', '.join(avail)})")
    return name


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[str]:
    """Run the sums in this block (this thread/context) on the named ISA build."""
    if name not in ISAS:
        raise ValueError(f"use_isa({name!r}): expected one of {', '.join(ISAS)}")
    if name not in available_isas():
        raise ValueError(f"use_isa({name!r}): this CPU cannot run it "
                         f"(available: {', '.join(available_isas())})")
    token = _forced_isa.set(name)
    try:
        yield name
    finally:
        _forced_isa.reset(token)


# ------------------------------------------------------------ input checks

def as_float_array(x: Any, func: str) -> np.ndarray:
    """x as a float32/float64 ndarray (no copy for one), else TypeError/ValueError."""
    if isinstance(x, np.ndarray):
        arr = x
    else:
        if isinstance(x, (str, bytes)) or x is None:
            raise TypeError(f"{func}: expected a float32 or float64 array, got {type(x).__name__}")
        try:
            arr = np.asarray(x)
        except ValueError as exc:   # ragged nesting
            raise ValueError(f"{func}: cannot make an array of the input: {exc}") from None
    kind = arr.dtype
    if kind.type not in (np.float32, np.float64):
        hint = ""
        if kind.kind in "iub":
            hint = " (convert integers with .astype(np.float64))"
        elif kind.kind == "c":
            hint = " (sum the real and imaginary parts separately)"
        raise TypeError(f"{func}: expected a float32 or float64 array, got dtype {kind}{hint}")
    if not kind.isnative:
        arr = arr.astype(kind.newbyteorder("="))
    return arr


def _normalize_axes(axis: Axis, ndim: int, func: str) -> Tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in axes:
        try:
            a = operator.index(a)
        except TypeError:
            raise TypeError(f"{func}: axis must be None, an int or a tuple of ints, got {axis!r}") from None
        if not -ndim <= a < ndim:
            raise ValueError(f"{func}: axis {a} is out of bounds for an array of dimension {ndim}")
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"{func}: repeated axis in {axis!r}")
    return tuple(sorted(out))


def _collapse(shape, strides) -> Optional[Tuple[int, int]]:
    """(size, stride) when the dims are one strided sequence in C order, else None."""
    dims = [(n, s) for n, s in zip(shape, strides) if n != 1]
    size = 1
    for n, _ in dims:
        size *= n
    if size == 0 or not dims:
        return size, (dims[-1][1] if dims else 0)
    for (n0, s0), (n1, s1) in zip(dims, dims[1:]):
        if s0 != s1 * n1:
            return None
    return size, dims[-1][1]


@dataclass(frozen=True)
class _Plan:
    arr: np.ndarray            # keeps the memory alive
    out_shape: Tuple[int, ...]
    M: int
    L: int
    so: int
    si: int
    in_f32: bool


def plan(x: np.ndarray, axis: Axis, func: str) -> _Plan:
    """Lay the reduction out as M lanes of L elements with two byte strides.

    Reduced axes move to the end (a view); when the kept or the reduced axes
    cannot be described by one stride each, the view is copied in C order
    (the order of the elements in each lane is the same either way).
    """
    axes = _normalize_axes(axis, x.ndim, func)
    keep = [a for a in range(x.ndim) if a not in axes]
    y = x.transpose(keep + list(axes)) if x.ndim else x
    k = len(keep)
    out_shape = tuple(y.shape[:k])
    outer = _collapse(y.shape[:k], y.strides[:k])
    inner = _collapse(y.shape[k:], y.strides[k:])
    if outer is None or inner is None:
        y = np.ascontiguousarray(y)
        outer = _collapse(y.shape[:k], y.strides[:k])
        inner = _collapse(y.shape[k:], y.strides[k:])
    (M, so), (L, si) = outer, inner
    return _Plan(y, out_shape, M, L, so, si, y.dtype.type is np.float32)


def _acc_f32(arr: np.ndarray, dtype: Any, func: str) -> bool:
    if dtype is None:
        return False
    dt = np.dtype(dtype)
    if dt == np.float64:
        return False
    if dt == np.float32:
        if arr.dtype != np.float32:
            raise ValueError(f"{func}: dtype=float32 accumulation needs float32 input")
        return True
    raise TypeError(f"{func}: dtype must be None, float32 or float64, got {dt}")


def reduce(x: Any, method: str, axis: Axis = None, dtype: Any = None, func: str = "sum"):
    """The sum of x over axis by method: a numpy scalar or array, like numpy.sum."""
    code = _METHOD_CODE.get(method)
    if code is None:
        raise ValueError(f"{func}: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    arr = as_float_array(x, func)
    acc_f32 = _acc_f32(arr, dtype, func)
    out_type = np.float32 if acc_f32 else np.float64
    k = _kernels()
    isa = ISAS.index(active_isa())
    in_f32 = arr.dtype.type is np.float32
    if axis is None and arr.flags.c_contiguous:
        v = k.sum_1(code, isa, in_f32, acc_f32, arr.ctypes.data, arr.size, arr.itemsize)
        return out_type(v)
    p = plan(arr, axis, func)
    out = np.empty(p.M, np.float64)
    if p.M:
        k.sum_2d(code, isa, p.in_f32, acc_f32, p.arr.ctypes.data, p.M, p.L, p.so, p.si, out)
    if not p.out_shape:
        return out_type(out[0])
    return out.astype(out_type, copy=False).reshape(p.out_shape)


# ------------------------------------------------------------- diagnostics

_ACCURACY = {
    "naive": "sequential: error up to (n-1)·u·Σ|x|",
    "pairwise": "pairwise: error up to about log2(n)·u·Σ|x|",
    "kahan": "compensated: error up to (2u + O(n·u²))·Σ|x|",
    "neumaier": "compensated: error up to u·|s| + O((n·u)²)·Σ|x|",
    "sum2": "twice the working precision: error up to u·|s| + O((n·u)²)·Σ|x|",
    "exact": "exact, correctly rounded: error at most half an ulp",
}


@dataclass(frozen=True)
class SumInfo:
    """A sum with its diagnostics (numpy scalars, or arrays for an axis reduction).

    ``condition_number`` is Σ|x|/|Σx| (inf for a zero sum of non-zero terms);
    ``error_bound`` is a proven bound on |computed - exact| for the method;
    ``unreliable`` is True where ``relative_error_bound`` exceeds 1e-3.
    Bounds are NaN where the sum is not finite (an inf or nan in the input,
    or an overflow).
    """
    value: Any
    method: str
    n: int
    abs_sum: Any
    condition_number: Any
    error_bound: Any
    relative_error_bound: Any
    unreliable: Any
    unit_roundoff: float
    accuracy: str
    isa: str


def _gamma(k, u):
    k = np.asarray(k, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = k * u / (1.0 - k * u)
    return np.where(k * u < 1.0, g, np.inf)


def error_bound(method: str, n: int, abs_sum, value, u: float):
    """A bound on |computed - exact| for a sum of n terms with Σ|x| = abs_sum."""
    S = np.asarray(abs_sum, np.float64)
    s = np.abs(np.asarray(value, np.float64))
    if method == "naive":
        return _gamma(max(n - 1, 0), u) * S
    if method == "pairwise":
        # numpy's leaves (15 sequential adds, 3 combining, 7 for the tail),
        # the tree above them and, for strided lanes, the cascade of leaves.
        depth = 2 * math.ceil(math.log2(max(n, 2))) + 26
        return _gamma(depth, u) * S
    if method == "kahan":
        return (2 * u + 4 * n * u * u) * S + u * s
    if method in ("neumaier", "sum2"):
        return u * s + 2 * _gamma(n + MLT_FOLD_TERMS, u) ** 2 * S
    return u * s


MLT_FOLD_TERMS = 64     # the lanes and their compensations folded at the end


def sum_info(x: Any, method: str = "neumaier", axis: Axis = None, dtype: Any = None) -> SumInfo:
    """The sum by ``method`` with its condition number, error bound and reliability."""
    value = reduce(x, method, axis, dtype, func="sum_info")
    arr = as_float_array(x, "sum_info")
    acc_f32 = _acc_f32(arr, dtype, "sum_info")
    u = 2.0 ** -24 if acc_f32 else 2.0 ** -53
    axes = _normalize_axes(axis, arr.ndim, "sum_info")
    n = int(np.prod([arr.shape[a] for a in axes], dtype=np.int64)) if axes else 1
    abs_sum = reduce(np.abs(arr), "neumaier", axis, None, func="sum_info")
    s = np.abs(np.asarray(value, np.float64))
    S = np.asarray(abs_sum, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = np.where(S == 0, 1.0, S / s)
        bound = error_bound(method, n, S, s, u)
        rel = np.where(bound == 0, 0.0, bound / s)
    finite = np.isfinite(np.asarray(value, np.float64)) & np.isfinite(S)
    cond = np.where(finite, cond, np.nan)
    bound = np.where(finite, bound, np.nan)
    rel = np.where(finite, rel, np.nan)
    unreliable = finite & (rel > UNRELIABLE_RELATIVE_BOUND)

    def shape(a, kind=np.float64):
        a = np.asarray(a)
        return kind(a) if a.ndim == 0 else a.astype(kind)

    return SumInfo(value=value, method=method, n=n, abs_sum=shape(S), condition_number=shape(cond),
                   error_bound=shape(bound), relative_error_bound=shape(rel),
                   unreliable=bool(unreliable) if np.ndim(unreliable) == 0 else unreliable,
                   unit_roundoff=u, accuracy=_ACCURACY[method], isa=active_isa())
