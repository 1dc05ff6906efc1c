"""`mltools bench sum`: the JSON document, the table, and its errors."""
import importlib.util
import json

import pytest


def test_bench_sum_quick_json(cli):
    res = cli("bench", "sum", "--quick", "--json", "--dtype", "float64", "--layout", "1d,axis0")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["schema"] == "mltools.bench.sum" and doc["version"] == 2
    assert doc["isa"] in doc["isas_available"]
    assert doc["interrupted"] is False and doc["machine"]["cpu_model_name"]
    assert doc["run"]["command"][:3] == ["mltools", "bench", "sum"] and "--quick" in doc["run"]["command"]
    cases = {c["name"]: c for c in doc["cases"]}
    assert len(cases) == len(doc["rows"]) and doc["run"]["cases"] == len(cases)
    rows = doc["rows"]
    methods = {r["method"] for r in rows}
    assert {"numpy.sum", "math.fsum", "naive", "pairwise", "kahan", "neumaier", "sum2", "exact"} <= methods
    for r in rows:
        assert r["ns_per_element_min"] > 0 and r["ns_per_element_median"] >= r["ns_per_element_min"]
        case = cases[f"{r['dataset']}/{r['dtype']}/{r['layout']}/n={r['n']}/{r['method']}"]
        assert len(case["samples"]) == 3 and case["unit"] == "ns/element" and case["better"] == "lower"
        st = case["stats"]
        assert st["min"] == pytest.approx(r["ns_per_element_min"]) and st["max"] == pytest.approx(r["ns_per_element_max"])
        assert st["ci_low"] <= st["median"] <= st["ci_high"] and st["noisy"] == r["noisy"]
        if r["method"] == "numpy.sum":
            assert r["ratio_to_numpy"] == 1.0
        if r["method"] in ("exact", "math.fsum"):
            assert r["error_ulps"] == 0.0           # both are correctly rounded
    ill = [r for r in rows if r["dataset"] == "ill" and r["method"] == "exact" and r["layout"] == "1d"]
    assert ill and all(r["condition_number"] > 1e6 for r in ill)
    sweep = {(p["target_condition_number"], p["method"]): p["relative_error"] for p in doc["cond_sweep"]}
    assert all(v == 0.0 for (t, m), v in sweep.items() if m == "exact")


def test_bench_sum_table(cli):
    res = cli("bench", "sum", "--quick", "--dtype", "float32", "--layout", "1d", "--data", "uniform",
              "--methods", "pairwise,exact")
    assert res.exit_code == 0, res.stderr
    assert "kernels: " in res.stdout and "numpy.sum(dtype=float64)" in res.stdout
    assert "relative error against condition number" in res.stdout


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "1e3,abc"], "not a number"),
    (["--dtype", "float16"], "float16"),
    (["--methods", "fast"], "fast"),
])
def test_bench_sum_bad_options_exit_2(cli, argv, message):
    res = cli("bench", "sum", "--quick", *argv)
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.startswith("Error:") and message in res.stderr and res.stderr.count("\n") == 1


def test_bench_sum_forced_isa_that_is_missing(cli):
    res = cli("bench", "sum", "--quick", env={"MLTOOLS_SUM_ISA": "sse9"})
    assert res.exit_code == 2 and "MLTOOLS_SUM_ISA" in res.stderr


def test_bench_sum_plot(cli, tmp_path):
    out = tmp_path / "sum.png"
    res = cli("bench", "sum", "--quick", "--dtype", "float64", "--layout", "1d", "--plot", str(out))
    if importlib.util.find_spec("matplotlib") is None:
        assert res.exit_code == 2 and "matplotlib" in res.stderr and res.stderr.count("\n") == 1
        assert not out.exists()
    else:
        assert res.exit_code == 0, res.stderr
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_sum_output_file_is_the_json_document(cli, tmp_path):
    out = tmp_path / "run.json"
    res = cli("bench", "sum", "--quick", "--dtype", "float64", "--layout", "1d", "--data", "uniform",
              "--methods", "kahan", "--output", str(out))
    assert res.exit_code == 0, res.stderr
    assert "machine: " in res.stdout and "noisy: " in res.stdout and "95% CI" in res.stdout
    doc = json.loads(out.read_text())
    assert doc["schema"] == "mltools.bench.sum" and doc["cases"] and doc["run"]["started"]
    # and bench compare reads it: a run against itself is not significant anywhere
    cmp = cli("bench", "compare", str(out), str(out), "--json")
    assert cmp.exit_code == 0 and all(c["verdict"] == "not significant"
                                      for c in cmp.json()["comparisons"][0]["cases"])


@pytest.mark.parametrize("option", ["--output", "--plot"])
def test_bench_sum_checks_output_files_before_running(cli, tmp_path, option):
    res = cli("bench", "sum", "--sizes", "1e7", option, str(tmp_path / "no" / "such" / "x"))
    assert res.exit_code == 2 and option in res.stderr and res.stdout == ""


def test_bench_sum_interrupted_prints_what_finished(tmp_path):
    import signal

    from terminal import interrupt_after_progress

    out = tmp_path / "partial.json"
    proc, stderr = interrupt_after_progress(
        ["bench", "sum", "--json", "--output", str(out), "--sizes", "1e3,2e3,3e3,4e3,5e3,6e3", "--repeats", "200",
         "--min-time", "0.005", "--methods", "naive", "--dtype", "float64", "--layout", "1d", "--data", "uniform"],
        signal.SIGINT, label="bench sum")
    stdout = proc.stdout
    assert proc.returncode == 130, stderr
    doc = json.loads(stdout)                       # one valid document, marked
    assert doc["interrupted"] is True and doc["rows"] and len(doc["rows"]) < 18
    assert not doc["cond_sweep"] and any("interrupted" in n for n in doc["notes"])
    assert json.loads(out.read_text())["interrupted"] is True
    assert "Traceback" not in stderr and "Aborted" not in stderr
