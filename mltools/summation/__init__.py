"""Fast, accurate floating-point sums and variances over numpy arrays.

Every function takes a float32 or float64 array of any shape, layout and
stride and ``axis=None | int | tuple`` and returns a numpy scalar or array
like ``numpy.sum``. float32 input accumulates in float64 and returns float64
unless ``dtype=np.float32``. Each method has one fixed order of operations,
so results are bit-identical on every ISA (SSE2, AVX2, AVX-512) and layout.

- ``naive_sum``: strictly left to right (what ``np.cumsum(x)[-1]`` gives).
- ``pairwise_sum``: numpy's pairwise order; bit-identical to ``np.add.reduce``
  on 1-D input, and a blocked cascade of the same class along other axes.
- ``kahan_sum``, ``neumaier_sum``, ``sum2``: compensated sums over 32 lanes.
- ``exact_sum``: the exact sum correctly rounded (bit-identical to
  ``math.fsum`` wherever that returns a value).
- ``sum(x, method=...)``, ``sum_info`` (condition number, error bound,
  ``unreliable``), ``variance``, ``moments`` and ``merge`` (Chan et al.).
"""
from __future__ import annotations

from typing import Any

from mltools.summation._core import (
    ISA_ENV,
    ISAS,
    METHODS,
    UNRELIABLE_RELATIVE_BOUND,
    SumInfo,
    active_isa,
    available_isas,
    error_bound,
    reduce as _reduce,
    sum_info,
    use_isa,
)
from mltools.summation._variance import VARIANCE_METHODS, Moments, merge, moments, variance

__all__ = [
    "ISAS", "ISA_ENV", "METHODS", "VARIANCE_METHODS", "UNRELIABLE_RELATIVE_BOUND",
    "Moments", "SumInfo", "active_isa", "available_isas", "error_bound",
    "exact_sum", "kahan_sum", "merge", "moments", "naive_sum", "neumaier_sum",
    "pairwise_sum", "sum", "sum2", "sum_info", "use_isa", "variance",
]


def sum(x: Any, method: str = "neumaier", axis=None, *, dtype=None, with_info: bool = False):  # noqa: A001
    """The sum of ``x`` over ``axis`` by ``method`` (one of ``METHODS``).

    ``with_info=True`` returns a ``SumInfo`` (value plus diagnostics) instead.
    """
    if with_info:
        return sum_info(x, method, axis, dtype)
    return _reduce(x, method, axis, dtype, func=f"sum(method={method!r})")


def _make(method: str, doc: str):
    def f(x: Any, axis=None, *, dtype=None, with_info: bool = False):
        if with_info:
            return sum_info(x, method, axis, dtype)
        return _reduce(x, method, axis, dtype, func=f.__name__)
    f.__doc__ = doc + "\n\n``dtype=np.float32`` keeps float32 accumulation for float32 input; " \
        "``with_info=True`` returns a ``SumInfo``."
    return f


naive_sum = _make("naive", "Strictly sequential sum (the order of ``np.cumsum``).")
naive_sum.__name__ = "naive_sum"
pairwise_sum = _make("pairwise", "numpy's pairwise sum: bit-identical to ``np.add.reduce`` on 1-D "
                     "input; a blocked cascade of the same error class on other axes.")
pairwise_sum.__name__ = "pairwise_sum"
kahan_sum = _make("kahan", "Kahan's compensated sum over 32 fixed lanes.")
kahan_sum.__name__ = "kahan_sum"
neumaier_sum = _make("neumaier", "Neumaier's compensated sum over 32 fixed lanes.")
neumaier_sum.__name__ = "neumaier_sum"
sum2 = _make("sum2", "Ogita-Rump-Oishi Sum2 (TwoSum) over 32 fixed lanes: as if in twice "
             "the working precision, then rounded.")
sum2.__name__ = "sum2"
exact_sum = _make("exact", "The exact sum, correctly rounded (a superaccumulator): the same "
                  "bits as ``math.fsum``; finite whenever the rounded sum is.")
exact_sum.__name__ = "exact_sum"
