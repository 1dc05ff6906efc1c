"""``mltools bench compare A.json B.json ...``: per case, how much faster or slower B is
than the baseline A, with a 95% interval and a verdict.

Inputs are the files ``bench sum|numa|shakeshake --output`` (or ``--json``)
write, and pyperf's JSON files (``pyperf run -o``, ``.json`` or ``.json.gz``),
whose values are times (lower is better). Cases are matched by name. The
speed-up is the baseline's median over this file's for times, this file's
over the baseline's for rates (GB/s, images/s), so above 1 is always faster;
its interval comes from bootstrapping both sample sets
(:func:`mltools.results.stats.ratio_ci`); a difference is significant when
the interval excludes 1. pyperf decides with a t-test on the means instead;
on clear differences the two agree (tests check it on pyperf's own files).
"""
from __future__ import annotations

import gzip
import json
import math
import statistics
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mltools.env.machine import machine_differences
from mltools.errors import InputError
from mltools.findings import ItemError, require_some_processed
from mltools.results.stats import RATIO_CI_METHOD, ratio_ci

__all__ = ["LoadedResults", "load_results", "compare_results", "CompareReport", "FileComparison",
           "CaseComparison", "Summary", "plot_compare", "compare_case"]


@dataclass(frozen=True)
class LoadedCase:
    name: str
    unit: str
    better: str
    samples: Tuple[float, ...]
    noisy: bool


@dataclass(frozen=True)
class LoadedResults:
    path: str
    benchmark: str                    # the schema ("mltools.bench.sum"), or "pyperf"
    machine: Optional[dict]
    cases: Tuple[LoadedCase, ...]
    interrupted: bool
    busy: bool = False                # the run's other load exceeded its usable CPUs


def _read_json(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable gzip file ({exc})") from None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not a results document (a JSON object is expected)")
    return doc


def _pyperf_machine(meta: dict) -> dict:
    """pyperf's common metadata under our Machine's names (they share most)."""
    m = {k: meta.get(k) for k in ("cpu_model_name", "hostname", "platform", "python_version", "cpu_count",
                                  "load_avg_1min")}
    return {k: v for k, v in m.items() if v is not None}


def _pyperf_cases(path: str, doc: dict) -> Tuple[LoadedCase, ...]:
    common = doc.get("metadata") or {}
    out = []
    for bench in doc.get("benchmarks") or ():
        meta = dict(common, **(bench.get("metadata") or {}))
        values: List[float] = []
        runs_meta = []
        for run in bench.get("runs") or ():
            values.extend(float(v) for v in run.get("values") or ())
            runs_meta.append(run.get("metadata") or {})
        name = meta.get("name") or next((r["name"] for r in runs_meta if "name" in r), None)
        if not name:
            raise InputError(f"{path}: a pyperf benchmark without a name")
        unit = meta.get("unit") or next((r["unit"] for r in runs_meta if "unit" in r), "second")
        out.append(LoadedCase(str(name), str(unit), "lower", tuple(values), False))
    return tuple(out)


def load_results(path: str) -> LoadedResults:
    """A results file: a ``mltools.bench.*`` document with ``cases``, or a pyperf file."""
    doc = _read_json(path)
    schema = doc.get("schema")
    if isinstance(schema, str) and schema.startswith("mltools.bench."):
        if "cases" not in doc:
            raise InputError(f"{path}: a {schema} document of version {doc.get('version')} has no samples "
                             "(write it again with this mltools' --output)")
        cases = []
        for c in doc["cases"]:
            try:
                cases.append(LoadedCase(str(c["name"]), str(c["unit"]), str(c["better"]),
                                        tuple(float(v) for v in c["samples"]),
                                        bool((c.get("stats") or {}).get("noisy", False))))
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"{path}: a case without {exc} (name, unit, better and samples are needed)") from None
        return LoadedResults(path, schema, doc.get("machine"), tuple(cases), bool(doc.get("interrupted")),
                             bool((doc.get("run") or {}).get("busy", False)))
    if "benchmarks" in doc and str(doc.get("version", "")) in ("1.0", "6", "5"):
        return LoadedResults(path, "pyperf", _pyperf_machine(doc.get("metadata") or {}), _pyperf_cases(path, doc),
                             False)
    raise InputError(f"{path}: not an mltools bench results file nor a pyperf file "
                     f"(schema {schema!r}; write one with `mltools bench ... --output FILE`)")


@dataclass(frozen=True)
class CaseComparison:
    name: str
    unit: str
    better: str
    baseline_median: float
    median: float
    baseline_n: int
    n: int
    speedup: float              # > 1: faster than the baseline
    speedup_low: float          # 95% interval
    speedup_high: float
    verdict: str                # "faster", "slower", "not significant", "too few samples"
    significant: bool
    verdict_text: str           # "1.23x faster, significant"
    noisy: bool                 # either side was marked noisy when measured


@dataclass(frozen=True)
class Summary:
    faster: int
    slower: int
    not_significant: int
    too_few: int


@dataclass(frozen=True)
class FileComparison:
    path: str
    benchmark: str
    interrupted: bool
    busy: bool                      # this run or the baseline's ran on a busy machine
    machine_differences: Tuple[str, ...]
    cases: Tuple[CaseComparison, ...]
    only_in_baseline: Tuple[str, ...]
    only_here: Tuple[str, ...]
    unit_mismatch: Tuple[str, ...]
    summary: Summary
    geometric_mean_speedup: Optional[float]


@dataclass(frozen=True)
class CompareReport:
    SCHEMA = "mltools.bench.compare"
    SCHEMA_VERSION = 1

    baseline: str
    baseline_benchmark: str
    baseline_cases: int
    comparisons: Tuple[FileComparison, ...]
    errors: Tuple[ItemError, ...]
    ci_method: str
    fail_if_slower_pct: Optional[float]
    too_slow: Tuple[str, ...]   # "path: case" significantly slower by more than the limit
    failed: bool


def _phrase(speedup: float) -> str:
    if speedup >= 1:
        return f"{speedup:.2f}x faster"
    return f"{1 / speedup:.2f}x slower"


def compare_case(base: LoadedCase, new: LoadedCase) -> CaseComparison:
    if base.better == "higher":
        s, lo, hi = ratio_ci(new.samples, base.samples)
    else:
        s, lo, hi = ratio_ci(base.samples, new.samples)
    med_b = statistics.median(base.samples)
    med_n = statistics.median(new.samples)
    if len(base.samples) < 2 or len(new.samples) < 2:
        verdict, significant = "too few samples", False
        text = f"{_phrase(s)}, too few samples to tell"
    elif lo > 1.0:
        verdict, significant, text = "faster", True, f"{_phrase(s)}, significant"
    elif hi < 1.0:
        verdict, significant, text = "slower", True, f"{_phrase(s)}, significant"
    else:
        verdict, significant, text = "not significant", False, "not significant"
    return CaseComparison(base.name, base.unit, base.better, med_b, med_n, len(base.samples), len(new.samples),
                          s, lo, hi, verdict, significant, text, base.noisy or new.noisy)


def _compare_file(base: LoadedResults, other: LoadedResults) -> FileComparison:
    by_base: Dict[str, LoadedCase] = {c.name: c for c in base.cases}
    by_new: Dict[str, LoadedCase] = {c.name: c for c in other.cases}
    cases, mismatch = [], []
    for name, b in by_base.items():
        n = by_new.get(name)
        if n is None or not b.samples or not n.samples:
            continue
        if (b.unit, b.better) != (n.unit, n.better):
            mismatch.append(f"{name}: {b.unit} ({b.better} is better) -> {n.unit} ({n.better} is better)")
            continue
        cases.append(compare_case(b, n))
    speedups = [c.speedup for c in cases if c.speedup > 0 and math.isfinite(c.speedup)]
    geo = math.exp(sum(math.log(v) for v in speedups) / len(speedups)) if speedups else None
    summary = Summary(sum(c.verdict == "faster" for c in cases), sum(c.verdict == "slower" for c in cases),
                      sum(c.verdict == "not significant" for c in cases),
                      sum(c.verdict == "too few samples" for c in cases))
    return FileComparison(
        other.path, other.benchmark, other.interrupted, base.busy or other.busy, tuple(machine_differences(base.machine, other.machine)),
        tuple(cases), tuple(n for n in by_base if n not in by_new), tuple(n for n in by_new if n not in by_base),
        tuple(mismatch), summary, geo)


def compare_results(baseline: str, others: Sequence[str], fail_if_slower_pct: Optional[float] = None
                    ) -> CompareReport:
    """Compare each of ``others`` with ``baseline``. An unreadable baseline raises (exit 2);
    an unreadable other file is an :class:`ItemError` and the rest are still compared."""
    base = load_results(baseline)
    comparisons, errors = [], []
    for path in others:
        try:
            comparisons.append(_compare_file(base, load_results(path)))
        except InputError as exc:
            errors.append(ItemError(path, exc.message))
    require_some_processed(errors, len(others), "files to compare")
    too_slow: List[str] = []
    if fail_if_slower_pct is not None:
        limit = 1.0 + fail_if_slower_pct / 100.0
        for fc in comparisons:
            too_slow += [f"{fc.path}: {c.name}" for c in fc.cases
                         if c.verdict == "slower" and 1.0 / c.speedup > limit]
    return CompareReport(baseline, base.benchmark, len(base.cases), tuple(comparisons), tuple(errors), RATIO_CI_METHOD,
                         fail_if_slower_pct, tuple(too_slow), bool(too_slow))


def plot_compare(report: CompareReport, path: str, max_cases: int = 60) -> None:
    """Speed-ups with their 95% intervals, one row per case, per compared file (matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(fc.path, c) for fc in report.comparisons for c in fc.cases][:max_cases]
    height = max(2.5, 0.28 * len(rows) + 1.2)
    fig, ax = plt.subplots(figsize=(9, height))
    colours = {"faster": "tab:green", "slower": "tab:red"}
    for y, (fpath, c) in enumerate(reversed(rows)):
        colour = colours.get(c.verdict, "tab:gray")
        ax.errorbar([c.speedup], [y], xerr=[[c.speedup - c.speedup_low], [c.speedup_high - c.speedup]],
                    fmt="o", color=colour, ms=4, capsize=2)
    labels = [(c.name if len(report.comparisons) == 1 else f"{fpath}: {c.name}") for fpath, c in reversed(rows)]
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([lb if len(lb) <= 60 else "..." + lb[-57:] for lb in labels], fontsize=7)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over the baseline (> 1 faster), 95% interval")
    ax.set_title(f"against {report.baseline}" + (f" (first {max_cases} cases)" if len(rows) == max_cases else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
