"""DDP over 2 gloo processes on the CPU equals one process on the combined batch.

Equality needs what the design notes say: identical initial weights, the same
α/β for the same image (drawn for the global batch from a shared seed and
sliced by rank), BatchNorm in eval mode (per-rank batch statistics differ from
full-batch ones) and mean reduction (DDP averages gradients over ranks).
"""
import json
import os

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mltools import _jsonio  # noqa: E402
from mltools.shakeshake.bench import (BenchConfig, free_port, init_distributed,  # noqa: E402
                                      run_benchmark, wrap_ddp)
from mltools.shakeshake.model import build_model  # noqa: E402
from mltools.shakeshake.shake import global_index_coefficients  # noqa: E402

GLOBAL_BATCH, SEED, DEPTH, WIDTH = 8, 11, 8, 8


def _grads(impl, rank, world, ddp):
    torch.manual_seed(SEED)
    model = build_model(impl, DEPTH, WIDTH).train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()                     # running statistics, identical on every rank
    model.coefficient_source = global_index_coefficients(model.num_blocks, GLOBAL_BATCH, rank, world, SEED)
    gen = torch.Generator().manual_seed(SEED + 1)
    x = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (GLOBAL_BATCH,), generator=gen)
    share = GLOBAL_BATCH // world
    x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]
    net = wrap_ddp(model, torch.device("cpu")) if ddp else model
    F.cross_entropy(net(x), y).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def _worker(rank, world, port, outdir):
    torch.set_num_threads(1)
    info = init_distributed("gloo", rank, world, master_addr="127.0.0.1", master_port=port)
    try:
        for impl in ("reference", "fast"):
            grads = _grads(impl, rank, world, ddp=True)
            if rank == 0:
                torch.save(grads, os.path.join(outdir, f"ddp_{impl}.pt"))
        cfg = BenchConfig(depth=8, width=4, batch_size=4, steps=2, warmup=1, device="cpu", rounds=2)
        res = run_benchmark(cfg, info)
        if rank == 0:
            with open(os.path.join(outdir, "bench.json"), "w") as fh:
                fh.write(_jsonio.dumps(res, res.SCHEMA, res.SCHEMA_VERSION))
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_ddp_equals_one_process_on_the_combined_batch(tmp_path):
    mp.start_processes(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    torch.set_num_threads(1)
    for impl in ("reference", "fast"):
        single = _grads(impl, 0, 1, ddp=False)
        ddp = torch.load(tmp_path / f"ddp_{impl}.pt")
        assert set(ddp) == set(single)
        for k in single:
            scale = single[k].abs().max().clamp_min(1e-30)
            assert float((ddp[k] - single[k]).abs().max() / scale) <= 1e-5, (impl, k)
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["schema"] == "mltools.bench.shakeshake"
    assert doc["world_size"] == 2 and doc["backend"] == "gloo" and doc["global_batch_size"] == 8
    for entry in doc["implementations"]:
        assert entry["images_per_s"] > 0 and entry["single_process_images_per_s"] > 0
        assert 0 < entry["scaling_efficiency"] < 10


def test_ddp_with_per_rank_draws_would_differ():
    """Control: without global-index α/β the two halves see other coefficients
    than the full batch, so the comparison above is not vacuous."""
    torch.manual_seed(SEED)
    whole = global_index_coefficients(2, GLOBAL_BATCH, 0, 1, SEED)
    half = global_index_coefficients(2, GLOBAL_BATCH // 2, 0, 1, SEED)
    assert not torch.equal(whole.alphas[1][:GLOBAL_BATCH // 2], half.alphas[1])


def test_spawned_processes_report_rank0():
    """The --gpus path (one spawned DDP process per device), here with gloo on two CPU processes."""
    from mltools.shakeshake.bench import run_spawned

    cfg = BenchConfig(depth=8, width=4, batch_size=4, steps=2, warmup=1, device="cpu", impls=("fast",), rounds=1)
    res = run_spawned(["cpu", "cpu"], cfg, ("mltools", "bench", "shakeshake", "--gpus", "0,1"))
    assert res.world_size == 2 and res.backend == "gloo" and res.global_batch_size == 8
    assert res.run.command == ("mltools", "bench", "shakeshake", "--gpus", "0,1")
    assert res.implementations[0].scaling_efficiency > 0


def test_a_failing_worker_reports_one_line_and_exits_non_zero(tmp_path, monkeypatch):
    """What run_spawned relies on, without a spawn: the worker queues the
    error and exits non-zero (so the parent stops the other ranks)."""
    import queue as queue_mod

    from mltools.shakeshake.bench import _spawned_worker

    for name in ("LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):   # the worker sets them: undo after
        monkeypatch.setenv(name, "0")
    q = queue_mod.Queue()
    cfg = BenchConfig(depth=8, width=4, batch_size=4, steps=1, warmup=0, device="cpu", data_dir=str(tmp_path))
    with pytest.raises(SystemExit):
        _spawned_worker(0, ("cpu",), cfg, free_port(), q)
    status, message = q.get_nowait()
    assert status == "error" and message.startswith("cpu (rank 0): ")
    assert "not a CIFAR-10 python directory" in message and "\n" not in message
    assert not dist.is_initialized()
