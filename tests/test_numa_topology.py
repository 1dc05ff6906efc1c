"""bench numa topology and inference: real sysfs dumps and synthetic roots, lstopo as the oracle."""
from __future__ import annotations

import shutil

import pytest

from numa_fixtures import SYNTHETIC, TOP_DIRS, fixtures_dir, lstopo_view, scratch_dir, synth_cxl, unpack_all
from mltools.numa.bench import plan_jobs
from mltools.numa.infer import infer_mode
from mltools.numa.topology import format_cpulist, parse_cpulist, read_topology

needs_lstopo = pytest.mark.skipif(not (shutil.which("lstopo-no-graphics") or shutil.which("lstopo")),
                                  reason="needs lstopo (Debian hwloc)")
needs_fixtures = pytest.mark.skipif(fixtures_dir() is None, reason="sysfs fixtures not found")


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    dest = scratch_dir(tmp_path_factory.mktemp("sysfs"))
    yield unpack_all(dest)
    shutil.rmtree(dest, ignore_errors=True)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    base = scratch_dir(tmp_path_factory.mktemp("synth"))
    yield {name: make(base / name) for name, make in SYNTHETIC.items()}
    shutil.rmtree(base, ignore_errors=True)


def test_cpulist_round_trip():
    assert parse_cpulist("0-3,8,10-11\n") == (0, 1, 2, 3, 8, 10, 11)
    assert parse_cpulist("") == ()
    assert parse_cpulist("0-7:2") == (0, 2, 4, 6)
    assert format_cpulist([11, 10, 8, 3, 2, 1, 0]) == "0-3,8,10-11"
    assert format_cpulist([]) == ""


def _compare_with_hwloc(topo, view):
    """Packages, node -> package, node cpusets and memory, and the SLIT, as lstopo sees them."""
    assert sorted(view.packages) == [p.id for p in topo.packages]
    for p in topo.packages:
        assert set(p.cpu_ids()) == set(view.packages[p.id]), f"package {p.id} cpus"
    assert sorted(view.nodes) == [n.id for n in topo.nodes]
    for n in topo.nodes:
        assert view.node_memory[n.id] == n.mem_total_bytes, f"node {n.id} memory"
        if n.cpu_count:
            assert set(n.cpu_ids()) == set(view.nodes[n.id]), f"node {n.id} cpus"
        if len(n.packages) == 1:
            assert n.id in view.package_nodes[n.packages[0]], f"node {n.id} package"
        else:   # CPU-less or spanning nodes: hwloc puts them above or beside packages
            pass
    for p in topo.packages:
        ours = {n for n in p.nodes}
        theirs = {n for n in view.package_nodes.get(p.id, ()) if topo.node(n).cpu_count}
        assert ours == theirs or any(len(topo.node(n).packages) > 1 for n in ours), f"package {p.id} nodes"
    if view.distances:
        assert topo.distance.source == "slit"
        assert tuple(view.distance_nodes) == topo.distance.nodes
        assert [list(r) for r in topo.distance.matrix] == view.distances


@needs_lstopo
@needs_fixtures
@pytest.mark.parametrize("stem", sorted(TOP_DIRS))
def test_parser_matches_lstopo_on_real_dumps(dumps, stem):
    root = dumps[stem]
    topo = read_topology(str(root))
    # The cgroup dump: lstopo's default view is the allowed part; compare the whole machine.
    view = lstopo_view(root, disallowed=True)
    _compare_with_hwloc(topo, view)
    allowed = lstopo_view(root)
    assert set(parse_cpulist(topo.allowed.cpus)) == set(allowed.allowed_cpus)
    assert set(parse_cpulist(topo.allowed.mems)) == set(allowed.allowed_nodes)


@needs_lstopo
@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_parser_matches_lstopo_on_synthetic_roots(synthetic, name):
    _compare_with_hwloc(read_topology(str(synthetic[name])), lstopo_view(synthetic[name]))


@needs_fixtures
def test_quirks_survived(dumps):
    arm = read_topology(str(dumps["128arm-2pa2n8cluster4co"]))
    assert [p.id for p in arm.packages] == [36, 8442]
    assert arm.node(0).cpus == "0-31"                       # the file is b"0-31\n\x00"
    assert "trailing NUL bytes in sysfs files" in arm.quirks
    sparse = read_topology(str(dumps["48amd64-4pa2n6c-sparse"]))
    assert [n.id for n in sparse.nodes] == [0, 1, 2, 33, 34, 45, 72, 73]
    assert sparse.distance.nodes == (0, 1, 2, 33, 34, 45, 72, 73)
    assert sparse.node(33).packages == (1,)
    off = read_topology(str(dumps["offline-cpu0-node0"]))
    assert off.offline_nodes == (0,) and [n.id for n in off.nodes] == [1]
    assert off.node(1).cpus == "5,7,9,11,13,15,17,19"      # cpulist also names offline 1,3,21,23
    assert off.node(1).cpus_listed_offline == "1,3,21,23"
    assert off.distance.matrix == ((10,),)                  # the row covers possible nodes 0-1
    skx = read_topology(str(dumps["32intel64-2p8co2t+8ve"]))
    assert all(n.has_cpu for n in skx.nodes)                # although node/has_cpu is empty
    cg = read_topology(str(dumps["32amd64-4s2n4c-cgroup2"]))
    assert (cg.allowed.cpus, cg.allowed.mems, cg.allowed.cgroup) == ("0-5", "0-5", "v2")
    msc = read_topology(str(dumps["memorysidecaches"]))
    caches = msc.node(0).memory_side_caches
    assert caches and caches[0].size_bytes == 96 * 2**30
    assert msc.node(0).hugepages["2048kB"] == {"total": 0, "free": 0}
    assert msc.node(0).hmat["read_latency_ns"] == 0         # present but zero in this dump


EXPECTED = {
    "memorysidecaches": ("SNC2", "high"),
    "32intel64-2p8co2t+8ve": ("SNC_off", "high"),
    "32em64t-2n8c+dax+nvme+mic+dimms": ("one_node_per_package", "high"),
    "offline-cpu0-node0": ("snoop_undetermined", "none"),
    "64amd64-4s2n4ca2co": ("die-NUMA", "high"),
    "48amd64-4pa2n6c-sparse": ("die-NUMA", "high"),
    "128arm-2pa2n8cluster4co": ("sub_socket_numa", "medium"),
    "32amd64-4s2n4c-cgroup2": ("die-NUMA", "high"),
}


@needs_fixtures
@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_inference_on_real_dumps(dumps, stem):
    inf = infer_mode(read_topology(str(dumps[stem])))
    assert (inf.mode, inf.confidence) == EXPECTED[stem]
    assert inf.evidence and not inf.virtual_topology
    if stem == "memorysidecaches":
        assert any("memory-side cache" in e for e in inf.evidence) and inf.nodes_per_package == 2
    if stem == "offline-cpu0-node0":
        assert set(inf.alternatives) == {"early_snoop", "home_snoop", "home_snoop_dir_osb"}
        assert any("offline node" in e for e in inf.evidence)
    if stem == "128arm-2pa2n8cluster4co":
        assert inf.nodes_per_package == 2


SYNTH_EXPECTED = {
    "cod": ("COD", "high", ()),
    "nps4": ("NPS4", "high", ()),
    "l3_as_numa": ("L3-as-NUMA", "high", ()),
    "nps0": ("NPS0", "high", ("node_interleave",)),
    "cxl": ("SNC_off", "high", ()),
}


@pytest.mark.parametrize("name", sorted(SYNTH_EXPECTED))
def test_inference_on_synthetic_roots(synthetic, name):
    topo = read_topology(str(synthetic[name]))
    inf = infer_mode(topo)
    assert (inf.mode, inf.confidence, inf.alternatives) == SYNTH_EXPECTED[name]
    if name == "cxl":
        assert topo.memory_only_nodes == (2,)
        assert any("memory-only" in e for e in inf.evidence)


def test_nps4_that_matches_l3_count_lists_l3_as_numa(tmp_path):
    from numa_fixtures import _chunks, SynthNode, write_root
    pk = {0: list(range(32)), 1: list(range(32, 64))}
    quads = _chunks(pk[0], 4) + _chunks(pk[1], 4)
    dist = [[10 if i == j else (12 if i // 4 == j // 4 else 32) for j in range(8)] for i in range(8)]
    root = write_root(tmp_path / "r", vendor="AuthenticAMD", family=0x19, model=0x11, model_name="AMD EPYC 9124",
                      packages=pk, nodes=[SynthNode(i, q) for i, q in enumerate(quads)], distances=dist,
                      l3_groups=quads)
    inf = infer_mode(read_topology(str(root)))
    assert inf.mode == "NPS4" and inf.alternatives == ("L3-as-NUMA",)


def test_hypervisor_caps_confidence(tmp_path):
    inf = infer_mode(read_topology(str(synth_cxl(tmp_path / "vm", hypervisor=True))))
    assert inf.mode == "SNC_off" and inf.confidence == "low" and inf.virtual_topology


@needs_fixtures
def test_dry_run_plan_has_every_pair(dumps):
    topo = read_topology(str(dumps["memorysidecaches"]))
    plan = plan_jobs(topo, threads=4)
    assert len(plan.jobs) == 16
    assert {(j.cpu_node, j.mem_node) for j in plan.jobs} == {(c, m) for c in range(4) for m in range(4)}
    for j in plan.jobs:
        assert j.bind_node == j.mem_node and j.threads == 4
        assert j.cpus == topo.node(j.cpu_node).cpu_ids()[:4]        # node 0: 0,4,8,12
    assert plan.jobs[0].cpus == (0, 4, 8, 12)


def test_plan_has_no_cpu_job_for_memory_only_nodes(synthetic):
    topo = read_topology(str(synthetic["cxl"]))
    plan = plan_jobs(topo)
    assert plan.cpu_nodes == (0, 1) and plan.mem_nodes == (0, 1, 2)
    assert len(plan.jobs) == 6 and all(j.cpu_node != 2 for j in plan.jobs)
    assert plan.threads == 8


@needs_fixtures
def test_plan_respects_the_cgroup(dumps):
    topo = read_topology(str(dumps["32amd64-4s2n4c-cgroup2"]))
    plan = plan_jobs(topo)
    # CPUs 0-5 allowed: node 0 has 0-3, node 1 has 4-5; memory on nodes 0-5.
    assert plan.cpu_nodes == (0, 1) and plan.mem_nodes == (0, 1, 2, 3, 4, 5)
    assert plan.threads == 2 and len(plan.jobs) == 12


@needs_fixtures
@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_cli_topology_only_on_every_dump(cli, dumps, stem):
    res = cli("bench", "numa", "--topology-only", "--sysfs-root", dumps[stem], "--json")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["schema"] == "mltools.bench.numa" and doc["version"] == 2
    assert doc["inference"]["mode"] == EXPECTED[stem][0]
    assert doc["inference"]["confidence"] == EXPECTED[stem][1]
    for n in doc["topology"]["nodes"]:
        assert {"id", "cpus", "mem_total_bytes"} <= set(n)
    for p in doc["topology"]["packages"]:
        assert {"id", "nodes"} <= set(p)
    assert doc["measured"] is False
    text = cli("bench", "numa", "--topology-only", "--sysfs-root", dumps[stem])
    assert text.exit_code == 0 and "Inference: " + EXPECTED[stem][0] in text.stdout


@needs_fixtures
def test_cli_dry_run_lists_jobs(cli, dumps):
    res = cli("bench", "numa", "--dry-run", "--sysfs-root", dumps["memorysidecaches"], "--json")
    assert res.exit_code == 0, res.stderr
    jobs = res.json()["jobs"]
    assert len(jobs) == 16 and jobs[0]["cpus"][:4] == [0, 4, 8, 12]


def test_missing_sysfs_root_is_one_line_exit_2(cli, tmp_path):
    res = cli("bench", "numa", "--topology-only", "--sysfs-root", tmp_path / "nowhere")
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.startswith("Error: ") and res.stderr.count("\n") == 1 and "nowhere" in res.stderr
    res = cli("bench", "numa", "--topology-only", "--sysfs-root", tmp_path)   # exists, but no sys/
    assert res.exit_code == 2 and res.stderr.count("\n") == 1


@needs_fixtures
def test_measuring_a_dump_is_refused(cli, dumps):
    res = cli("bench", "numa", "--quick", "--sysfs-root", dumps["memorysidecaches"])
    assert res.exit_code == 2 and "--topology-only" in res.stderr and res.stderr.count("\n") == 1


@needs_fixtures
def test_measured_signature_for_haswell_snoop_modes(dumps):
    from mltools.numa.infer import measured_signature
    topo = read_topology(str(dumps["offline-cpu0-node0"]))
    inf = infer_mode(topo)
    es = measured_signature(inf, topo, (0, 1), (0, 1), {"read": [[60.0, 9.0], [9.0, 60.0]]},
                            [[90.0, 150.0], [150.0, 90.0]])
    assert es.bandwidth_remote_over_local == pytest.approx(0.15)
    assert es.latency_remote_over_local == pytest.approx(150 / 90)
    assert "Early Snoop" in es.consistent_with and es.confidence == "low"
    hs = measured_signature(inf, topo, (0, 1), (0, 1), {"read": [[60.0, 24.0], [24.0, 60.0]]}, None)
    assert "Home Snoop" in hs.consistent_with
    assert measured_signature(inf, topo, (0,), (0,), {"read": [[60.0]]}, None) is None   # no remote pair


@needs_fixtures
def test_simulated_plan_splits_cpus_and_binds_one_node(dumps):
    topo = read_topology(str(dumps["memorysidecaches"]))
    plan = plan_jobs(topo, simulate_nodes=4)
    assert plan.simulated and plan.cpu_nodes == (0, 1, 2, 3) and plan.threads == 20
    assert {j.bind_node for j in plan.jobs} == {0} and len(plan.jobs) == 16
    assert plan.node_cpus[0] == tuple(range(20)) and plan.node_cpus[3] == tuple(range(60, 80))
