"""mltools.summation against independent oracles: numpy's own reduction,
np.cumsum, math.fsum, exact integer/Fraction sums and statistics.pvariance."""
import math
import os
import statistics
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mltools.summation as S

LANE_METHODS = ("naive", "kahan", "neumaier", "sum2", "exact")
COMPENSATED = ("kahan", "neumaier", "sum2")


def exact_fraction(values) -> Fraction:
    """The exact sum: every finite double is an integer times 2**-1074."""
    total = 0
    for v in np.asarray(values, np.float64).ravel().tolist():
        p, q = v.as_integer_ratio()          # q is a power of two <= 2**1074
        total += p * (2**1074 // q)
    return Fraction(total, 2**1074)


def rounded(fr: Fraction) -> float:
    """Correctly rounded (Fraction to float rounds half-even), inf on overflow."""
    try:
        return float(fr)
    except OverflowError:
        return math.inf if fr > 0 else -math.inf


def bits(v):
    return np.asarray(v, np.float64).tobytes()


# ------------------------------------------------------------------ pairwise

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pairwise_is_bit_identical_to_numpy_on_1d(dtype):
    rng = np.random.default_rng(1)
    lengths = list(range(0, 300)) + [1023, 1024, 1025, 4097, 100_003, 1_000_000]
    for n in lengths:
        x = rng.standard_normal(n).astype(dtype) * 1e3
        want = np.add.reduce(x)
        got = S.pairwise_sum(x, dtype=dtype)
        assert got.dtype == want.dtype and bits(got) == bits(want), n
        # strided 1-D views go through the same pairwise order in numpy
        assert bits(S.pairwise_sum(x[::3], dtype=dtype)) == bits(np.add.reduce(x[::3])), n
        assert bits(S.pairwise_sum(x[::-1], dtype=dtype)) == bits(np.add.reduce(x[::-1])), n


def test_pairwise_matches_numpy_along_the_last_axis():
    x = np.random.default_rng(2).random((50, 333))
    assert bits(S.pairwise_sum(x, axis=1)) == bits(np.add.reduce(x, axis=1))
    assert bits(S.pairwise_sum(x, axis=-1)) == bits(np.add.reduce(x, axis=-1))


# --------------------------------------------------------------------- naive

def test_naive_is_the_sequential_order_of_cumsum():
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 100, 10_001):
        x = rng.standard_normal(n) * 10.0 ** rng.integers(-5, 5, n)
        assert bits(S.naive_sum(x)) == bits(np.cumsum(x)[-1])
        x32 = np.clip(x, -1e38, 1e38).astype(np.float32)
        got32 = S.naive_sum(x32, dtype=np.float32)
        assert got32.dtype == np.float32 and got32.tobytes() == np.cumsum(x32)[-1].tobytes()
        assert bits(S.naive_sum(x32)) == bits(np.cumsum(x32.astype(np.float64))[-1])
    x = rng.standard_normal((100, 3))
    assert bits(S.naive_sum(x, axis=0)) == bits(np.cumsum(x, axis=0)[-1])


# --------------------------------------------------------------------- exact

FSUM_CASES = [
    [],
    [0.0],
    [1e100, 1.0, -1e100, 1e-100, 1e50, -1.0, -1e50],
    [2.0**53, -0.5, -(2.0**-54)],
    [2.0**53, 1.0, 2.0**-100],
    [2.0**53 + 10.0, 1.0, 2.0**-100],
    [2.0**53 - 4.0, 0.5, 2.0**-54],
    [1e16, 1.0, 1e-16],
    [1e16 - 2.0, 1.0 - 2.0**-53, -(1e16 - 2.0), -(1.0 - 2.0**-53)],
    [2.0**n - 2.0**(n + 50) + 2.0**(n + 52) for n in range(-1074, 972, 2)] + [-(2.0**1022)],
    [1.0 / k for k in range(1, 1001)],
    [(-1.0) ** k / k for k in range(1, 1001)],
    [1.7**(i + 1) - 1.7**i for i in range(1000)] + [-(1.7**1000)],
    [0.1] * 10,
    [5e-324] * 1000,
    [-5e-324, 5e-324, 2.2250738585072014e-308, -2.225073858507201e-308],
]


@pytest.mark.parametrize("case", range(len(FSUM_CASES)))
def test_exact_matches_fsum_on_classic_cases(case):
    values = FSUM_CASES[case]
    x = np.array(values, np.float64)
    want = math.fsum(values)
    assert bits(S.exact_sum(x)) == bits(want)
    assert bits(S.exact_sum(x[::-1])) == bits(want)   # order-free
    assert bits(S.exact_sum(x)) == bits(rounded(exact_fraction(x)))


def test_exact_known_values():
    assert S.exact_sum(np.array([1.0 / k for k in range(1, 1001)])) == float.fromhex("0x1.df11f45f4e61ap+2")
    assert S.exact_sum(np.array([5e-324] * 1000)) == 1000 * 5e-324


def test_exact_random_against_fsum_and_fractions():
    rng = np.random.default_rng(4)
    for trial in range(30):
        n = int(rng.integers(1, 5000))
        x = rng.standard_normal(n) * np.exp2(rng.integers(-60, 60, n)) ** 7
        x = np.concatenate([x, [7, 1e100, -7, -1e100, -9e-20, 8e-20] * 10])
        rng.shuffle(x)
        want = math.fsum(x.tolist())
        assert bits(S.exact_sum(x)) == bits(want), trial
    wide = rng.standard_normal(20_000) * np.exp2(rng.integers(-1000, 1000, 20_000))
    assert bits(S.exact_sum(wide)) == bits(math.fsum(wide.tolist()))
    assert bits(S.exact_sum(wide)) == bits(rounded(exact_fraction(wide)))


def test_exact_where_fsum_overflows():
    big = np.finfo(np.float64).max
    cases = [
        [1e308, 1e308, -1e308],
        [big, 2.0**970, -(2.0**970)],
        [-big, -(2.0**970), 2.0**970],
        [big, big, -big, -big, 1.0],
        [-big, -(2.0**969)],                 # rounds to -inf? exactly halfway: ties to even -> -inf
        [-big, -(2.0**969) + 2.0**917],      # just below halfway: stays -DBL_MAX
        [big, 2.0**969],
    ]
    for c in cases:
        want = rounded(exact_fraction(c))
        assert bits(S.exact_sum(np.array(c))) == bits(want), c
    # a negative result whose significand is all ones, minus a sticky bit
    c = [-(2.0**53 - 1), -(2.0**-30)]
    assert S.exact_sum(np.array(c)) == rounded(exact_fraction(c)) == math.fsum(c)


def test_exact_float32_rounding_to_float32():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(10_000) * np.exp2(rng.integers(-30, 30, 10_000))).astype(np.float32)
    fr = exact_fraction(x.astype(np.float64))
    want32 = np.float32(0)
    # round the exact value to float32 through an exact comparison of the neighbours
    cand = np.float32(float(fr))
    below, above = np.nextafter(cand, np.float32(-np.inf)), np.nextafter(cand, np.float32(np.inf))
    want32 = min([below, cand, above], key=lambda c: (abs(Fraction(float(c)) - fr),
                                                         int(np.array(c).view(np.int32)) & 1))
    got = S.exact_sum(x, dtype=np.float32)
    assert got.dtype == np.float32 and got == want32
    assert S.exact_sum(x) == rounded(fr)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), max_size=60))
def test_exact_matches_fsum_hypothesis(values):
    x = np.array(values, np.float64)
    try:
        want = math.fsum(values)
    except OverflowError:
        want = rounded(exact_fraction(x))
    assert bits(S.exact_sum(x)) == bits(want)


# -------------------------------------------------------- IEEE special values

@pytest.mark.parametrize("method", S.METHODS)
def test_special_values(method):
    f = lambda v: S.sum(np.array(v, np.float64), method=method)  # noqa: E731
    assert f([1.0, np.inf]) == np.inf
    assert f([1.0, np.inf] * 100) == np.inf
    assert f([-np.inf, 2.0] * 50) == -np.inf
    assert np.isnan(f([np.inf, -np.inf]))
    assert np.isnan(f([1.0, np.nan, 2.0]))
    assert f([5e-324] * 1000) == 1000 * 5e-324
    assert f([]) == 0.0
    if method in COMPENSATED + ("exact",):
        assert f([1e308, 1e308, -1e308]) == 1e308
        assert f([1e308] * 40 + [-1e308] * 40 + [1.0]) == 1.0


def test_compensated_never_nan_from_finite_plus_inf():
    x = np.concatenate([np.random.default_rng(6).random(1000), [np.inf]])
    for m in S.METHODS:
        assert S.sum(x, method=m) == np.inf


# ------------------------------------------------------------- accuracy class

def test_float32_input_accumulates_in_float64():
    x = np.full(10**7, np.float32(0.1))
    got = S.sum(x)
    assert got.dtype == np.float64 and got == 1000000.0149011612
    assert S.pairwise_sum(x) == S.exact_sum(x) == 1000000.0149011612
    f32 = S.kahan_sum(x, dtype=np.float32)
    assert f32.dtype == np.float32


def test_compensated_errors_within_their_bounds():
    rng = np.random.default_rng(7)
    datasets = {
        "uniform": rng.random(100_000),
        "tenths": np.full(100_000, 0.1),
        "offset": 1e8 + rng.standard_normal(50_000),
        "ill": None,
    }
    # cond ~ 1e20+: +/-x pairs plus 1.0, shuffled; the exact sum is 1.0 by construction
    xs = rng.standard_normal(20_000) * np.exp(10 * rng.standard_normal(20_000))
    ill = np.concatenate([xs, -xs, [1.0]])
    rng.shuffle(ill)
    datasets["ill"] = ill
    for name, x in datasets.items():
        exact = exact_fraction(x)
        S_abs = float(np.sum(np.abs(x)))
        for m in S.METHODS:
            got = S.sum(x, method=m)
            err = abs(Fraction(float(got)) - exact)
            bound = S.error_bound(m, x.size, S_abs * (1 + 1e-10), abs(float(got)), 2.0**-53)
            assert err <= Fraction(float(bound)), (name, m, float(err), float(bound))
    # the compensated sums really compensate (fast-math would remove it)
    tenths = datasets["tenths"]
    for m in COMPENSATED:
        assert S.sum(tenths, method=m) == S.exact_sum(tenths)
    assert S.naive_sum(tenths) != S.exact_sum(tenths)
    assert S.exact_sum(ill) == 1.0 and S.naive_sum(ill) != 1.0


# ----------------------------------------------------------- axes and layouts

def test_axis0_keeps_the_accuracy_class_numpy_loses():
    x = np.full((1_000_000, 2), np.float32(0.1))
    exact = float(exact_fraction(x[:, 0].astype(np.float64)))
    np_err = abs(float(x.sum(axis=0, dtype=np.float32)[0]) - exact)
    for m in ("pairwise", "kahan", "neumaier"):
        got = S.sum(x, method=m, axis=0, dtype=np.float32)
        assert got.dtype == np.float32 and got.shape == (2,)
        err = abs(float(got[0]) - exact)
        bound = S.error_bound(m, x.shape[0], exact, exact, 2.0**-24)
        assert err <= bound, (m, err, bound)
        assert err * 100 < np_err, (m, err, np_err)


@pytest.mark.parametrize("method", S.METHODS)
def test_layouts_give_the_same_bits(method):
    rng = np.random.default_rng(8)
    a = rng.standard_normal((3001, 5)) * 10.0 ** rng.integers(-8, 8, (3001, 5))
    f = np.asfortranarray(a)
    c_axis0 = S.sum(a, method=method, axis=0)
    f_axis0 = S.sum(f, method=method, axis=0)
    cols = np.array([S.sum(np.ascontiguousarray(a[:, j]), method=method) for j in range(5)])
    if method == "pairwise":
        # a blocked cascade on strided lanes: not numpy's order, the same class
        for j in range(5):
            exact = exact_fraction(a[:, j])
            bound = S.error_bound("pairwise", 3001, float(np.abs(a[:, j]).sum()) * 1.01, 0, 2.0**-53)
            assert abs(Fraction(float(c_axis0[j])) - exact) <= Fraction(float(bound))
        assert bits(f_axis0) == bits(cols)
    else:
        assert bits(c_axis0) == bits(f_axis0) == bits(cols)
        assert bits(S.sum(a[:, 2], method=method)) == bits(cols[2])   # strided 1-D view
    # other shapes, negative strides, tuple axes, keep the numpy semantics
    b = rng.standard_normal((4, 6, 7))
    assert S.sum(b, method=method, axis=(0, 2)).shape == (6,)
    assert np.allclose(S.sum(b, method=method, axis=(0, 2)), b.sum(axis=(0, 2)), rtol=1e-13)
    assert np.allclose(S.sum(b[::-1, ::2, 1:], method=method, axis=1), b[::-1, ::2, 1:].sum(axis=1), rtol=1e-13)
    assert np.isclose(S.sum(b[:, ::2, ::3], method=method), b[:, ::2, ::3].sum(), rtol=1e-13)
    assert S.sum(np.float64(2.5), method=method) == 2.5
    assert S.sum(np.zeros((0, 3)), method=method, axis=0).tolist() == [0.0, 0.0, 0.0]
    assert S.sum(np.zeros((3, 0)), method=method, axis=0).shape == (0,)
    assert S.sum([1.0, 2.0, 3.5], method=method) == 6.5


# -------------------------------------------------------- ISAs and FP state

def test_every_isa_gives_the_same_bits():
    isas = S.available_isas()
    assert "sse2" in isas and S.active_isa() == isas[-1]
    rng = np.random.default_rng(9)
    arrays = [rng.random(100_003), rng.standard_normal(777) * 1e10, rng.random((5001, 3)),
              rng.random(65_537).astype(np.float32)]
    for m in S.METHODS:
        for x in arrays:
            for axis in (None, 0):
                for dt in ((None, np.float32) if x.dtype == np.float32 else (None,)):
                    results = []
                    for isa in isas:
                        with S.use_isa(isa):
                            results.append(bits(S.sum(x, method=m, axis=axis, dtype=dt)))
                    assert len(set(results)) == 1, (m, x.shape, axis, dt)


def test_isa_environment_variable():
    code = "import mltools.summation as S; print(S.active_isa(), S.naive_sum([1.0, 2.0]))"
    for isa in S.available_isas():
        env = dict(os.environ, MLTOOLS_SUM_ISA=isa)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.stdout.split() == [isa, "3.0"], out.stderr
    env = dict(os.environ, MLTOOLS_SUM_ISA="avx9000")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "MLTOOLS_SUM_ISA='avx9000'" in out.stderr
    with pytest.raises(ValueError, match="expected one of"):
        with S.use_isa("neon"):
            pass


def test_loading_and_running_every_kernel_keeps_subnormals():
    code = """
import numpy as np, mltools.summation as S
x = np.random.default_rng(0).random(10000)
for isa in S.available_isas():
    with S.use_isa(isa):
        for m in S.METHODS:
            for a in (x, x.astype(np.float32), x.reshape(100, 100)):
                S.sum(a, method=m); S.sum(a, method=m, axis=0)
        S.variance(x); S.variance(x, method="welford"); S.variance(x, method="textbook")
tiny = np.array([5e-324, 5e-324])
assert tiny.sum() == 1e-323, tiny.sum()
assert np.float64(1e-310) * 0.5 != 0.0
assert np.finfo(np.float64).smallest_subnormal > 0
print("ok")
"""
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


# ---------------------------------------------------------------- bad input

def test_bad_input_raises_clear_errors():
    with pytest.raises(TypeError, match="float32 or float64.*int64"):
        S.kahan_sum(np.arange(5))
    with pytest.raises(TypeError, match="complex"):
        S.exact_sum(np.ones(3, np.complex128))
    with pytest.raises(TypeError, match="object"):
        S.sum(np.array([1.0, None], dtype=object))
    with pytest.raises(TypeError):
        S.sum("1.0, 2.0")
    with pytest.raises(TypeError, match="float16"):
        S.sum(np.ones(3, np.float16))
    with pytest.raises(ValueError, match="out of bounds"):
        S.sum(np.ones((2, 2)), axis=2)
    with pytest.raises(ValueError, match="repeated axis"):
        S.sum(np.ones((2, 2)), axis=(0, 0))
    with pytest.raises(TypeError, match="axis"):
        S.sum(np.ones(2), axis=1.5)
    with pytest.raises(ValueError, match="unknown method"):
        S.sum(np.ones(2), method="fast")
    with pytest.raises(ValueError, match="float32 input"):
        S.sum(np.ones(2), dtype=np.float32)
    with pytest.raises(ValueError, match="method"):
        S.variance(np.ones(2), method="online")
    big_endian = np.ones(5, ">f8")
    assert S.exact_sum(big_endian) == 5.0


# -------------------------------------------------------------- diagnostics

def test_sum_info_condition_number_and_unreliable():
    x = np.array([1e16, 1.0, -1e16])
    info = S.naive_sum(x, with_info=True)
    assert isinstance(info, S.SumInfo) and info.value == 0.0
    assert info.condition_number == np.inf and info.unreliable
    good = S.sum_info(np.ones(1000), "pairwise")
    assert good.value == 1000.0 and good.condition_number == 1.0 and not good.unreliable
    assert 0 < good.error_bound < 1e-9
    ill = S.sum_info(np.array([1e10, 1.0, -1e10 + 1e-6]), "neumaier")
    exact = float(exact_fraction([1e10, 1.0, -1e10 + 1e-6]))
    assert abs(ill.condition_number - 2e10 / exact) / (2e10 / exact) < 1e-6
    assert abs(ill.value - exact) <= ill.error_bound
    per_column = S.kahan_sum(np.ones((10, 3)), axis=0, with_info=True)
    assert per_column.value.shape == per_column.condition_number.shape == (3,)
    assert S.sum_info(np.array([1.0, np.inf])).unreliable is False


# ----------------------------------------------------------------- variance

def test_corrected_two_pass_variance_against_statistics():
    rng = np.random.default_rng(10)
    hard = 1e15 + rng.random(20_000)
    want = statistics.pvariance(hard.tolist())
    got = S.variance(hard)
    assert abs(got - want) / want <= 1e-13
    assert abs(np.var(hard) - want) / want > 1e-3       # why the correction matters
    offset = 1e9 + rng.standard_normal(20_000)
    want = statistics.pvariance(offset.tolist())
    assert abs(S.variance(offset) - want) / want <= 1e-13
    assert abs(S.variance(offset, ddof=1) - statistics.variance(offset.tolist())) / want <= 1e-13
    assert abs(S.variance(offset, method="textbook") - want) / want > 1e-3
    for m in ("two_pass", "welford"):
        kappa = abs(offset.mean()) / math.sqrt(want)
        assert abs(S.variance(offset, method=m) - want) / want <= offset.size * kappa * 2.0**-53
    x32 = (1e4 + rng.standard_normal(50_000)).astype(np.float32)
    want = statistics.pvariance(x32.astype(np.float64).tolist())
    assert abs(S.variance(x32) - want) / want <= 1e-13


def test_variance_axes_and_edges():
    rng = np.random.default_rng(11)
    a = 1e6 + rng.standard_normal((2000, 3))
    per_col = S.variance(a, axis=0)
    for j in range(3):
        assert per_col[j] == S.variance(np.ascontiguousarray(a[:, j]))
    assert np.isnan(S.variance(np.ones(1), ddof=1))
    assert S.variance(np.full(10, 3.25)) == 0.0


def test_chan_merge_matches_one_pass():
    rng = np.random.default_rng(12)
    x = 1e9 + rng.standard_normal(30_000)
    chunks = np.array_split(x, 37)
    merged = S.merge(*[S.moments(c) for c in chunks])
    whole = S.moments(x)
    want = statistics.pvariance(x.tolist())
    assert merged.count == x.size
    assert abs(merged.mean - whole.mean) <= 1e-15 * abs(whole.mean) * 4
    kappa = abs(x.mean()) / math.sqrt(want)
    assert abs(merged.variance() - want) / want <= math.log2(37) * kappa * 2.0**-53 * 8 + 1e-13
    assert S.merge([S.moments(x)]) == whole
    with pytest.raises(TypeError):
        S.merge(1.0, 2.0)


def _lanes_model(values, method, lanes=24):
    """A plain-Python model of the compensated lane sums (lane i % 24, then a
    TwoSum fold of the sums and the non-zero compensations); empty is 0.0."""
    if not values:
        return 0.0
    s, c = [-0.0] * lanes, [0.0] * lanes
    for i, x in enumerate(values):
        j = i % lanes
        if method == "kahan":
            y = x - c[j]
            t = s[j] + y
            c[j] = (t - s[j]) - y
        elif method == "neumaier":
            t = s[j] + x
            c[j] += ((s[j] - t) + x) if abs(s[j]) >= abs(x) else ((x - t) + s[j])
        else:
            t = s[j] + x
            z = t - s[j]
            c[j] += (s[j] - (t - z)) + (x - z)
        s[j] = t
    total, err = -0.0, 0.0
    for v in s + [(-v if method == "kahan" else v) for v in c if v != 0.0]:
        t = total + v
        z = t - total
        err += (total - (t - z)) + (v - z)
        total = t
    return total if err == 0.0 else total + err


@pytest.mark.parametrize("method", COMPENSATED)
def test_compensated_lanes_match_a_python_model(method):
    rng = np.random.default_rng(13)
    for n in list(range(0, 60)) + [97, 500]:
        x = rng.standard_normal(n) * 10.0 ** rng.integers(-12, 12, n)
        want = _lanes_model(x.tolist(), method)
        assert bits(S.sum(x, method=method)) == bits(want), n
        rows = np.stack([x, x[::-1]]) if n else np.zeros((2, 0))
        got = S.sum(rows, method=method, axis=1)
        assert bits(got[1]) == bits(_lanes_model(x[::-1].tolist(), method)), n
        assert bits(S.sum(np.asfortranarray(rows), method=method, axis=1)) == bits(got), n


def test_threads_share_no_state():
    """Kernels release the GIL and keep no global state; use_isa is per thread."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(14)
    x = rng.standard_normal(200_000) * 10.0 ** rng.integers(-10, 10, 200_000)
    a = rng.random((20_000, 3))
    want = {m: (bits(S.sum(x, method=m)), bits(S.sum(a, method=m, axis=0))) for m in S.METHODS}
    isas = S.available_isas()

    def work(k):
        with S.use_isa(isas[k % len(isas)]):
            return {m: (bits(S.sum(x, method=m)), bits(S.sum(a, method=m, axis=0))) for m in S.METHODS}

    with ThreadPoolExecutor(max_workers=4) as pool:
        for got in pool.map(work, range(8)):
            assert got == want
    assert S.active_isa() == isas[-1]


def test_neumaier_select_on_equal_and_extreme_magnitudes_on_every_isa():
    """The operand with the larger magnitude is picked by an integer compare on
    AVX2: ties (x == s, x == -s), signed zeros, subnormals and huge values
    must give the bits of the float compare in the lane model."""
    rng = np.random.default_rng(21)
    pool = np.array([0.0, -0.0, 5e-324, -5e-324, 1e-310, -1e-310, 1.0, -1.0, 0.5, -0.5,
                     3.0, -3.0, 1e300, -1e300, 2.0**-1074 * 3, 1e-300, -1e-300, 2.0, -2.0])
    for n in (24, 48, 480, 1000):
        x = rng.choice(pool, n)
        # lanes that repeat s: x equal to the running sum or its negation
        if n >= 48:
            x[24:48] = x[0:24]
        if n >= 72:
            x[48:72] = -2 * x[0:24]
        want = _lanes_model(x.tolist(), "neumaier")
        x32 = np.clip(x, -1e38, 1e38).astype(np.float32)
        found = set()
        for isa in S.available_isas():
            with S.use_isa(isa):
                got = S.neumaier_sum(x)
                assert bits(got) == bits(want), (isa, n)
                found.add((bits(got), bits(S.sum(x32, method="neumaier")),
                           bits(S.sum(x32, method="neumaier", dtype=np.float32))))
        assert len(found) == 1, n
