"""The summation benchmark behind ``mltools bench sum``: speed and error of
every method next to ``numpy.sum`` and ``math.fsum`` on the same arrays.

Timing is calibrated (a batch of calls lasts at least ``min_time_s``), warmed
up, repeated and interleaved across methods (one batch of every method per
round), so that a noisy machine hurts every method alike; min and median
are reported. Errors are against the exact sum, known by construction for the
ill-conditioned data (±x pairs plus 1.0) and from ``exact_sum`` otherwise.

Every repeat of every method is kept as a sample of its case (``cases``, in
ns per element) with its median, spread and bootstrap 95% interval, next to
the machine it ran on (``mltools.results``). An interrupted run returns the
groups it had finished, marked ``interrupted``.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mltools.env.machine import Machine
from mltools.results.run import LOWER, Case, Recorder, RunInfo
from mltools.summation import _core
from mltools.summation._core import METHODS

DATASETS = ("uniform", "ill")
LAYOUTS = ("1d", "axis0")
DTYPES = ("float64", "float32")
FSUM_MAX_N = 10**6          # math.fsum(x.tolist()) costs 7-225 ns/element


@dataclass(frozen=True)
class BenchConfig:
    sizes: Tuple[int, ...] = (10**3, 10**4, 10**5, 10**6, 10**7)
    dtypes: Tuple[str, ...] = DTYPES
    layouts: Tuple[str, ...] = LAYOUTS
    datasets: Tuple[str, ...] = DATASETS
    methods: Tuple[str, ...] = METHODS
    repeats: int = 5
    min_time_s: float = 0.02
    cond_sweep_n: int = 1000
    cond_sweep_exponents: Tuple[int, ...] = tuple(range(0, 41, 4))
    seed: int = 0
    clock: str = "wall"


@dataclass(frozen=True)
class BenchRow:
    dataset: str
    dtype: str
    layout: str
    n: int
    method: str               # a mltools method, "numpy.sum", "math.fsum", ...
    ns_per_element_min: float
    ns_per_element_median: float
    ns_per_element_max: float
    noisy: bool               # the case's 95% interval is wider than 10% of its median
    gb_per_s: float
    ratio_to_numpy: Optional[float]
    error_ulps: float         # in units of the last place of the exact sum, in the result's precision
    relative_error: float
    condition_number: float
    calls_per_batch: int


@dataclass(frozen=True)
class CondPoint:
    target_condition_number: float
    condition_number: float
    method: str
    relative_error: float


@dataclass(frozen=True)
class BenchReport:
    SCHEMA: ClassVar[str] = "mltools.bench.sum"
    # Format history: 2 - machine, run, cases (every repeat) and interrupted; the CPU,
    # numpy and Python versions moved into machine.
    SCHEMA_VERSION: ClassVar[int] = 2
    isa: str
    isas_available: Tuple[str, ...]
    config: BenchConfig
    rows: Tuple[BenchRow, ...]
    cond_sweep: Tuple[CondPoint, ...]
    comparators: Tuple[str, ...]
    machine: Machine
    run: RunInfo
    cases: Tuple[Case, ...]
    notes: Tuple[str, ...] = field(default_factory=tuple)
    interrupted: bool = False


# ------------------------------------------------------------------- data

def ill_conditioned(n: int, rng: np.random.Generator) -> np.ndarray:
    """±x pairs with exponents spread by e^(10 N(0,1)), plus 1.0, shuffled.

    The exact sum is 1.0 by construction; the condition number is Σ|x|.
    """
    half = max((n - 1) // 2, 0)
    xs = rng.standard_normal(half) * np.exp(np.clip(10 * rng.standard_normal(half), -300, 300))
    x = np.concatenate([xs, -xs, [1.0], np.zeros(n - 2 * half - 1)])
    rng.shuffle(x)
    return x


def gen_sum(n: int, cond: float, rng: np.random.Generator) -> Tuple[np.ndarray, Fraction]:
    """A vector whose sum has about the given condition number (after Ogita,
    Rump and Oishi's GenDot, for sums): half the terms with random exponents
    in [0, log2 cond], the other half chosen to cancel the running exact sum
    down to exponents falling linearly to 0. Returns (x, exact sum)."""
    b = max(math.log2(cond), 1.0)
    n = max(n, 4)
    n1 = n // 2
    e = rng.integers(0, int(round(b / 2)) + 1, n1).astype(np.float64)
    e[0], e[-1] = round(b / 2) + 1, 0
    x = np.empty(n)
    x[:n1] = (2 * rng.random(n1) - 1) * np.exp2(e)
    total = sum((Fraction(v) for v in x[:n1].tolist()), Fraction(0))
    m = n - n1
    for k in range(m):
        ek = round(b - (b * k) / max(m - 1, 1))
        v = float((2 * rng.random() - 1) * 2.0**ek - total)
        x[n1 + k] = v
        total += Fraction(v)
    rng.shuffle(x)
    return x, total


# ----------------------------------------------------------------- timing

CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def _calibrate(f: Callable[[], object], min_time_s: float, clock=time.perf_counter) -> int:
    k = 1
    while True:
        t0 = clock()
        for _ in range(k):
            f()
        if clock() - t0 >= min_time_s or k >= 1 << 20:
            return k
        k *= 2


def time_interleaved(funcs: Dict[str, Callable[[], object]], repeats: int,
                     min_time_s: float, clock: str = "wall") -> Dict[str, Tuple[List[float], int]]:
    """Per function: seconds per call of each repeat (one batch per round), calls per batch.

    clock "wall" is elapsed time; "cpu" is this thread's CPU time, which
    leaves out the time slices other processes take on a crowded machine.
    """
    now = CLOCKS[clock]
    batch = {name: _calibrate(f, min_time_s, now) for name, f in funcs.items()}   # also warms up
    times: Dict[str, List[float]] = {name: [] for name in funcs}
    for _ in range(repeats):
        for name, f in funcs.items():
            k = batch[name]
            t0 = now()
            for _ in range(k):
                f()
            times[name].append((now() - t0) / k)
    return {name: (times[name], batch[name]) for name in funcs}


# ------------------------------------------------------------ comparators

def _optional_comparators() -> Dict[str, Callable[[np.ndarray], float]]:
    """xsum and accupy when installed (LGPL/GPL: used, never shipped)."""
    out: Dict[str, Callable[[np.ndarray], float]] = {}
    try:
        import xsum  # type: ignore

        def xsum_large(a):
            acc = xsum.xsum_large()
            acc.add(a)
            return acc.round()
        out["xsum.large"] = xsum_large
    except Exception:  # noqa: BLE001 - absent or incompatible: not compared
        pass
    try:
        import accupy  # type: ignore
        out["accupy.kahan_sum"] = lambda a: float(accupy.kahan_sum(a))
    except Exception:  # noqa: BLE001
        pass
    return out


def _errors(result, exact: np.ndarray, S_abs: np.ndarray) -> Tuple[float, float, float]:
    """(ulps in the result's precision, relative error, condition number), worst column."""
    r = np.atleast_1d(np.asarray(result))
    ex = np.atleast_1d(exact)
    prec = np.float32 if r.dtype == np.float32 else np.float64
    with np.errstate(all="ignore"):
        err = np.abs(r.astype(np.float64) - ex)
        ulp = np.spacing(np.abs(ex.astype(prec))).astype(np.float64)
        ulps = np.where(err == 0, 0.0, err / ulp)
        rel = np.where(err == 0, 0.0, err / np.abs(ex))
        cond = np.where(S_abs == 0, 1.0, S_abs / np.abs(ex))
    return float(np.max(ulps)), float(np.max(rel)), float(np.max(cond))


def _groups(config: BenchConfig) -> List[Tuple[str, str, str, int]]:
    return [(d, t, l, n) for d in config.datasets for t in config.dtypes for l in config.layouts
            for n in config.sizes]


def run_bench(config: BenchConfig, progress: Optional[Callable[..., None]] = None,
              command: Sequence[str] = ()) -> BenchReport:
    """Time and check every method on every (dataset, dtype, layout, size) group, then the
    condition-number sweep. ``progress(done, total, detail)`` is called after each group.
    Ctrl-C returns the groups finished so far, with ``interrupted`` set."""
    for m in config.methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; expected some of {', '.join(METHODS)}")
    rng = np.random.default_rng(config.seed)
    extras = _optional_comparators()
    rows: List[BenchRow] = []
    notes: List[str] = []
    import mltools.summation as S

    recorder = Recorder(command, threads=1)
    groups = _groups(config)
    total = len(groups) + 1          # the condition-number sweep is the last step
    interrupted = False
    sweep: List[CondPoint] = []
    try:
        for done, (dataset, dtype, layout, n) in enumerate(groups):
            if progress:
                progress(done, total, f"{dataset} {dtype} {layout} n={n}")
            rows.extend(_time_group(S, config, rng, extras, recorder, dataset, dtype, layout, n))
        if progress:
            progress(len(groups), total, "condition-number sweep")
        sweep = _cond_sweep(S, config, rng)
        if progress:
            progress(total, total)
    except KeyboardInterrupt:
        interrupted = True
        notes.append("interrupted: only the groups listed were measured" + ("" if sweep else
                                                                         "; no condition-number sweep"))
    if not extras:
        notes.append("xsum and accupy are not installed: not compared")
    run = recorder.finish()
    return BenchReport(
        isa=_core.active_isa(), isas_available=_core.available_isas(), config=config, rows=tuple(rows),
        cond_sweep=tuple(sweep), comparators=tuple(["numpy.sum", "math.fsum"] + sorted(extras)),
        machine=recorder.machine, run=run, cases=tuple(recorder.cases), notes=tuple(notes),
        interrupted=interrupted)


def _time_group(S, config: BenchConfig, rng, extras, recorder: Recorder, dataset: str, dtype: str, layout: str,
                n: int) -> List[BenchRow]:
    base = rng.random(n) if dataset == "uniform" else ill_conditioned(n, rng)
    x = base.astype(dtype)
    if layout == "axis0":
        x = x[: n - n % 2].reshape(-1, 2)     # C order: reduce the slow axis
    axis = 0 if layout == "axis0" else None
    exact = np.asarray(S.exact_sum(x, axis=axis), np.float64)
    S_abs = np.asarray(S.exact_sum(np.abs(x), axis=axis), np.float64)
    funcs: Dict[str, Callable[[], object]] = {
        "numpy.sum": (lambda x=x, axis=axis: np.sum(x, axis=axis))}
    if dtype == "float32":
        funcs["numpy.sum(dtype=float64)"] = (
            lambda x=x, axis=axis: np.sum(x, axis=axis, dtype=np.float64))
    for m in config.methods:
        funcs[m] = (lambda x=x, axis=axis, m=m: S.sum(x, method=m, axis=axis))
    if layout == "1d" and n <= FSUM_MAX_N:
        funcs["math.fsum"] = (lambda x=x: math.fsum(x.tolist()))
    if layout == "1d" and dtype == "float64":
        for name, f in extras.items():
            funcs[name] = (lambda x=x, f=f: f(x))
    timed = time_interleaved(funcs, config.repeats, config.min_time_s, config.clock)
    t_np = min(timed["numpy.sum"][0])
    nbytes = x.nbytes
    rows = []
    for name, f in funcs.items():
        ts, k = timed[name]
        tmin = min(ts)
        ulps, rel, cond = _errors(f(), exact, S_abs)
        per_element = [t / x.size * 1e9 for t in ts]
        case = recorder.add(f"{dataset}/{dtype}/{layout}/n={x.size}/{name}", "ns/element", LOWER, per_element,
                            params={"dataset": dataset, "dtype": dtype, "layout": layout, "n": int(x.size),
                                    "method": name, "calls_per_batch": k, "clock": config.clock})
        rows.append(BenchRow(
            dataset=dataset, dtype=dtype, layout=layout, n=int(x.size), method=name,
            ns_per_element_min=tmin / x.size * 1e9,
            ns_per_element_median=statistics.median(ts) / x.size * 1e9,
            ns_per_element_max=max(ts) / x.size * 1e9,
            noisy=bool(case and case.stats.noisy),
            gb_per_s=nbytes / tmin / 1e9,
            ratio_to_numpy=tmin / t_np,
            error_ulps=ulps, relative_error=rel, condition_number=cond,
            calls_per_batch=k))
    return rows


def _cond_sweep(S, config: BenchConfig, rng) -> List[CondPoint]:
    sweep: List[CondPoint] = []
    for ex in config.cond_sweep_exponents:
        target = 10.0 ** ex
        x, total = gen_sum(config.cond_sweep_n, target, rng)
        exact = float(total)
        abs_sum = math.fsum(abs(v) for v in x.tolist())
        cond = abs_sum / abs(exact) if exact else math.inf
        results = {"numpy.sum": float(np.sum(x)), "math.fsum": math.fsum(x.tolist())}
        for m in config.methods:
            results[m] = float(S.sum(x, method=m))
        for name, v in results.items():
            rel = abs(Fraction(v) - total) / abs(total) if total else (0.0 if v == 0 else math.inf)
            sweep.append(CondPoint(target, cond, name, float(rel)))
    return sweep


def plot_report(report: BenchReport, path: str) -> None:
    """Error against condition number, and time against size (matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    eps = 2.0**-53
    by_method: Dict[str, List[CondPoint]] = {}
    for p in report.cond_sweep:
        by_method.setdefault(p.method, []).append(p)
    for name, pts in by_method.items():
        pts = sorted(pts, key=lambda p: p.condition_number)
        ax1.loglog([p.condition_number for p in pts],
                   [min(max(p.relative_error, eps), 10.0) for p in pts], "o-", label=name, ms=3)
    ax1.set_xlabel("condition number Σ|x| / |Σx|")
    ax1.set_ylabel("relative error (clamped to [2^-53, 10])")
    ax1.set_title(f"error, n = {report.config.cond_sweep_n} (Ogita-Rump-Oishi data)")
    ax1.legend(fontsize=7)
    rows = [r for r in report.rows if r.dataset == "uniform" and r.dtype == "float64" and r.layout == "1d"]
    names = sorted({r.method for r in rows})
    for name in names:
        pts = sorted((r for r in rows if r.method == name), key=lambda r: r.n)
        ax2.loglog([r.n for r in pts], [r.ns_per_element_min for r in pts], "o-", label=name, ms=3)
    ax2.set_xlabel("n (float64, 1-D)")
    ax2.set_ylabel("ns per element (min)")
    ax2.set_title(f"time, {report.machine.cpu_model_name}, {report.isa}")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_sizes(text: str) -> Tuple[int, ...]:
    """'1e3,1e6,12345' -> (1000, 1000000, 12345)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = float(part)
        except ValueError:
            raise ValueError(f"--sizes: {part!r} is not a number") from None
        if not (v >= 2 and v == int(v) and v <= 2e9):
            raise ValueError(f"--sizes: {part!r} must be a whole number from 2 to 2e9")
        out.append(int(v))
    if not out:
        raise ValueError("--sizes: no sizes given")
    return tuple(out)


def split_choices(text: str, allowed: Sequence[str], what: str) -> Tuple[str, ...]:
    out = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in out if p not in allowed]
    if bad or not out:
        raise ValueError(f"{what}: {', '.join(bad) or 'nothing'} is not one of {', '.join(allowed)}")
    return out
