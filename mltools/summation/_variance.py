"""Variance: corrected two-pass (default), two-pass, Welford, textbook; Chan's merge."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mltools.summation._core import Axis, _kernels, _METHOD_CODE, ISAS, active_isa, as_float_array, plan

VARIANCE_METHODS = ("corrected_two_pass", "two_pass", "welford", "textbook")


def _lane_sums(p, method: str) -> np.ndarray:
    out = np.empty(p.M, np.float64)
    if p.M:
        _kernels().sum_2d(_METHOD_CODE[method], ISAS.index(active_isa()), p.in_f32, False,
                          p.arr.ctypes.data, p.M, p.L, p.so, p.si, out)
    return out


def _m2(p, method: str):
    """Per lane: (mean, sum of squared deviations from the mean)."""
    k = _kernels()
    n = p.L
    M = p.M
    if method in ("corrected_two_pass", "two_pass"):
        mean = _lane_sums(p, "exact" if method == "corrected_two_pass" else "pairwise") / n
        sd = np.empty(M)
        sd2 = np.empty(M)
        if M:
            k.dev_sums_2d(p.in_f32, p.arr.ctypes.data, M, n, p.so, p.si, mean, sd, sd2)
        if method == "two_pass":
            return mean, sd2
        # Björck / Chan-Golub-LeVeque: the correction removes the error of an
        # inexact mean (it matters when the mean's rounding is near sigma).
        return mean + sd / n, np.maximum(sd2 - sd * sd / n, 0.0)
    if method == "welford":
        mean = np.empty(M)
        m2 = np.empty(M)
        if M:
            k.welford_2d(p.in_f32, p.arr.ctypes.data, M, n, p.so, p.si, mean, m2)
        return mean, m2
    sx = np.empty(M)
    sx2 = np.empty(M)
    if M:
        k.textbook_2d(p.in_f32, p.arr.ctypes.data, M, n, p.so, p.si, sx, sx2)
    # The textbook formula, kept to show its cancellation: it can go negative.
    return sx / n, sx2 - sx * sx / n


def variance(x: Any, ddof: int = 0, axis: Axis = None, method: str = "corrected_two_pass"):
    """Population (ddof=0) or sample (ddof=1) variance, accumulated in float64.

    Methods: ``corrected_two_pass`` (exact mean, compensated sums of the
    deviations and the correction term; the accurate default), ``two_pass``,
    ``welford`` (one streaming pass) and ``textbook`` (Σx² - (Σx)²/n, which
    cancels catastrophically; for demonstration). NaN where n - ddof <= 0.
    """
    if method not in VARIANCE_METHODS:
        raise ValueError(f"variance: unknown method {method!r}; expected one of "
                         f"{', '.join(VARIANCE_METHODS)}")
    if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
        raise ValueError(f"variance: ddof must be a non-negative integer, got {ddof!r}")
    arr = as_float_array(x, "variance")
    p = plan(arr, axis, "variance")
    n = p.L
    if n - ddof <= 0:
        out = np.full(p.M, np.nan)
    else:
        _, m2 = _m2(p, method)
        out = m2 / (n - ddof)
    if not p.out_shape:
        return np.float64(out[0])
    return out.reshape(p.out_shape)


@dataclass(frozen=True)
class Moments:
    """Count, mean and M2 (sum of squared deviations) of a chunk of data."""
    count: int
    mean: float
    m2: float

    def variance(self, ddof: int = 0) -> float:
        d = self.count - ddof
        return self.m2 / d if d > 0 else math.nan


def moments(x: Any) -> Moments:
    """The moments of all elements of x (corrected two-pass), ready to ``merge``."""
    arr = as_float_array(x, "moments")
    p = plan(arr, None, "moments")
    if p.L == 0:
        return Moments(0, 0.0, 0.0)
    mean, m2 = _m2(p, "corrected_two_pass")
    return Moments(int(p.L), float(mean[0]), float(m2[0]))


def _merge2(a: Moments, b: Moments) -> Moments:
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    n = a.count + b.count
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n)
    m2 = a.m2 + b.m2 + delta * delta * (a.count * (b.count / n))
    return Moments(n, mean, m2)


def merge(*parts: Moments) -> Moments:
    """Combine the moments of disjoint chunks (Chan, Golub and LeVeque's update).

    Merging in a balanced tree keeps the error growth logarithmic in the
    number of chunks.
    """
    if len(parts) == 1 and not isinstance(parts[0], Moments):
        parts = tuple(parts[0])
    for p in parts:
        if not isinstance(p, Moments):
            raise TypeError(f"merge: expected Moments, got {type(p).__name__}")
    if not parts:
        return Moments(0, 0.0, 0.0)
    level = list(parts)
    while len(level) > 1:
        level = [_merge2(level[i], level[i + 1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
    return level[0]
