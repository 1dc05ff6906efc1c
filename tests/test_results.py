"""Benchmark statistics and `bench compare`, against independent oracles.

- The bootstrap interval of the median against scipy.stats.bootstrap (percentile
  method) and against the exact bootstrap distribution of the median, which for
  an odd number of samples is a binomial tail (Efron & Tibshirani, ch. 13 ex.).
- The ratio interval against scipy.stats.bootstrap with two independent samples.
- `bench compare` verdicts against `pyperf compare_to` on pyperf's own result files.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from math import comb

import numpy as np
import pytest

from mltools.results.stats import bootstrap_median_ci, ratio_ci, summarize

scipy_stats = pytest.importorskip("scipy.stats")


def _exact_median_cdf(n: int, k: int) -> float:
    """P(median of a resample <= the k-th smallest of n distinct values), n odd: at least
    (n+1)/2 of the n draws fall among the k smallest."""
    p = k / n
    need = (n + 1) // 2
    return sum(comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(need, n + 1))


@pytest.mark.parametrize("n", [3, 5, 7, 9, 11, 15, 21, 31])
def test_median_interval_is_the_exact_bootstrap_quantile(n):
    x = np.sort(np.random.default_rng(n).lognormal(0, 0.3, n))
    lo, hi = bootstrap_median_ci(x)
    cdf = [_exact_median_cdf(n, k) for k in range(1, n + 1)]
    # the exact 2.5% and 97.5% quantiles of the discrete bootstrap distribution
    k_lo = next(k for k in range(n) if cdf[k] >= 0.025)
    k_hi = next(k for k in range(n) if cdf[k] >= 0.975)
    # away from a jump that sits right at the quantile, the Monte Carlo answer is that order statistic
    if not any(abs(c - q) < 0.004 for c in cdf for q in (0.025, 0.975)):
        assert lo == pytest.approx(x[k_lo]) and hi == pytest.approx(x[k_hi])
    else:
        # Monte Carlo may land on either side of a jump that close to the quantile
        assert x[max(k_lo - 1, 0)] <= lo <= x[k_lo] and x[max(k_hi - 1, 0)] <= hi <= x[k_hi]


@pytest.mark.parametrize("n, seed", [(5, 1), (10, 2), (20, 3), (50, 4), (200, 5)])
def test_median_interval_agrees_with_scipy(n, seed):
    x = np.random.default_rng(seed).gamma(4.0, 1.0, n)
    lo, hi = bootstrap_median_ci(x)
    ref = scipy_stats.bootstrap((x,), np.median, method="percentile", n_resamples=20000,
                                random_state=np.random.default_rng(99), vectorized=True, axis=-1)
    rlo, rhi = ref.confidence_interval
    # both are Monte Carlo estimates of the same quantiles: within a small part of the width
    width = rhi - rlo
    assert abs(lo - rlo) <= 0.12 * width + 1e-12 and abs(hi - rhi) <= 0.12 * width + 1e-12


@pytest.mark.parametrize("shift", [1.0, 1.3])
def test_ratio_interval_agrees_with_scipy(shift):
    rng = np.random.default_rng(7)
    a = rng.normal(10.0, 0.4, 30)
    b = rng.normal(10.0 * shift, 0.4, 25)
    point, lo, hi = ratio_ci(b, a)
    ref = scipy_stats.bootstrap((b, a), lambda u, v, axis=-1: np.median(u, axis=axis) / np.median(v, axis=axis),
                                method="percentile", n_resamples=20000, paired=False, vectorized=True,
                                random_state=np.random.default_rng(3))
    rlo, rhi = ref.confidence_interval
    assert point == pytest.approx(np.median(b) / np.median(a))
    assert lo == pytest.approx(rlo, rel=0.01) and hi == pytest.approx(rhi, rel=0.01)
    assert (lo > 1.0) == (shift > 1.0)


def test_summarize_marks_noise():
    quiet = summarize([100.0, 101.0, 99.5, 100.2, 100.4, 99.9, 100.1])
    assert not quiet.noisy and quiet.min == 99.5 and quiet.max == 101.0 and quiet.median == 100.1
    assert quiet.ci_low <= quiet.median <= quiet.ci_high
    loud = summarize([100.0, 140.0, 80.0, 120.0, 95.0])
    assert loud.noisy and "95% interval" in loud.noisy_reasons[0]
    # the NUMA rule: a spread wider than 10% marks a figure even when the interval is narrow
    spread = summarize([100.0] * 30 + [150.0], spread_rule=True)
    assert spread.ci_rel_width == 0 and spread.noisy and "spread" in spread.noisy_reasons[0]
    assert summarize([5.0]).noisy          # one sample: nothing is known about its spread
    with pytest.raises(ValueError):
        summarize([float("nan")])


# ----------------------------------------------------------------- bench compare

def _results(path, cases, machine=None, busy=False):
    doc = {"schema": "mltools.bench.sum", "version": 2,
           "machine": machine or {"cpu_model_name": "AMD EPYC", "isa": "x86-64-v4", "kernel": "6.1"},
           "run": {"busy": busy}, "interrupted": False,
           "cases": [{"name": n, "unit": u, "better": b, "samples": list(s), "stats": {"noisy": False}}
                     for n, u, b, s in cases]}
    path.write_text(json.dumps(doc))
    return str(path)


def test_compare_verdicts_units_and_lists(cli, tmp_path):
    rng = np.random.default_rng(0)
    t = rng.normal(1.0, 0.01, 20)
    base = _results(tmp_path / "a.json", [
        ("time/faster", "ns", "lower", t), ("time/same", "ns", "lower", t), ("rate/faster", "GB/s", "higher", t),
        ("only/base", "ns", "lower", t)])
    new = _results(tmp_path / "b.json", [
        ("time/faster", "ns", "lower", t / 2), ("time/same", "ns", "lower", t[::-1]),
        ("rate/faster", "GB/s", "higher", t * 1.5), ("only/new", "ns", "lower", t)],
        machine={"cpu_model_name": "Intel Xeon", "isa": "x86-64-v4", "kernel": "6.1"})
    res = cli("bench", "compare", base, new, "--json")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["schema"] == "mltools.bench.compare"
    fc = doc["comparisons"][0]
    by = {c["name"]: c for c in fc["cases"]}
    assert by["time/faster"]["verdict_text"] == "2.00x faster, significant"
    assert by["rate/faster"]["verdict_text"] == "1.50x faster, significant"
    assert by["time/same"]["verdict"] == "not significant"
    assert fc["only_in_baseline"] == ["only/base"] and fc["only_here"] == ["only/new"]
    assert fc["machine_differences"] == ["CPU: AMD EPYC -> Intel Xeon"]
    assert "different machine" in res.stderr and "AMD EPYC -> Intel Xeon" in res.stderr
    text = cli("bench", "compare", base, new)
    assert "2.00x faster, significant" in text.stdout and "only in the baseline (1): only/base" in text.stdout


def test_fail_if_slower_exits_1_only_beyond_the_limit(cli, tmp_path):
    t = np.random.default_rng(1).normal(1.0, 0.005, 15)
    base = _results(tmp_path / "a.json", [("k", "ns", "lower", t)])
    slower = _results(tmp_path / "b.json", [("k", "ns", "lower", t * 1.10)])
    assert cli("bench", "compare", base, slower).exit_code == 0
    assert cli("bench", "compare", base, slower, "--fail-if-slower", "20").exit_code == 0
    res = cli("bench", "compare", base, slower, "--fail-if-slower", "5")
    assert res.exit_code == 1 and "FAIL: 1 case(s)" in res.stdout


def test_compare_bad_inputs(cli, tmp_path):
    t = [1.0, 1.1, 0.9]
    base = _results(tmp_path / "a.json", [("k", "ns", "lower", t)])
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"schema": "mltools.bench.sum", "version": 1, "rows": []}))
    # one bad file of several: reported, the others compared, exit 1
    res = cli("bench", "compare", base, str(junk), base)
    assert res.exit_code == 1 and "not JSON" in res.stdout and "not significant" in res.stdout
    # a bad baseline, or nothing readable to compare: one Error line, exit 2
    for argv in ([str(junk), base], [base, str(old)], [base, str(tmp_path / "missing.json")]):
        res = cli("bench", "compare", *argv)
        assert res.exit_code == 2 and res.stdout == "" and res.stderr.startswith("Error:"), argv
        assert res.stderr.count("\n") == 1
    res = cli("bench", "compare", base, base, "--plot", str(tmp_path / "no" / "x.png"))
    assert res.exit_code == 2 and "--plot" in res.stderr


def test_compare_plot(cli, tmp_path):
    pytest.importorskip("matplotlib")
    t = np.random.default_rng(2).normal(1.0, 0.02, 10)
    base = _results(tmp_path / "a.json", [("a", "ns", "lower", t), ("b", "GB/s", "higher", t)])
    new = _results(tmp_path / "b.json", [("a", "ns", "lower", t * 0.9), ("b", "GB/s", "higher", t * 0.9)])
    out = tmp_path / "cmp.png"
    res = cli("bench", "compare", base, new, "--plot", str(out))
    assert res.exit_code == 0, res.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------- against pyperf compare_to, on pyperf's own files

pyperf = pytest.importorskip("pyperf")
PYPERF_FILES = os.path.join(os.path.dirname(pyperf.__file__), "tests")


def _pyperf_verdicts(a, b):
    """{benchmark: (direction, significant)} from `python -m pyperf compare_to -v a b`."""
    out = subprocess.run([sys.executable, "-m", "pyperf", "compare_to", "-v", a, b], capture_output=True,
                         text=True, check=True).stdout
    verdicts, name, direction = {}, None, None
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and re.fullmatch(r"=+", lines[i + 1]) and line.strip():
            name = line.strip()
        m = re.search(r": [\d.]+x (faster|slower)$|: (no change)$", line)
        if m and name:
            direction = m.group(1) or "same"
        if line.startswith("Significant") and name:
            verdicts[name] = (direction, True)
        elif line.startswith("Not significant") and name:
            verdicts[name] = (direction, False)
    return verdicts


@pytest.mark.parametrize("a, b", [("mult_list_py36.json", "mult_list_py37.json"),
                                  ("mult_list_py36.json", "mult_list_py38.json"),
                                  ("mult_list_py37.json", "mult_list_py38.json"),
                                  ("mult_list_py36_tags.json", "mult_list_py37_tags.json")])
def test_verdicts_agree_with_pyperf_compare_to(a, b):
    from mltools.results.compare import compare_results

    pa, pb = os.path.join(PYPERF_FILES, a), os.path.join(PYPERF_FILES, b)
    if not (os.path.exists(pa) and os.path.exists(pb)):
        pytest.skip("pyperf's wheel does not ship its test files here")
    theirs = _pyperf_verdicts(pa, pb)
    report = compare_results(pa, [pb])
    ours = {c.name: c for c in report.comparisons[0].cases}
    assert set(theirs) == set(ours) and theirs
    for name, (direction, significant) in theirs.items():
        c = ours[name]
        assert c.significant == significant, (name, c.verdict_text, theirs[name])
        if significant:
            assert c.verdict == direction, name


def test_a_pyperf_file_against_itself_is_not_significant():
    from mltools.results.compare import compare_results

    telco = os.path.join(PYPERF_FILES, "telco.json")
    if not os.path.exists(telco):
        pytest.skip("pyperf's wheel does not ship its test files here")
    report = compare_results(telco, [telco])
    fc = report.comparisons[0]
    assert fc.cases and all(c.verdict == "not significant" and math.isclose(c.speedup, 1.0) for c in fc.cases)
    assert fc.machine_differences == ()


# ----------------------------------------------------------------- the machine and the run

def test_machine_load_and_cpus_agree_with_the_kernel():
    from mltools.env.machine import collect_machine, load_average

    m = collect_machine()
    load, _ = load_average()
    assert abs(load - os.getloadavg()[0]) < 1.0           # getloadavg(3), read independently
    usable = sorted(os.sched_getaffinity(0))
    assert m.usable_cpus == len(usable) and m.cpu_count == os.cpu_count()
    assert set(m.cpu_freq) <= {str(c) for c in usable}
    if m.cpu_freq_source == "cpuinfo":
        with open("/proc/cpuinfo") as fh:
            mhz = [float(l.split(":")[1]) for l in fh if l.startswith("cpu MHz")]
        assert all(min(mhz) - 1000 <= v <= max(mhz) + 1000 for v in m.cpu_freq.values())
    assert m.versions["mltools"] and m.python_version and m.kernel == os.uname().release


def test_machine_differences_name_what_differs():
    from mltools.env.machine import machine_differences

    a = {"cpu_model_name": "AMD EPYC", "isa": "x86-64-v4", "kernel": "6.1", "versions": {"numpy": "2.0"},
         "gpus": [{"name": "NVIDIA H100"}]}
    b = dict(a, kernel="6.8", versions={"numpy": "2.1"}, gpus=[{"name": "NVIDIA H200"}])
    assert machine_differences(a, b) == ["kernel: 6.1 -> 6.8", "GPUs: NVIDIA H100 -> NVIDIA H200",
                                         "numpy: 2.0 -> 2.1"]
    assert machine_differences(a, a) == []
    assert machine_differences(a, None) == ["machine not recorded in one file"]


def test_a_busy_machine_marks_the_run(monkeypatch):
    import dataclasses

    from mltools.env.machine import collect_machine
    from mltools.results import run as run_mod

    m = collect_machine()
    busy = run_mod.Recorder(("x",), threads=1, machine=dataclasses.replace(m, load_avg_1min=m.usable_cpus + 3.0))
    busy.add("k", "ns", "lower", [1.0, 1.01, 0.99])
    info = busy.finish()
    assert info.busy and info.noisy and info.noisy_cases == 0 and info.command == ("x",)
    # the benchmark's own threads are not other load: after a long run they make the whole average
    monkeypatch.setattr(run_mod, "load_average", lambda: (float(m.usable_cpus) + 0.5, None))
    quiet = run_mod.Recorder((), threads=m.usable_cpus, machine=dataclasses.replace(m, load_avg_1min=0.2))
    quiet._t0 -= 3600
    info = quiet.finish()
    assert not info.busy and info.other_load == pytest.approx(0.5, abs=0.01)
    assert quiet.add("none", "ns", "lower", [float("nan")]) is None
