"""The statistics of one measured figure, and of the ratio of two.

Every figure is the median of its samples (rounds, repeats or steps), shown
with its min and max and a 95% confidence interval of the median from a
percentile bootstrap: resample the samples with replacement, take each
resample's median, and read the 2.5th and 97.5th percentiles of those medians
(Efron and Tibshirani, *An Introduction to the Bootstrap*, ch. 13; the same
method as ``scipy.stats.bootstrap(method="percentile")``, which the tests use
as the oracle). The resampling uses a fixed seed, so the same samples always
give the same interval. With 5 or fewer samples the interval is the whole
range [min, max]: a handful of samples says little, and the interval says so.

A figure is *noisy* when its interval is wider than 10% of its median; the
NUMA figures are also noisy when their spread (max - min) is wider than 10%
of the median. A noisy figure is still shown, marked, never silently trusted.

Comparing two figures (``bench compare``) bootstraps both sample sets
independently and gives the interval of the ratio of their medians; the
difference is significant when that interval excludes 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

__all__ = ["Stats", "summarize", "bootstrap_median_ci", "ratio_ci", "NOISE_THRESHOLD", "RESAMPLES",
           "CI_LEVEL", "CI_METHOD", "RATIO_CI_METHOD"]

NOISE_THRESHOLD = 0.10     # interval (or spread) wider than 10% of the median: noisy
CI_LEVEL = 0.95
RESAMPLES = 10_000
SEED = 20240917
CI_METHOD = f"percentile bootstrap of the median, {RESAMPLES} resamples"
RATIO_CI_METHOD = f"percentile bootstrap of the ratio of the medians, {RESAMPLES} resamples of each side"
_CHUNK_ELEMENTS = 1 << 21   # bounds the memory of one resampling step (16 MiB of indices)


@dataclass(frozen=True)
class Stats:
    """One figure: the median of ``n`` samples with its spread and 95% interval."""

    n: int
    median: float
    min: float
    max: float
    ci_low: float               # 95% confidence interval of the median (bootstrap)
    ci_high: float
    ci_rel_width: float         # (ci_high - ci_low) / median
    spread_rel: float           # (max - min) / median
    noisy: bool
    noisy_reasons: Tuple[str, ...] = ()


def _rng():
    import numpy as np

    return np.random.default_rng(SEED)


def _bootstrap_medians(x, resamples: int, rng):
    """The medians of ``resamples`` resamples (with replacement) of ``x``."""
    import numpy as np

    n = len(x)
    per_chunk = max(1, _CHUNK_ELEMENTS // n)
    out = np.empty(resamples)
    done = 0
    while done < resamples:
        k = min(per_chunk, resamples - done)
        idx = rng.integers(0, n, size=(k, n))
        out[done:done + k] = np.median(x[idx], axis=1)
        done += k
    return out


def bootstrap_median_ci(samples: Sequence[float], level: float = CI_LEVEL,
                        resamples: int = RESAMPLES) -> Tuple[float, float]:
    """The percentile-bootstrap ``level`` interval of the median of ``samples``."""
    import numpy as np

    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples")
    if x.size == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    meds = _bootstrap_medians(x, resamples, _rng())
    alpha = (1 - level) / 2
    lo, hi = np.percentile(meds, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def summarize(samples: Sequence[float], *, spread_rule: bool = False,
              threshold: float = NOISE_THRESHOLD) -> Stats:
    """Median, min, max and the bootstrap interval of ``samples``; noisy when the
    interval (and, with ``spread_rule``, the spread) is wider than ``threshold`` of the median."""
    values = [float(v) for v in samples if v is not None and math.isfinite(v)]
    if not values:
        raise ValueError("no finite samples")
    import statistics

    med = statistics.median(values)
    lo, hi = bootstrap_median_ci(values)
    scale = abs(med) if med else 1.0
    ci_rel = (hi - lo) / scale
    spread_rel = (max(values) - min(values)) / scale
    reasons = []
    if ci_rel > threshold:
        reasons.append(f"95% interval {100 * ci_rel:.0f}% of the median")
    if spread_rule and spread_rel > threshold:
        reasons.append(f"spread {100 * spread_rel:.0f}% of the median")
    if len(values) < 2:
        reasons.append("one sample: no spread known")
    return Stats(n=len(values), median=med, min=min(values), max=max(values), ci_low=lo, ci_high=hi,
                 ci_rel_width=ci_rel, spread_rel=spread_rel, noisy=bool(reasons), noisy_reasons=tuple(reasons))


def ratio_ci(numerator: Sequence[float], denominator: Sequence[float], level: float = CI_LEVEL,
             resamples: int = RESAMPLES) -> Tuple[float, float, float]:
    """(median(numerator) / median(denominator), low, high): the ratio of the medians and its
    percentile-bootstrap interval, both sample sets resampled independently."""
    import numpy as np

    a = np.asarray(numerator, dtype=np.float64)
    b = np.asarray(denominator, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("no samples")
    point = float(np.median(a) / np.median(b))
    rng = _rng()
    ma = _bootstrap_medians(a, resamples, rng) if a.size > 1 else np.full(resamples, a[0])
    mb = _bootstrap_medians(b, resamples, rng) if b.size > 1 else np.full(resamples, b[0])
    alpha = (1 - level) / 2
    lo, hi = np.percentile(ma / mb, [100 * alpha, 100 * (1 - alpha)])
    return point, float(lo), float(hi)
