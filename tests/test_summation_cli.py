"""`mltools bench sum`: the JSON document, the table, and its errors."""
import importlib.util
import json

import pytest


def test_bench_sum_quick_json(cli):
    res = cli("bench", "sum", "--quick", "--json", "--dtype", "float64", "--layout", "1d,axis0")
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["schema"] == "mltools.bench.sum" and doc["version"] == 1
    assert doc["isa"] in doc["isas_available"]
    rows = doc["rows"]
    methods = {r["method"] for r in rows}
    assert {"numpy.sum", "math.fsum", "naive", "pairwise", "kahan", "neumaier", "sum2", "exact"} <= methods
    for r in rows:
        assert r["ns_per_element_min"] > 0 and r["ns_per_element_median"] >= r["ns_per_element_min"]
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
