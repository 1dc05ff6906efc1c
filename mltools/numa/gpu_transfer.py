"""Pinned host <-> device bandwidth from each node's memory to each GPU (torch with CUDA).

For every CPU node this process may use, the host buffer is an mmap bound to
that node with mbind, first touched by this thread while it runs on the node's
CPUs, checked with move_pages, and then pinned with ``cudaHostRegister``; the
copies are ``copy_(non_blocking=True)`` between it and a device buffer, timed
with CUDA events, several rounds after warm-up. The buffer is unpinned and the
thread's affinity restored whatever happens.

Without torch, or with a torch that sees no CUDA device, the result says why
it was skipped and nothing is measured.
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from mltools.errors import UsageError
from mltools.numa.cpulist import format_cpulist
from mltools.numa.pci import torch_busid
from mltools.numa.topology import Topology

__all__ = ["GpuDevice", "GpuTransfers", "measure_host_device", "host_buffer", "cpu_nodes_for_transfers",
           "DEFAULT_BYTES", "DEFAULT_ROUNDS"]

DEFAULT_BYTES = 256 << 20
QUICK_BYTES = 64 << 20
DEFAULT_ROUNDS = 10
QUICK_ROUNDS = 3
WARMUP = 2
PLACEMENT_SAMPLES = 1024


@dataclass(frozen=True)
class GpuDevice:
    index: int                     # torch/CUDA index
    name: str
    busid: Optional[str]           # PCI bus id, from the device properties
    node: Optional[int]            # where the topology says it sits


@dataclass(frozen=True)
class GpuTransfers:
    measured: bool
    skipped: Optional[str]                                   # why nothing was measured
    method: str
    bytes_per_copy: int
    rounds: int
    cpu_nodes: Tuple[int, ...]
    gpus: Tuple[GpuDevice, ...]
    h2d_gbps: Tuple[Tuple[Optional[float], ...], ...]        # best round, cpu node x GPU, 1e9 B/s
    d2h_gbps: Tuple[Tuple[Optional[float], ...], ...]
    h2d_spread: Tuple[Tuple[Optional[Tuple[float, float, float]], ...], ...]   # (min, median, max) of the rounds
    d2h_spread: Tuple[Tuple[Optional[Tuple[float, float, float]], ...], ...]
    pages_on_node: Tuple[Optional[float], ...]               # per cpu node: fraction of sampled host pages there


def _skipped(reason: str, size: int, rounds: int) -> GpuTransfers:
    return GpuTransfers(False, reason, "", size, rounds, (), (), (), (), (), (), ())


def cpu_nodes_for_transfers(topo: Topology, allowed_cpus: Sequence[int], allowed_mems: Sequence[int],
                            nodes: Optional[Sequence[int]] = None) -> List[Tuple[int, Tuple[int, ...]]]:
    """(node, its usable CPUs) for every node with CPUs this process may run on and memory it
    may use, limited to ``nodes``; UsageError when none is left."""
    cpus, mems = set(allowed_cpus), set(allowed_mems)
    out = []
    for n in topo.nodes:
        mine = tuple(c for c in n.cpu_ids() if c in cpus)
        if mine and n.id in mems and (nodes is None or n.id in nodes):
            out.append((n.id, mine))
    if nodes is not None:
        missing = sorted(set(nodes) - {n for n, _ in out})
        if missing:
            raise UsageError(f"--nodes: node {format_cpulist(missing)} has no usable CPUs or allowed memory "
                             "for host buffers")
    if not out:
        raise UsageError("no node has both a usable CPU and allowed memory for host buffers")
    return out


def host_buffer(node: int, cpus: Sequence[int], size: int):
    """An mmap bound to ``node`` and first touched from ``cpus`` (the caller's thread runs
    there while it does), and the fraction of sampled pages that ended up on the node.
    Returns (mapping, fraction); the caller keeps the mapping alive."""
    from mltools.numa import _numa

    mapping = _numa.Mapping(size)
    try:
        mapping.bind([node])
    except OSError as exc:
        raise UsageError(f"cannot bind memory to node {node}: {exc.strerror}") from None
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        view = mapping.view()
        for off in range(0, size, 4096):      # first touch, page by page, on the node's CPUs
            view[off] = 1
        view.release()
    finally:
        os.sched_setaffinity(0, before)
    step = max(size // 4096 // PLACEMENT_SAMPLES, 1) * 4096
    statuses = mapping.page_nodes(list(range(0, size, step))[:PLACEMENT_SAMPLES])
    return mapping, (sum(1 for s in statuses if s == node) / len(statuses) if statuses else None)


def measure_host_device(topo: Topology, *, size: int = DEFAULT_BYTES, rounds: int = DEFAULT_ROUNDS,
                        nodes: Optional[Sequence[int]] = None,
                        progress: Optional[Callable[..., None]] = None) -> GpuTransfers:
    """The cpu-node x GPU matrix of pinned H2D and D2H bandwidth, or why it was skipped.

    ``progress(done, total, detail)`` is called after each direction of each pair."""
    if size < 4096 or rounds < 1:
        raise UsageError("--gpu needs at least 4096 bytes and one round")
    try:
        import torch
    except ImportError:
        return _skipped("torch is not installed", size, rounds)
    if not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return _skipped(f"torch {torch.__version__} sees no CUDA device ({build})", size, rounds)
    from mltools.numa import _numa

    pairs = cpu_nodes_for_transfers(topo, sorted(os.sched_getaffinity(0)), _numa.mems_allowed(), nodes)
    by_bus = {d.busid: d for d in (topo.io.gpus if topo.io else ())}
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        busid = torch_busid(props)
        gpus.append(GpuDevice(i, props.name, busid, by_bus[busid].node if busid in by_bus else None))
    rows = len(pairs)
    h2d = [[None] * len(gpus) for _ in range(rows)]
    d2h = [[None] * len(gpus) for _ in range(rows)]
    h2d_s = [[None] * len(gpus) for _ in range(rows)]
    d2h_s = [[None] * len(gpus) for _ in range(rows)]
    placement: List[Optional[float]] = []
    cudart = torch.cuda.cudart()
    done, total = 0, rows * len(gpus) * 2
    for i, (node, cpus) in enumerate(pairs):
        mapping, fraction = host_buffer(node, cpus, size)
        placement.append(fraction)
        host = torch.frombuffer(mapping.view(), dtype=torch.uint8)
        err = int(cudart.cudaHostRegister(mapping.address, size, 0))
        if err != 0:
            raise UsageError(f"cudaHostRegister of {size} bytes on node {node} failed (CUDA error {err})")
        before = os.sched_getaffinity(0)
        try:
            os.sched_setaffinity(0, cpus)
            for g in gpus:
                with torch.cuda.device(g.index):
                    dev = torch.empty(size, dtype=torch.uint8, device=f"cuda:{g.index}")
                    for direction, dst, src, best, spread in (("H2D", dev, host, h2d, h2d_s),
                                                              ("D2H", host, dev, d2h, d2h_s)):
                        rates = _time_copies(torch, dst, src, size, rounds)
                        best[i][g.index] = max(rates)
                        spread[i][g.index] = (min(rates), statistics.median(rates), max(rates))
                        done += 1
                        if progress:
                            progress(done, total, f"{direction} node {node} -> cuda:{g.index}")
                    del dev
        finally:
            os.sched_setaffinity(0, before)
            torch.cuda.synchronize()
            cudart.cudaHostUnregister(mapping.address)
            del host
    freeze = lambda m: tuple(tuple(r) for r in m)  # noqa: E731
    return GpuTransfers(True, None, "cudaHostRegister'd mmap bound to the node (mbind, first touch on its CPUs), "
                        "copy_(non_blocking=True), CUDA events", size, rounds, tuple(n for n, _ in pairs), tuple(gpus),
                        freeze(h2d), freeze(d2h), freeze(h2d_s), freeze(d2h_s), tuple(placement))


def _time_copies(torch, dst, src, size: int, rounds: int) -> List[float]:
    """GB/s (1e9 B/s) of each timed round after WARMUP untimed ones."""
    rates = []
    for k in range(WARMUP + rounds):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src, non_blocking=True)
        end.record()
        end.synchronize()
        ms = start.elapsed_time(end)
        if k >= WARMUP and ms > 0:
            rates.append(size / (ms * 1e-3) / 1e9)
    return rates or [0.0]
