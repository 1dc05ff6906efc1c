"""Where GPUs and NICs sit, the --plan binding plan, and --gpu's host<->device path.

Oracles: lstopo for the PCI tree (test_numa_topology.py), torch's own
``torchrun --numa-binding=exclusive`` for the CPU split of the plan, the kernel
(numactl, /proc/self/status, move_pages) for the wrapper script and the host
buffers.
"""
from __future__ import annotations

import builtins
import os
import shutil
import subprocess
from types import SimpleNamespace

import pytest

import numa_synth
from numa_fixtures import fixtures_dir, scratch_dir, synth_cxl, unpacked
from mltools.numa.binding import plan_binding, split_cores
from mltools.numa.cpulist import parse_cpulist
from mltools.numa.topology import read_topology

needs_fixtures = pytest.mark.skipif(fixtures_dir() is None, reason="sysfs fixtures not found")

# firmware mistakes on a DGX-like server: GPU 0000:c3:00.0 has no numa_node and an every-CPU
# local_cpus; GPU 0000:d1:00.0's numa_node says 0 while its local_cpus are socket 1's
MISTAKES = {
    "0000:c3:00.0": {"numa_node": "-1", "local_cpus": "ffffffff," * 6 + "ffffffff", "local_cpulist": "0-223"},
    "0000:d1:00.0": {"numa_node": "0"},
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    base = scratch_dir(tmp_path_factory.mktemp("servers"))
    roots = {name: numa_synth.write(base / name, name) for name in numa_synth.SERVERS}
    roots["mistakes"] = numa_synth.write(base / "mistakes", "dgx_h100_like", pci_overrides=MISTAKES)
    yield roots
    shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ locality

def test_gpus_nics_and_disks_of_an_8_gpu_server(servers):
    io = read_topology(str(servers["dgx_h100_like"])).io
    assert [g.node for g in io.gpus] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert all(g.locality_confidence == "high" for g in io.gpus)
    assert len(io.of_kind("nvme")) == 10 and len(io.of_kind("display")) == 1    # the BMC VGA is not a GPU
    hcas = io.of_kind("nic_infiniband")
    assert len(hcas) == 8 and all(h.link_layers == ("InfiniBand",) for h in hcas)
    assert [n.os_devices for n in hcas][0] == ("ibp24s0", "mlx5_0")
    storage = io.of_kind("nic_ethernet")
    assert len(storage) == 4 and all(s.rdma for s in storage)                 # RoCE ports
    assert [row.count("PIX") for row in io.gpu_nic.relations] == [1] * 8


def test_firmware_mistakes_are_named_not_trusted(servers):
    io = read_topology(str(servers["mistakes"])).io
    by_bus = {d.busid: d for d in io.devices}
    unknown = by_bus["0000:c3:00.0"]
    assert unknown.node is None and unknown.locality_confidence == "none"
    assert "says nothing" in unknown.locality_evidence
    wrong = by_bus["0000:d1:00.0"]
    assert wrong.node == 0 and wrong.locality_confidence == "low"
    assert any("contradicts local_cpus" in n for n in wrong.locality_notes)


@needs_fixtures
def test_locality_in_real_dumps():
    dumps = unpacked()
    skx = read_topology(str(dumps["32intel64-2p8co2t+8ve"])).io
    assert {d.node for d in skx.devices} == {0} and len(skx.of_kind("coprocessor")) == 8
    assert all(d.locality_confidence == "high" for d in skx.devices)
    snb = {d.busid: d for d in read_topology(str(dumps["32em64t-2n8c+dax+nvme+mic+dimms"])).io.devices}
    assert snb["0000:00:02.0"].node == 0 and snb["0000:00:02.0"].locality_confidence == "medium"   # numa_node -1
    assert snb["0000:82:00.0"].kind == "nic_infiniband" and snb["0000:82:00.0"].node == 1   # class 0x0280 + IB port
    r910 = {d.busid: d for d in read_topology(str(dumps["40intel64-2g2n4c+pcilocality"])).io.devices}
    assert r910["0000:02:00.0"].node is None                     # numa_node -1, every CPU local
    hca = r910["0000:43:00.0"]
    assert hca.node == 2 and hca.locality_confidence == "medium" and hca.locality_notes
    guest = {d.busid: d for d in read_topology(str(dumps["2pa-pcidomain32bits"])).io.devices}
    assert guest["0000:00:03.0"].os_devices == ("ens3",)         # a virtio NIC: under virtio0/, found via sys/class


# ------------------------------------------------------------------ the plan

def _torch_exclusive(root, topo, monkeypatch):
    """torch's --numa-binding=exclusive CPUs for every GPU, reading ``root`` instead of /."""
    binding = pytest.importorskip("torch.numa.binding")
    gpus = topo.io.gpus
    real_open = builtins.open
    monkeypatch.setattr(binding, "open", lambda path, *a, **k: real_open(os.path.join(root, path.lstrip("/")), *a, **k),
                        raising=False)
    monkeypatch.setattr(binding, "_get_gpu_count", lambda: len(gpus))
    monkeypatch.setattr(binding, "_get_allowed_cpu_indices_for_current_thread",
                        lambda: set(parse_cpulist(topo.allowed.cpus)))

    def props(i):
        dom, bus, devfn = gpus[i].busid.split(":")
        return SimpleNamespace(pci_domain_id=int(dom, 16), pci_bus_id=int(bus, 16),
                               pci_device_id=int(devfn.split(".")[0], 16))
    monkeypatch.setattr(binding.torch.cuda, "get_device_properties", props)
    options = binding.NumaOptions(affinity_mode=binding.AffinityMode.EXCLUSIVE)
    return [binding._get_logical_cpus_to_bind_to(gpu_index=i, numa_options=options) for i in range(len(gpus))]


@pytest.mark.parametrize("name", ["dgx_h100_like", "dgx_a100_like", "nics_one_socket"])
def test_plan_splits_cores_as_torch_exclusive_does(servers, name, monkeypatch):
    topo = read_topology(str(servers[name]))
    plan = plan_binding(topo, len(topo.io.gpus))
    theirs = _torch_exclusive(servers[name], topo, monkeypatch)
    assert [set(parse_cpulist(b.cpus)) for b in plan.bindings] == theirs
    assert all(b.numactl == ("numactl", f"--physcpubind={b.cpus}", f"--membind={b.node}") for b in plan.bindings)
    assert all(b.taskset == ("taskset", "-c", b.cpus) for b in plan.bindings)


def test_plan_pairs_each_gpu_with_its_switch_nic(servers):
    plan = plan_binding(read_topology(str(servers["dgx_h100_like"])), 8)
    assert plan.all_local and not plan.warnings
    assert [(b.gpu, b.nic, b.nic_relation, b.node) for b in plan.bindings][:2] == [
        ("0000:1b:00.0", "0000:18:00.0", "PIX", 0), ("0000:43:00.0", "0000:40:00.0", "PIX", 0)]
    assert len({b.nic for b in plan.bindings}) == 8
    assert plan.bindings[0].cpus == "0-13,112-125"          # 14 whole cores, SMT siblings together
    a100 = plan_binding(read_topology(str(servers["dgx_a100_like"])), 8)
    assert [b.node for b in a100.bindings] == [3, 3, 1, 1, 7, 7, 5, 5] and a100.all_local


def test_plan_says_when_gpus_and_nics_cannot_all_be_local(servers, cli):
    plan = plan_binding(read_topology(str(servers["nics_one_socket"])), 8)
    assert not plan.all_local
    assert [b.nic_relation for b in plan.bindings] == ["NODE"] * 4 + ["SYS"] * 4
    assert any("cannot all be local" in w for w in plan.warnings)
    res = cli("bench", "numa", "--plan", "8", "--sysfs-root", servers["nics_one_socket"], "--json")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["binding_plan"]["all_local"] is False and doc["measured"] is False
    assert [f["code"] for f in doc["findings"]].count("NUMA_PLAN_NOT_LOCAL") == 1


def test_plan_leaves_a_gpu_of_unknown_locality_unbound(servers):
    plan = plan_binding(read_topology(str(servers["mistakes"])), 8)
    five = plan.bindings[5]
    assert five.gpu == "0000:c3:00.0" and five.node is None and five.numactl == () and five.cpus == ""
    assert "  5) exec \"$@\" ;;  # not bound: locality unknown" in plan.script
    assert not plan.all_local and any("node is unknown" in w for w in plan.warnings)


def test_plan_errors_are_usage_errors(servers, cli):
    res = cli("bench", "numa", "--plan", "9", "--sysfs-root", servers["dgx_h100_like"])
    assert res.exit_code == 2 and res.stderr.startswith("Error: --plan 9: this machine has 8 GPU(s)")
    assert res.stderr.count("\n") == 1 and res.stdout == ""
    res = cli("bench", "numa", "--plan", "0", "--sysfs-root", servers["dgx_h100_like"])
    assert res.exit_code == 2


def test_cpu_only_plan_spreads_ranks_over_nodes(tmp_path):
    topo = read_topology(str(synth_cxl(tmp_path / "r")))
    plan = plan_binding(topo, 4)
    assert plan.device_kind == "cpu" and [b.node for b in plan.bindings] == [0, 0, 1, 1]
    assert [b.cpus for b in plan.bindings] == ["0-3", "4-7", "8-11", "12-15"]
    assert split_cores([(0, 8), (1, 9), (2, 10)], 2) == [(0, 1, 8, 9), (2, 10)]


def test_the_wrapper_script_binds_under_numactl(cli, tmp_path):
    """The plan for this machine, run for real: numactl applies it, /proc/self/status shows it."""
    if shutil.which("numactl") is None:
        pytest.skip("needs numactl")
    res = cli("bench", "numa", "--plan", "1", "--topology-only", "--json")
    assert res.exit_code == 0, res.stderr
    plan = res.json()["binding_plan"]
    script = tmp_path / "bind.sh"
    script.write_text(plan["script"])
    script.chmod(0o755)
    out = subprocess.run(["sh", str(script), "cat", "/proc/self/status"], capture_output=True, text=True,
                         env=dict(os.environ, LOCAL_RANK="0"), timeout=60)
    assert out.returncode == 0, out.stderr
    status = dict(line.split(":\t", 1) for line in out.stdout.splitlines() if ":\t" in line)
    assert set(parse_cpulist(status["Cpus_allowed_list"].strip())) == set(parse_cpulist(plan["bindings"][0]["cpus"]))
    missing = subprocess.run(["sh", str(script), "true"], capture_output=True, text=True,
                             env={k: v for k, v in os.environ.items() if k != "LOCAL_RANK"}, timeout=60)
    assert missing.returncode != 0 and "LOCAL_RANK" in missing.stderr
    other = subprocess.run(["sh", str(script), "true"], capture_output=True, text=True,
                           env=dict(os.environ, LOCAL_RANK="7"), timeout=60)
    assert other.returncode == 1 and "no binding planned for LOCAL_RANK=7" in other.stderr


def test_plan_text_shows_the_table_and_the_script(servers, cli):
    res = cli("bench", "numa", "--plan", "8", "--sysfs-root", servers["dgx_h100_like"])
    assert res.exit_code == 0, res.stderr
    assert "Binding plan for 8 local rank(s)" in res.stdout and "all local: yes" in res.stdout
    assert "export CUDA_DEVICE_ORDER=PCI_BUS_ID" in res.stdout
    assert "GPU <-> NIC" in res.stdout and "PIX" in res.stdout


# ------------------------------------------------------------------ --gpu

def test_gpu_without_cuda_is_skipped_with_the_reason(cli):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the skip path is not taken")
    res = cli("bench", "numa", "--topology-only", "--gpu", "--json")
    assert res.exit_code == 0, res.stderr
    doc = res.json()
    assert doc["gpu_transfers"]["measured"] is False and "sees no CUDA device" in doc["gpu_transfers"]["skipped"]
    assert any(f["code"] == "NUMA_GPU_SKIPPED" for f in doc["findings"])
    text = cli("bench", "numa", "--topology-only", "--gpu")
    assert "GPU transfers: skipped: torch" in text.stdout


def test_gpu_without_torch_is_skipped(tmp_path):
    """torch made unimportable in a child process (a None entry in sys.modules blocks the import)."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from mltools.numa.gpu_transfer import measure_host_device\n"
            "from mltools.numa.topology import read_topology\n"
            "print(measure_host_device(read_topology('/')).skipped)")
    out = subprocess.run([os.sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "torch is not installed"


def test_gpu_on_a_dump_is_refused(servers, cli):
    res = cli("bench", "numa", "--topology-only", "--gpu", "--sysfs-root", servers["dgx_h100_like"])
    assert res.exit_code == 2 and "--gpu" in res.stderr and res.stderr.count("\n") == 1


def test_host_buffers_land_on_their_node():
    """The CPU half of --gpu: bound, first touched on the node's CPUs, checked with move_pages."""
    from mltools.numa.gpu_transfer import cpu_nodes_for_transfers, host_buffer
    from mltools.numa import _numa
    topo = read_topology("/")
    pairs = cpu_nodes_for_transfers(topo, sorted(os.sched_getaffinity(0)), _numa.mems_allowed())
    before = os.sched_getaffinity(0)
    for node, cpus in pairs:
        mapping, fraction = host_buffer(node, cpus, 8 << 20)
        assert fraction == 1.0 and mapping.size == 8 << 20
    assert os.sched_getaffinity(0) == before
    with pytest.raises(Exception, match="--nodes"):
        cpu_nodes_for_transfers(topo, sorted(before), _numa.mems_allowed(), nodes=(max(n.id for n in topo.nodes) + 1,))
