"""bench numa topology and inference, with lstopo (Debian's hwloc) as the oracle.

Every dump in ../shared/fixtures/sysfs and every synthetic root the tests write
is read by the parser and by lstopo; nodes and their CPUs and memory, packages
and the nodes they hold, the SLIT, the allowed CPUs and nodes, memory kinds,
and the PCI devices with their locality and tree must agree, except where
hwloc differs on purpose. Those differences are listed in KNOWN_DIFFERENCES
with the reason, and the test fails when one of them goes away as well as
when a new one appears.
"""
from __future__ import annotations

import shutil

import pytest

import hwloc_oracle
import numa_synth
from numa_fixtures import (EDGE_CASES, SYNTHETIC, fixtures_dir, scratch_dir, stems, synth_cxl, unpacked)
from mltools.numa.bench import plan_jobs
from mltools.numa.cpulist import format_cpulist, format_cpumask, parse_cpulist, parse_cpumask
from mltools.numa.infer import infer_mode
from mltools.numa.pci import device_kind, relation
from mltools.numa.topology import read_topology

needs_lstopo = pytest.mark.skipif(hwloc_oracle.lstopo_exe() is None, reason="needs lstopo (Debian hwloc)")
needs_fixtures = pytest.mark.skipif(fixtures_dir() is None, reason="sysfs fixtures not found")
STEMS = stems()


@pytest.fixture(scope="module")
def dumps():
    return unpacked()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The small synthetic roots, the edge cases, and the GPU servers, written once."""
    base = scratch_dir(tmp_path_factory.mktemp("synth"))
    roots = {name: make(base / name) for name, make in {**SYNTHETIC, **EDGE_CASES}.items()}
    roots.update({name: numa_synth.write(base / name, name) for name in numa_synth.SERVERS})
    yield roots
    shutil.rmtree(base, ignore_errors=True)


def test_cpulist_and_cpumask_round_trip():
    assert parse_cpulist("0-3,8,10-11\n") == (0, 1, 2, 3, 8, 10, 11)
    assert parse_cpulist("") == ()
    assert parse_cpulist("0-7:2") == (0, 2, 4, 6)
    assert format_cpulist([11, 10, 8, 3, 2, 1, 0]) == "0-3,8,10-11"
    assert format_cpulist([]) == ""
    assert parse_cpumask("00000000,0000ff00") == tuple(range(8, 16))
    assert parse_cpumask("0x1,,0x3") == (0, 1, 64)            # hwloc style: empty word = 0
    assert format_cpumask(range(8, 16)) == "0000ff00"
    assert parse_cpumask(format_cpumask([0, 33, 200])) == (0, 33, 200)


# ------------------------------------------------------------------ comparison with lstopo

# (root, what) -> why hwloc differs on purpose
KNOWN_DIFFERENCES = {
    ("40intel64-2g2n4c+pcilocality", "pci 0000:43:00.0 locality"):
        "every local_cpus lists all 40 CPUs, so hwloc attaches everything to the machine; the QLogic HCA's "
        "numa_node says 2, which we use and flag as contradicting local_cpus (hwloc never reads numa_node)",
    ("buggy_numa", "nodes"):
        "every node lists every CPU: hwloc keeps node 0 and ignores the nodes that overlap it; we keep all "
        "four and refuse to infer a mode (buggy_sysfs)",
    ("buggy_numa", "allowed nodes"): "follows from hwloc dropping nodes 1-3",
    ("gh200_like", "nodes"):
        "hwloc drops NVIDIA GPU-memory nodes (numa_status) unless HWLOC_KEEP_NVIDIA_GPU_NUMA_NODES=1; we keep "
        "node 1 and call it gpu_memory (checked against hwloc with that variable set)",
    ("gh200_like", "distances"): "follows from hwloc dropping node 1",
    ("gh200_like", "allowed nodes"): "follows from hwloc dropping node 1",
    ("cxl_dax", "node 2 memory kind"):
        "hwloc 2.9 has no CXL rule: a kmem DAX device that is not on an NVDIMM bus is SPM to it; we see the CXL "
        "region (ACPI0017, decoder) in its path and say cxl",
}


def _check_against_hwloc(name, root):
    topo = read_topology(str(root))
    view = hwloc_oracle.view(root)
    diffs = hwloc_oracle.differences(topo, view)
    known = {what for (where, what) in KNOWN_DIFFERENCES if where == name}
    assert set(diffs) == known, {k: v for k, v in diffs.items() if k not in known} or f"no longer differs: {known}"
    return topo, view


@needs_lstopo
@needs_fixtures
@pytest.mark.parametrize("stem", STEMS)
def test_parser_matches_lstopo_on_every_dump(dumps, stem):
    _check_against_hwloc(stem, dumps[stem])


@needs_lstopo
@pytest.mark.parametrize("name", sorted({**SYNTHETIC, **EDGE_CASES, **numa_synth.SERVERS}))
def test_parser_matches_lstopo_on_synthetic_roots(synthetic, name):
    topo, view = _check_against_hwloc(name, synthetic[name])
    if name in numa_synth.SERVERS:
        assert view.pci, "lstopo must see the PCI tree of a synthetic server"


@needs_lstopo
def test_gpu_memory_node_matches_hwloc_when_kept(synthetic):
    view = hwloc_oracle.view(synthetic["gh200_like"], {"HWLOC_KEEP_NVIDIA_GPU_NUMA_NODES": "1"})
    topo = read_topology(str(synthetic["gh200_like"]))
    assert view.nodes[1].subtype == "GPUMemory" and view.nodes[1].memory == topo.node(1).mem_total_bytes
    assert topo.node(1).gpu_busid == "0009:01:00.0"
    kinds = {c.subject: c.value for c in infer_mode(topo).memory_nodes}
    assert kinds["node 1 memory"] == "gpu_memory"
    assert all(kinds[f"node {n} memory"] == "empty" for n in range(2, 9))


@needs_fixtures
def test_quirks_survived(dumps):
    arm = read_topology(str(dumps["128arm-2pa2n8cluster4co"]))
    assert [p.physical_id for p in arm.packages] == [36, 8442] and [p.id for p in arm.packages] == [0, 1]
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
    assert msc.node(0).hmat.read_latency_ns == 0            # present but zero in this dump


@needs_fixtures
def test_what_older_kernels_wrote(dumps):
    fsb = read_topology(str(dumps["16em64t-4s2c2t"]))      # nodes only as cpumap masks, no node/online
    assert fsb.node(0).cpus == "0-15" and fsb.node(0).cpus_source == "cpumap" and not fsb.memory_only_nodes
    ia64 = read_topology(str(dumps["16ia64-8n2s"]))         # package ids repeat across boards
    assert len(ia64.packages) == 16 and ia64.cpu.architecture == "ia64"
    assert [p.physical_id for p in ia64.packages][:4] == [0, 0, 512, 512]
    assert "physical_package_id repeats across packages (told apart by their sibling masks)" in ia64.quirks
    s390 = read_topology(str(dumps["20s390-2g6s4c"]))       # id -1, no node/ directory
    assert s390.cpu.architecture == "s390x" and s390.cpu.vendor == "IBM/S390"
    assert sorted(p.cpu_count for p in s390.packages) == [1, 1, 2, 3, 3, 3, 3, 4]
    assert all(p.physical_id is None for p in s390.packages)
    assert [n.cpus_source for n in s390.nodes] == ["implicit"] and s390.node(0).mem_total_bytes
    arm = read_topology(str(dumps["2arm-2c"]))              # CPU implementer after the per-CPU blocks
    assert arm.cpu.vendor == "ARM implementer 0x41" and arm.cpu.architecture == "arm"
    cpusets = read_topology(str(dumps["16amd64-8n2c-cpusets"]))    # the old /dev/cpuset mount
    assert (cpusets.allowed.cpus, cpusets.allowed.mems, cpusets.allowed.cgroup) == ("0-3,5-6,12-15", "1-4", "cpuset")


def test_edge_cases_are_flagged(synthetic):
    off = read_topology(str(synthetic["offline_cpus"]))
    assert off.online_cpus == "0-1,3-4,6-15" and any("cpuN/online" in q for q in off.quirks)
    conflict = read_topology(str(synthetic["package_conflict"]))
    assert [p.cpus for p in conflict.packages] == ["0-7", "8-15"]
    assert any("package masks conflict" in c for c in conflict.inconsistencies)
    power = read_topology(str(synthetic["power_like"]))
    assert not power.packages_known and power.cpu.vendor == "IBM POWER"
    buggy = read_topology(str(synthetic["buggy_numa"]))
    assert any("listed in several nodes" in c for c in buggy.inconsistencies)
    assert buggy.cpus_in_several_nodes == tuple(range(28))
    assert off.cpus_in_several_nodes == () and conflict.cpus_in_several_nodes == ()


# ------------------------------------------------------------------ inference

# root -> (mode, confidence); the reasons are in docs/numa.md ("What the dumps show")
EXPECTED = {
    "128arm-2pa2n8cluster4co": ("sub_socket_numa", "medium"),
    "16amd64-4n4c-cgroup-distance-merge": ("one_node_per_package", "high"),
    "16amd64-8n2c-cpusets": ("one_node_per_package", "high"),
    "16em64t-4s2c2t": ("uma_multi_package", "high"),
    "16ia64-8n2s": ("multi_package_node", "high"),
    "20s390-2g6s4c": ("uma_multi_package", "medium"),
    "256ia64-64n2s2c": ("multi_package_node", "high"),
    "2arm-2c": ("single_node", "high"),
    "2i386-2c-nohugepage": ("single_node", "high"),
    "2pa-pcidomain32bits": ("virtual_topology", "low"),
    "32amd64-4s2n4c-cgroup2": ("die-NUMA", "high"),
    "32em64t-2n8c+dax+nvme+mic+dimms": ("one_node_per_package", "high"),
    "32intel64-2p8co2t+8ve": ("SNC_off", "high"),
    "40intel64-2g2n4c+pcilocality": ("one_node_per_package", "high"),
    "48amd64-4pa2n6c-sparse": ("die-NUMA", "high"),
    "4fake-4gr1nu1pu": ("sub_socket_numa", "low"),
    "64amd64-4s2n4ca2co": ("die-NUMA", "high"),
    "64fake-4n2s2ca2c2t": ("multi_package_node", "medium"),
    "8em64t-2s2ca2c": ("uma_multi_package", "high"),
    "fakeheteromemtiers": ("virtual_topology", "low"),
    "memorysidecaches": ("SNC2", "high"),
    "nvidia-dgx-gb10": ("single_node", "high"),
    "offline-cpu0-node0": ("snoop_undetermined", "none"),
}

SYNTH_EXPECTED = {
    "cod": ("COD", "high"), "nps4": ("NPS4", "high"), "l3_as_numa": ("L3-as-NUMA", "high"),
    "nps0": ("NPS0", "high"), "cxl": ("SNC_off", "high"),
    "buggy_numa": ("buggy_sysfs", "none"), "offline_cpus": ("SNC_off", "high"),
    "package_conflict": ("SNC_off", "medium"), "power_like": ("nodes_without_packages", "low"),
    "cod_bad_slit": ("COD", "medium"), "cgroup_v1_noprefix": ("SNC_off", "high"), "cxl_dax": ("SNC_off", "high"),
    "dgx_h100_like": ("SNC_off", "high"), "nics_one_socket": ("SNC_off", "high"),
    "dgx_a100_like": ("NPS4", "high"), "gh200_like": ("single_node", "high"),
}


def _never_high_on_bad_evidence(inf):
    if inf.confidence == "high":
        assert not inf.missing and not inf.contradictions, (inf.missing, inf.contradictions)


@needs_fixtures
def test_every_dump_has_an_expected_answer():
    assert set(STEMS) == set(EXPECTED)


@needs_fixtures
@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_inference_on_real_dumps(dumps, stem):
    topo = read_topology(str(dumps[stem]))
    inf = infer_mode(topo)
    assert (inf.mode, inf.confidence) == EXPECTED[stem], inf.evidence
    assert inf.evidence
    _never_high_on_bad_evidence(inf)
    if stem == "memorysidecaches":
        assert any("memory-side cache" in e for e in inf.evidence) and inf.nodes_per_package == 2
    if stem == "offline-cpu0-node0":
        assert set(inf.alternatives) == {"early_snoop", "home_snoop", "home_snoop_dir_osb"}
        assert "no online node for the CPUs of package(s) 0" in inf.missing
    if stem in ("4fake-4gr1nu1pu", "64fake-4n2s2ca2c2t"):
        assert "no node distance rows (SLIT)" in inf.missing
    if stem == "16amd64-4n4c-cgroup-distance-merge":
        assert [(c.subject, c.value) for c in inf.other] == [("allowed memory", "remote_only")]
        assert "1 die per package" in inf.cpu_generation      # Barcelona, not Magny-Cours
    if stem == "fakeheteromemtiers":
        kinds = {c.subject: c.value for c in inf.memory_nodes}
        assert kinds == {"node 0 memory": "dram", "node 1 memory": "dram", "node 2 memory": "hbm",
                         "node 4 memory": "hbm", "node 6 memory": "nvm", "node 8 memory": "nvm",
                         "node 9 memory": "nvm"}
    if stem in ("2pa-pcidomain32bits", "fakeheteromemtiers"):
        assert inf.virtual_topology and inf.alternatives


@pytest.mark.parametrize("name", sorted(SYNTH_EXPECTED))
def test_inference_on_synthetic_roots(synthetic, name):
    topo = read_topology(str(synthetic[name]))
    inf = infer_mode(topo)
    assert (inf.mode, inf.confidence) == SYNTH_EXPECTED[name], inf.evidence
    _never_high_on_bad_evidence(inf)
    if name == "cxl":
        assert topo.memory_only_nodes == (2,)
        assert [(c.subject, c.value, c.confidence) for c in inf.memory_nodes] == [("node 2 memory", "unknown", "low")]
    if name == "cxl_dax":
        assert [(c.subject, c.value, c.confidence) for c in inf.memory_nodes] == [("node 2 memory", "cxl", "high")]
    if name == "nps0":
        assert inf.alternatives == ("node_interleave",)
    if name == "cod_bad_slit":
        assert any("SLIT" in c for c in inf.contradictions)
    if name == "buggy_numa":
        assert inf.refused


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


def test_a_guest_is_a_virtual_topology(tmp_path):
    inf = infer_mode(read_topology(str(synth_cxl(tmp_path / "vm", hypervisor=True))))
    assert inf.mode == "virtual_topology" and inf.confidence == "low" and inf.virtual_topology
    assert inf.alternatives == ("one_node_per_package",)


# ------------------------------------------------------------------ job planning (the matrix)

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
def test_simulated_plan_splits_cpus_and_binds_one_node(dumps):
    topo = read_topology(str(dumps["memorysidecaches"]))
    plan = plan_jobs(topo, simulate_nodes=4)
    assert plan.simulated and plan.cpu_nodes == (0, 1, 2, 3) and plan.threads == 20
    assert {j.bind_node for j in plan.jobs} == {0} and len(plan.jobs) == 16
    assert plan.node_cpus[0] == tuple(range(20)) and plan.node_cpus[3] == tuple(range(60, 80))


# ------------------------------------------------------------------ the CLI on dumps

@needs_fixtures
@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_cli_topology_only_on_every_dump(cli, dumps, stem):
    res = cli("bench", "numa", "--topology-only", "--sysfs-root", dumps[stem], "--json")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["schema"] == "mltools.bench.numa" and doc["version"] == 2
    inf = doc["inference"]
    assert (inf["mode"], inf["confidence"]) == EXPECTED[stem]
    assert {"evidence", "missing", "contradictions", "memory_nodes"} <= set(inf)
    for c in inf["memory_nodes"]:
        assert {"subject", "value", "confidence", "evidence", "missing"} <= set(c)
    for n in doc["topology"]["nodes"]:
        assert {"id", "cpus", "mem_total_bytes", "cpus_source"} <= set(n)
    for p in doc["topology"]["packages"]:
        assert {"id", "physical_id", "nodes"} <= set(p)
    assert "devices" in doc["topology"]["io"]
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


def test_relation_words_follow_the_pci_path():
    from mltools.numa.pci import PciDevice

    def dev(busid, host, bridges, node):
        return PciDevice(busid, "0x10de", "0x0", "0x030200", None, "gpu", node, "", node, (), "high", "", (),
                         host, bridges, None, (), ())
    gpu = dev("0000:1b:00.0", "0000:15", ("0000:15:01.0", "0000:16:00.0", "0000:17:01.0"), 0)
    assert relation(gpu, dev("0000:18:00.0", "0000:15", ("0000:15:01.0", "0000:16:00.0", "0000:17:00.0"), 0)) == "PIX"
    assert relation(gpu, dev("0000:19:00.0", "0000:15", ("0000:15:01.0", "0000:16:00.0", "0000:17:02.0",
                                                         "0000:18:00.0"), 0)) == "PXB"
    assert relation(gpu, dev("0000:15:02.0", "0000:15", ("0000:15:02.0",), 0)) == "PHB"
    assert relation(gpu, dev("0000:29:00.0", "0000:25", ("0000:25:01.0",), 0)) == "NODE"
    assert relation(gpu, dev("0000:9a:00.0", "0000:97", ("0000:97:01.0",), 1)) == "SYS"
    assert relation(gpu, dev("0000:9a:00.0", "0000:97", ("0000:97:01.0",), None)) == "unknown"


def test_device_kinds():
    assert device_kind(0x030200, 0x10de) == "gpu"
    assert device_kind(0x030000, 0x1a03) == "display"          # ASPEED BMC VGA is not a GPU
    assert device_kind(0x068000, 0x10de) == "other"            # NVSwitch: NVIDIA, not a GPU
    assert device_kind(0x020700, 0x15b3) == "nic_infiniband"
    assert device_kind(0x0c0600, 0x1077) == "nic_infiniband"   # the old serial-bus class of QLogic HCAs
    assert device_kind(0x028000, 0x15b3, ("InfiniBand",)) == "nic_infiniband"
    assert device_kind(0x028000, 0x15b3, ("Ethernet",)) == "nic_ethernet"
    assert device_kind(0x010802, 0x144d) == "nvme"
