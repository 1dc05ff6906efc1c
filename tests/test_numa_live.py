"""bench numa on this machine: real placement (the kernel as oracle), the CLI, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mltools.numa import _numa
from mltools.numa.bench import placement_findings
from mltools.numa.topology import read_topology

LIVE = read_topology("/")
NODES = [n.id for n in LIVE.nodes]
ALLOWED_CPUS = sorted(os.sched_getaffinity(0))
HOME = NODES[0]


def test_mbind_then_first_touch_puts_pages_on_the_node():
    size = 8 << 20
    bound, control = _numa.Mapping(size), _numa.Mapping(size)
    bound.advise_huge_pages(False)
    bound.bind([HOME])
    offsets = list(range(0, size, 4096))
    assert set(bound.page_nodes(offsets)) == {-2}            # -ENOENT: not faulted yet
    # touch from a pinned thread through the runner (write kernel writes array c)
    _numa.run_bandwidth("write", False, _numa.best_isa(), [ALLOWED_CPUS[0]], bound, None, bound,
                        size // 8, 1, True)
    assert set(bound.page_nodes(offsets)) == {HOME}
    assert set(control.page_nodes(offsets)) == {-2}          # untouched control buffer


def test_mbind_to_an_absent_node_fails():
    absent = max(NODES) + 1
    m = _numa.Mapping(1 << 20)
    with pytest.raises(OSError) as exc:
        m.bind([absent])
    assert exc.value.errno == 22


def test_mems_allowed_matches_proc_status():
    with open("/proc/self/status") as fh:
        line = next(l for l in fh if l.startswith("Mems_allowed_list:"))
    from mltools.numa.topology import parse_cpulist
    assert _numa.mems_allowed() == list(parse_cpulist(line.split(":", 1)[1]))


def test_pinning_outside_the_mask_fails():
    outside = next(c for c in range(4096) if c not in ALLOWED_CPUS)
    m = _numa.Mapping(1 << 16)
    with pytest.raises(OSError) as exc:
        _numa.run_bandwidth("read", False, "portable", [outside], m, None, None, 1024, 1, True)
    assert exc.value.cpu == outside


def _check_doc(doc, *, simulated):
    assert doc["schema"] == "mltools.bench.numa" and doc["version"] == 2
    assert doc["interrupted"] is False and doc["machine"]["cpu_model_name"] and doc["run"]["command"]
    cfg = doc["config"]
    cases = {c["name"]: c for c in doc["cases"]}
    rows, cols = len(cfg["cpu_nodes"]), len(cfg["mem_nodes"])
    assert doc["measured"] is True and doc["simulated"] is simulated
    assert isinstance(doc["threads"], int) and doc["threads"] >= 1
    for name, bw in doc["bandwidth_gbps"].items():
        assert len(bw["matrix"]) == rows and all(len(r) == cols for r in bw["matrix"])
        assert all(v > 0 for r in bw["matrix"] for v in r), name
        assert bw["threads"] == doc["threads"]
        assert bw["counted_bytes_per_element"] <= bw["estimated_dram_bytes_per_element"]
        # every figure carries its spread: min <= median <= best, and the case keeps every round
        for i, c in enumerate(cfg["cpu_nodes"]):
            for j, m in enumerate(cfg["mem_nodes"]):
                assert bw["min"][i][j] <= bw["median"][i][j] <= bw["matrix"][i][j]
                case = cases[f"bandwidth/{name}/cpu{c}/mem{m}"]
                assert len(case["samples"]) == cfg["repetitions"] and case["better"] == "higher"
                assert max(case["samples"]) == pytest.approx(bw["matrix"][i][j])
                assert case["stats"]["noisy"] == bw["noisy"][i][j]
                spread = (bw["matrix"][i][j] - bw["min"][i][j]) / bw["median"][i][j]
                assert bw["noisy"][i][j] or spread <= 0.10
    lat = doc["latency_ns"]
    assert len(lat["matrix"]) == rows and all(v > 0 for r in lat["matrix"] for v in r)
    for r0, r10, r50, r90, r100 in zip(lat["min"], lat["p10"], lat["matrix"], lat["p90"], lat["max"]):
        assert all(a <= b <= c <= d <= e for a, b, c, d, e in zip(r0, r10, r50, r90, r100))
    assert any(n.startswith("latency/") for n in cases)
    noisy = [n for n, c in cases.items() if c["stats"]["noisy"]]
    assert bool(noisy) == any(f["code"] == "NUMA_NOISY" for f in doc["findings"])
    if noisy:
        assert doc["inference"]["signature"] is None      # noisy figures are no evidence
    frac = doc["placement_check"]["fraction_on_expected_node"]
    assert all(f >= 0.99 for r in frac for f in r)
    assert doc["validation"]["passed"] is True and doc["validation"]["max_rel_error"] == 0.0
    assert len(doc["jobs"]) == rows * cols


def test_quick_run_json(cli):
    res = cli("bench", "numa", "--quick", "--size", "8M", "--latency-size", "8M", "--json")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    _check_doc(doc, simulated=False)
    assert set(doc["bandwidth_gbps"]) == {"read", "copy", "copy_nt", "triad"}
    assert doc["inference"]["mode"] == ("single_node" if len(NODES) == 1 else doc["inference"]["mode"])


@pytest.mark.skipif(len(ALLOWED_CPUS) < 2, reason="needs 2 usable CPUs")
def test_simulated_nodes_run_the_whole_matrix(cli):
    res = cli("bench", "numa", "--simulate-nodes", "2", "--quick", "--size", "4M", "--latency-size", "4M",
              "--kernels", "read,triad_nt,write", "--json")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    _check_doc(doc, simulated=True)
    assert doc["config"]["cpu_nodes"] == [0, 1] and doc["config"]["mem_nodes"] == [0, 1]
    assert [j["bind_node"] for j in doc["jobs"]] == [HOME] * 4
    cpus = [j["cpus"] for j in doc["jobs"]]
    assert cpus[0] != cpus[2]                                  # the two pseudo-nodes' threads differ
    assert doc["inference"]["mode"] == "not_inferred" and doc["inference"]["refused"]
    text = cli("bench", "numa", "--simulate-nodes", "2", "--quick", "--size", "4M", "--latency-size", "4M",
               "--kernels", "read")
    assert text.exit_code == 0 and "simulated" in text.stdout and "node 1" in text.stdout


def test_latency_sweep_sees_the_cache_levels(cli):
    from mltools.numa.bench import latency_sweep
    pts = latency_sweep(ALLOWED_CPUS[0], HOME, 64 << 20, 1, True, sizes=(16 << 10, 512 << 10, 64 << 20),
                        page_modes=("thp",))
    med = [p.median_ns for p in pts]
    assert med[0] < med[1] < med[2], med


def test_latency_in_both_page_modes_with_thp_effective(cli):
    res = cli("bench", "numa", "--kernels", "read", "--reps", "2", "--size", "4M", "--latency-size", "16M", "--json")
    assert res.exit_code == 0, res.stderr
    lat = res.json()["latency_ns"]
    assert lat["page_mode"] == "thp" and lat["other_pages"]["page_mode"] == "4k"
    thp, small = lat["thp_effective"][0][0], lat["other_pages"]["thp_effective"][0][0]
    assert small == 0.0                                   # MADV_NOHUGEPAGE: no AnonHugePages
    if LIVE.thp in ("always", "madvise"):
        assert thp is not None and 0.0 < thp <= 1.0       # MADV_HUGEPAGE on a 2 MiB-aligned ring
    quick = cli("bench", "numa", "--quick", "--kernels", "read", "--size", "4M", "--latency-size", "16M", "--json")
    assert quick.json()["latency_ns"]["other_pages"] is None


def test_nodes_naming_an_absent_node_is_exit_2(cli):
    absent = max(NODES) + 1
    res = cli("bench", "numa", "--quick", "--nodes", str(absent))
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.startswith("Error: --nodes") and res.stderr.count("\n") == 1


def test_cpu_outside_the_affinity_mask_is_exit_2():
    """As `taskset -c 0 mltools bench numa --cpus 1`: a real affinity mask, in a child process."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 usable CPUs")
    first, other = ALLOWED_CPUS[0], ALLOWED_CPUS[1]
    code = ("import os, sys; os.sched_setaffinity(0, {%d}); from mltools.cli import main; "
            "main(['bench', 'numa', '--quick', '--cpus', '%d'])" % (first, other))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLTOOLS_", "LD_"))}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("Error: --cpus") and p.stderr.count("\n") == 1 and "affinity" in p.stderr


def test_other_bad_input_is_exit_2(cli):
    for argv in (["--threads", "999"], ["--kernels", "read,bogus"], ["--size", "lots"],
                 ["--simulate-nodes", "999"], ["--isa", "avx9000"], ["--nodes", "x"]):
        res = cli("bench", "numa", "--quick", *argv)
        assert res.exit_code == 2 and res.stdout == "", argv
        assert res.stderr.startswith("Error: ") and res.stderr.count("\n") == 1, (argv, res.stderr)


def test_placement_below_threshold_is_a_finding():
    assert placement_findings([0], [0], [[1.0]]) == []
    found = placement_findings([0, 1], [0, 1], [[1.0, 0.5], [0.995, 1.0]])
    assert len(found) == 1 and found[0].severity.value == "error" and "cpu 0 mem 1: 0.500" in found[0].message


def test_problem_findings_exit_1(cli, monkeypatch):
    """The exit-1 path: a report with an ERROR finding (placement or validation)."""
    import dataclasses

    import mltools.numa.bench as bench_mod
    real = bench_mod.run_numa_bench

    def with_bad_placement(opts, progress=None, command=()):
        r = real(opts, progress, command)
        return dataclasses.replace(r, findings=r.findings + tuple(placement_findings([0], [0], [[0.5]])))

    monkeypatch.setattr(bench_mod, "run_numa_bench", with_bad_placement)
    res = cli("bench", "numa", "--quick", "--kernels", "read", "--size", "1M", "--no-latency", "--json")
    assert res.exit_code == 1
    assert any(f["code"] == "NUMA_PLACEMENT" for f in res.json()["findings"])


def test_live_topology_agrees_with_proc():
    assert LIVE.live and LIVE.kernel == os.uname().release
    online = open("/sys/devices/system/cpu/online").read().strip()
    from mltools.numa.topology import parse_cpulist
    assert set(parse_cpulist(LIVE.online_cpus)) == set(parse_cpulist(online))
    assert set(parse_cpulist(LIVE.allowed.cpus)) == set(ALLOWED_CPUS)


def test_hypervisor_vendor_matches_lscpu():
    import re
    import shutil
    if not shutil.which("lscpu"):
        pytest.skip("no lscpu")
    out = subprocess.run(["lscpu"], capture_output=True, text=True, env={"LC_ALL": "C", "PATH": os.environ["PATH"]}).stdout
    m = re.search(r"^Hypervisor vendor:\s*(.+)$", out, re.M)
    if m is None:
        assert LIVE.hypervisor is None or not LIVE.cpu.hypervisor_flag
    else:
        assert LIVE.virtualized and LIVE.hypervisor == m.group(1).strip()


def test_cli_sweep_and_explicit_node(cli):
    res = cli("bench", "numa", "--quick", "--nodes", str(HOME), "--kernels", "read", "--size", "4M",
              "--latency-size", "1M", "--sweep", "--json")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["config"]["cpu_nodes"] == [HOME] and doc["config"]["mem_nodes"] == [HOME]
    pts = doc["latency_sweep"]
    assert [(p["ring_bytes"], p["page_mode"]) for p in pts] == [
        (s, m) for m in ("thp", "4k") for s in (16 << 10, 64 << 10, 256 << 10, 1 << 20)]
    assert all(p["p10_ns"] <= p["median_ns"] <= p["p90_ns"] for p in pts)


@pytest.mark.parametrize("isa", ["portable", "sse2"])
def test_cli_isa_choice_is_used_and_validated(cli, isa):
    if not _numa.isa_usable(isa):
        pytest.skip(f"{isa} not usable here")
    res = cli("bench", "numa", "--quick", "--isa", isa, "--kernels", "copy_nt,triad", "--size", "2M",
              "--no-latency", "--json")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["config"]["isa"] == isa and doc["validation"]["passed"] and doc["latency_ns"] is None


def test_output_and_plot_files(cli, tmp_path):
    out, png = tmp_path / "numa.json", tmp_path / "numa.png"
    argv = ["bench", "numa", "--quick", "--size", "4M", "--latency-size", "4M", "--kernels", "read",
            "--output", str(out)]
    try:
        import matplotlib  # noqa: F401
        argv += ["--plot", str(png)]
    except ImportError:
        png = None
    res = cli(*argv)
    assert res.exit_code in (0, 1), res.stderr
    assert "median (min-max)" in res.stdout and "machine: " in res.stdout
    doc = json.loads(out.read_text())
    assert doc["schema"] == "mltools.bench.numa" and doc["cases"]
    if png is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv", [["--output", "/no/such/dir/x.json"], ["--plot", "/no/such/dir/x.png"],
                                  ["--topology-only", "--plot", "x.png"]])
def test_output_files_are_checked_before_measuring(cli, argv):
    res = cli("bench", "numa", "--quick", *argv)
    assert res.exit_code == 2 and res.stdout == "" and res.stderr.startswith("Error:")


def test_progress_counts_every_measurement():
    from mltools.numa.bench import BenchOptions, run_numa_bench

    calls = []
    run_numa_bench(BenchOptions(quick=True, size_bytes=1 << 20, latency_bytes=1 << 20, kernels=("read", "copy")),
                   progress=lambda done, total=None, detail="": calls.append((done, total)))
    totals = {t for _, t in calls}
    assert len(totals) == 1 and calls[-1][0] == calls[-1][1] == len(NODES) ** 2 * 3


def test_interrupted_run_prints_the_pairs_that_finished(tmp_path):
    import signal

    from terminal import interrupt_after_progress

    out = tmp_path / "partial.json"
    proc, stderr = interrupt_after_progress(
        ["bench", "numa", "--json", "--output", str(out), "--simulate-nodes", "2", "--size", "64M", "--reps", "40",
         "--no-latency"], signal.SIGTERM, label="bench numa")
    stdout = proc.stdout
    assert proc.returncode == 143, stderr
    doc = json.loads(stdout)
    assert doc["interrupted"] is True and json.loads(out.read_text())["interrupted"] is True
    measured = [v for bw in doc["bandwidth_gbps"].values() for row in bw["matrix"] for v in row if v is not None]
    total = sum(len(row) for bw in doc["bandwidth_gbps"].values() for row in bw["matrix"])
    assert 0 < len(measured) < total and len(doc["cases"]) == len(measured)
    assert "Traceback" not in stderr
