"""The Shake-Shake training-throughput benchmark, its training run and DDP plumbing.

Timing: warm-up steps (cuDNN autotuning, torch.compile) are excluded and
reported separately; timed steps are forward, loss, backward and optimizer
step. With ``--impl both`` the two implementations alternate in rounds within
one run (our machines are noisy), and each implementation's rate is its images
over the sum of its timed rounds. On CUDA each step is bracketed by CUDA
events and the host synchronises only at the end of a round; on the CPU the
clock is read after each step (CPU execution is synchronous).

Warm-up is not assumed: after the ``warmup`` steps asked for, each
implementation keeps stepping, each step timed, until the last
``settle_window`` steps agree within ``settle_tolerance`` of their median
(steady state), at most ``max_warmup`` steps; the count is reported, and a run
that never settled says so. On CUDA, NVML samples the GPU's clocks, power,
temperature and throttle reasons during the timed steps
(``mltools.shakeshake.telemetry``); a throttled run says so. MFU names the
peak it divides by and its source (``mltools.shakeshake.peaks``). Every round
and every timed step is kept as a case (``mltools.results``), next to the
machine. Ctrl-C returns the rounds that had finished, marked ``interrupted``.

Multi-process: ``--gpus 0,1`` spawns one process per GPU; ``torchrun`` starts
them itself. Each process trains ``batch_size`` images per step under
DistributedDataParallel (NCCL on GPUs, gloo on CPUs); the aggregate rate uses
the slowest rank's time, and rank 0 first measures the same model alone for
the scaling efficiency.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import socket
import statistics
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

from mltools.shakeshake import require_torch

torch = require_torch()   # MissingDependencyError with the install hint, not ModuleNotFoundError

import torch.nn.functional as F  # noqa: E402

from mltools.env.machine import Machine
from mltools.errors import InputError, MltoolsError, UsageError
from mltools.results.run import HIGHER, LOWER, Case, Recorder, RunInfo
from mltools.shakeshake.flops import shakeshake_flops
from mltools.shakeshake.model import (IMPLEMENTATIONS, SECOND_CONV_MODES, blocks_per_stage,
                                      build_model, count_parameters)
from mltools.shakeshake.peaks import Peak, find_peak, given_peak
from mltools.shakeshake.shake import SHAKE_LEVELS
from mltools.shakeshake.telemetry import GpuTelemetry

SCHEMA = "mltools.bench.shakeshake"

# Paper recipe: SGD, Nesterov momentum 0.9, weight decay 1e-4, LR 0.2 at batch 128 (cosine).
BASE_LR, BASE_BATCH, MOMENTUM, WEIGHT_DECAY = 0.2, 128, 0.9, 1e-4
SYNTHETIC_POOL = 4   # distinct synthetic batches cycled through


# ---------------------------------------------------------------- configuration

@dataclass(frozen=True)
class BenchConfig:
    depth: int = 26
    width: int = 96
    batch_size: int = 128            # per process
    steps: int = 50
    warmup: int = 10
    impls: Tuple[str, ...] = ("reference", "fast")
    shake_level: str = "image"
    device: str = "cpu"              # "cpu" or "cuda:N" (this process's device)
    compile: Optional[bool] = None   # None: fast compiles on CUDA only
    cuda_graphs: bool = False
    second_conv: str = "grouped"
    data_dir: Optional[str] = None
    train_epochs: int = 0
    peak_tflops: Optional[float] = None
    seed: int = 0
    rounds: int = 5
    tf32: Optional[bool] = None      # cuDNN/matmul TF32; None: torch's default (cuDNN on)
    max_warmup: Optional[int] = None     # None: 100 on GPUs, warmup + 4 on the CPU
    settle_window: int = 3               # steady state: the last N warm-up steps ...
    settle_tolerance: float = 0.10       # ... within this fraction of their median
    telemetry: bool = True               # NVML sampling on CUDA devices

    def warmup_limit(self) -> int:
        if self.max_warmup is not None:
            return max(self.max_warmup, self.warmup)
        return max(100, self.warmup) if self.device.startswith("cuda") else self.warmup + 4

    def validate(self) -> None:
        try:
            blocks_per_stage(self.depth)
        except ValueError as exc:
            raise UsageError(f"--depth: {exc}") from None
        if self.width < 2 or self.width % 2:
            raise UsageError(f"--width must be an even number >= 2, got {self.width}")
        if self.batch_size < 2:
            raise UsageError("--batch-size must be at least 2 (BatchNorm needs two samples)")
        if self.steps < 1 or self.warmup < 0:
            raise UsageError("--steps must be >= 1 and --warmup >= 0")
        if not self.impls or any(i not in IMPLEMENTATIONS for i in self.impls):
            raise UsageError("--impl must be reference, fast or both")
        if self.shake_level not in SHAKE_LEVELS:
            raise UsageError("--shake-level must be image or batch")
        if self.second_conv not in SECOND_CONV_MODES:
            raise UsageError("--fast-conv2 must be grouped or split")
        if self.train_epochs < 0:
            raise UsageError("--train-epochs must be >= 0")
        if self.train_epochs and not self.data_dir:
            raise UsageError("--train-epochs needs --data DIR (CIFAR-10 python batches)")
        if self.train_epochs and len(self.impls) != 1:
            raise UsageError("--train-epochs trains one model: give --impl reference or --impl fast")
        if self.cuda_graphs and not self.device.startswith("cuda"):
            raise UsageError("--cuda-graphs needs a CUDA device")
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            raise UsageError("--peak-tflops must be positive")
        if self.max_warmup is not None and self.max_warmup < 0:
            raise UsageError("--max-warmup must be >= 0")


@dataclass(frozen=True)
class ImplSettings:
    """What an implementation runs with on a device (recorded in the result)."""

    impl: str
    precision: str          # bf16 / fp16 (autocast), tf32 or fp32 (convolutions)
    autocast: Optional[str]
    channels_last: bool
    compiled: bool
    cuda_graphs: bool
    second_conv: Optional[str]
    optimizer: str


def impl_settings(impl: str, config: BenchConfig) -> ImplSettings:
    cuda = config.device.startswith("cuda")
    if impl == "reference":
        # Eager fp32 as users write it; on Ampere+ cuDNN convolutions run on TF32
        # tensor cores unless turned off (torch's default), so say which.
        prec = "tf32" if cuda and torch.backends.cudnn.allow_tf32 else "fp32"
        return ImplSettings(impl, prec, None, False, False, False, None, "SGD (foreach)")
    compiled = cuda if config.compile is None else config.compile
    if cuda:
        autocast = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    else:
        autocast = None   # bf16 without native CPU support is ~17x slower: fp32 on CPUs
    prec = autocast or "fp32"
    return ImplSettings(impl, prec, autocast, cuda, compiled, config.cuda_graphs and compiled,
                        config.second_conv, "SGD (fused)" if cuda else "SGD (foreach)")


# ---------------------------------------------------------------- results

@dataclass(frozen=True)
class StepTimes:
    p50_ms: float
    p90_ms: float
    min_ms: float
    max_ms: float


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    train_images_per_s: float
    test_accuracy: float
    seconds: float


@dataclass(frozen=True)
class ImplResult:
    impl: str
    precision: str
    autocast: Optional[str]
    channels_last: bool
    compiled: bool
    cuda_graphs: bool
    second_conv: Optional[str]
    optimizer: str
    images_per_s: float                  # training, all processes together
    eval_images_per_s: Optional[float]   # None in --train-epochs runs (see training)
    step_ms: Optional[StepTimes]         # rank 0's timed training steps; None in training runs
    warmup_s: Optional[float]            # warm-up steps (compile, autotuning) on rank 0
    peak_memory_bytes: Optional[int]     # CUDA only, rank 0
    achieved_tflops: float               # model FLOPs (reference count) × images/s
    mfu: Optional[float]                 # achieved / peak at this precision; None if unknown
    peak_tflops: Optional[float]
    round_images_per_s: Tuple[float, ...] = ()              # per timed round (rank 0), for best-of ratios
    single_process_images_per_s: Optional[float] = None   # multi-process runs only
    scaling_efficiency: Optional[float] = None
    training: Tuple[EpochResult, ...] = ()
    peak: Optional[Peak] = None           # the peak MFU divides by: model, precision, figure, source
    warmup_steps: Optional[int] = None    # warm-up steps dropped (at least --warmup, until steady)
    settled: Optional[bool] = None        # the step time settled within the warm-up limit
    timed_steps: Optional[int] = None     # fewer than --steps when interrupted


@dataclass(frozen=True)
class BenchResult:
    SCHEMA: ClassVar[str] = SCHEMA
    # Format history: 2 - per implementation peak (with its source), warmup_steps, settled,
    # timed_steps; telemetry and throttled (NVML); machine, run, cases, interrupted, notes.
    SCHEMA_VERSION: ClassVar[int] = 2

    params: int
    flops_per_image: Dict[str, int]      # forward, train (analytic, architecture count)
    depth: int
    width: int
    shake_level: str
    impl: str                            # reference, fast or both
    params_only: bool
    device: Optional[str] = None         # cpu / cuda:N
    device_name: Optional[str] = None
    batch_size: Optional[int] = None     # per process
    global_batch_size: Optional[int] = None
    world_size: int = 1
    backend: Optional[str] = None        # nccl / gloo in multi-process runs
    data: Optional[str] = None           # "synthetic" or the CIFAR-10 directory
    steps: Optional[int] = None
    warmup: Optional[int] = None
    images_per_s: Dict[str, float] = field(default_factory=dict)
    mfu: Dict[str, Optional[float]] = field(default_factory=dict)
    speedup: Optional[float] = None      # fast / reference training images/s, same run
    implementations: Tuple[ImplResult, ...] = ()
    versions: Dict[str, Optional[str]] = field(default_factory=dict)
    settings: Dict[str, object] = field(default_factory=dict)
    telemetry: Tuple[GpuTelemetry, ...] = ()   # rank 0's GPU during the timed steps
    throttled: bool = False
    machine: Optional[Machine] = None
    run: Optional[RunInfo] = None
    cases: Tuple[Case, ...] = ()
    notes: Tuple[str, ...] = ()
    interrupted: bool = False


def params_only_result(depth: int, width: int, shake_level: str, impl: str) -> BenchResult:
    """Build the model(s), count parameters and FLOPs; no timing, no device."""
    counts = {i: count_parameters(build_model(i, depth, width, shake_level))
              for i in (IMPLEMENTATIONS if impl == "both" else (impl,))}
    if len(set(counts.values())) != 1:   # the weight mapping is one-to-one
        raise MltoolsError(f"parameter counts differ between implementations: {counts}")
    fl = shakeshake_flops(depth, width)
    return BenchResult(params=next(iter(counts.values())),
                       flops_per_image={"forward": fl.forward, "train": fl.train},
                       depth=depth, width=width, shake_level=shake_level, impl=impl,
                       params_only=True, versions={"torch": torch.__version__})


# ---------------------------------------------------------------- devices

def cuda_device_count() -> int:
    """Number of CUDA devices; 0 without CUDA. Probes quietly (no init warnings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.cuda.device_count() if torch.cuda.is_available() else 0
        except Exception:   # noqa: BLE001 - a broken driver counts as no GPU
            return 0


def check_gpu_indices(indices: Sequence[int]) -> None:
    n = cuda_device_count()
    for i in indices:
        if i < 0 or i >= n:
            have = "no CUDA GPU" if n == 0 else f"{n} CUDA GPU(s) (0..{n - 1})"
            raise UsageError(f"no GPU {i}: this machine has {have}; use --device cpu to run on the CPU")
    if len(set(indices)) != len(indices):
        raise UsageError("--gpus lists a GPU twice")


def device_versions(device: torch.device) -> Dict[str, Optional[str]]:
    v: Dict[str, Optional[str]] = {"torch": torch.__version__, "python": platform.python_version(),
                                   "cuda": torch.version.cuda, "cudnn": None, "driver": None}
    if device.type == "cuda":
        v["cudnn"] = str(torch.backends.cudnn.version())
        v["driver"] = _driver_version()
    return v


def _driver_version() -> Optional[str]:
    try:
        from mltools._proc import run, which
        if which("nvidia-smi") is None:
            return None
        res = run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], timeout=20)
        return res.stdout.strip().splitlines()[0] if res.returncode == 0 and res.stdout.strip() else None
    except Exception:   # noqa: BLE001 - the driver version is informative only
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from mltools.env.report import cpu_model_name

    name = cpu_model_name()
    n = torch.get_num_threads()
    return f"{name} ({n} thread{'s' if n != 1 else ''}, {torch.backends.cpu.get_cpu_capability()})"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- distributed

@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def active(self) -> bool:
        return self.world > 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(backend: str, rank: int, world: int, *, master_addr: Optional[str] = None,
                     master_port: Optional[int] = None) -> DistInfo:
    """Join (or create) the default process group; env:// under torchrun."""
    import torch.distributed as dist

    if master_addr is not None:
        os.environ["MASTER_ADDR"] = master_addr
    if master_port is not None:
        os.environ["MASTER_PORT"] = str(master_port)
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return DistInfo(rank, world, int(os.environ.get("LOCAL_RANK", rank)), backend)


def torchrun_info() -> Optional[Tuple[int, int, int]]:
    """(rank, world, local_rank) when started by torchrun with more than one process."""
    if "TORCHELASTIC_RUN_ID" not in os.environ and "LOCAL_RANK" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except (KeyError, ValueError):
        return None
    return (rank, world, local) if world > 1 else None


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel as DDP

    if device.type == "cuda":
        return DDP(model, device_ids=[device.index], output_device=device.index)
    return DDP(model)


def _all_reduce_max(value: float, dist_info: DistInfo, device: torch.device) -> float:
    if not dist_info.active:
        return value
    import torch.distributed as dist

    dev = device if dist_info.backend == "nccl" else torch.device("cpu")
    t = torch.tensor([value], dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _barrier(dist_info: DistInfo, device: torch.device) -> None:
    if dist_info.active:
        import torch.distributed as dist

        if dist_info.backend == "nccl":
            dist.barrier(device_ids=[device.index])
        else:
            dist.barrier()


# ---------------------------------------------------------------- the timed runner

def make_optimizer(model: torch.nn.Module, settings: ImplSettings, lr: float) -> torch.optim.Optimizer:
    kw = dict(lr=lr, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY)
    if settings.optimizer == "SGD (fused)":
        return torch.optim.SGD(model.parameters(), fused=True, **kw)
    return torch.optim.SGD(model.parameters(), foreach=True, **kw)


class Runner:
    """One implementation ready to train and evaluate on one device."""

    def __init__(self, impl: str, config: BenchConfig, device: torch.device,
                 dist_info: DistInfo, batch_source: Callable[[int], Tuple[torch.Tensor, torch.Tensor]],
                 lr: Optional[float] = None, total_steps: Optional[int] = None):
        self.settings = impl_settings(impl, config)
        self.device = device
        self.config = config
        self.batch_source = batch_source
        model = build_model(impl, config.depth, config.width, config.shake_level, config.second_conv)
        model = model.to(device)
        if self.settings.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        global_batch = config.batch_size * dist_info.world
        self.base_lr = lr if lr is not None else BASE_LR * global_batch / BASE_BATCH
        self.optimizer = make_optimizer(model, self.settings, self.base_lr)
        self.total_steps = total_steps
        self.step_count = 0
        train_model = wrap_ddp(model, device) if dist_info.active else model
        self.compile_mode = None
        if self.settings.compiled:
            self.compile_mode = "reduce-overhead" if self.settings.cuda_graphs else None
            self.train_model = torch.compile(train_model, mode=self.compile_mode)
            self.eval_model = torch.compile(model, mode=self.compile_mode)
        else:
            self.train_model, self.eval_model = train_model, model
        self.scaler = (torch.amp.GradScaler("cuda") if self.settings.autocast == "fp16" else None)

    def _autocast(self):
        if self.settings.autocast is None:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.settings.autocast == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def train_step(self, i: int) -> torch.Tensor:
        x, y = self.batch_source(i)
        x = self._prepare(x)
        if self.total_steps:   # cosine schedule per iteration (official train.lua)
            lr = 0.5 * self.base_lr * (1 + math.cos(math.pi * self.step_count / self.total_steps))
            for g in self.optimizer.param_groups:
                g["lr"] = lr
        if self.settings.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        self.model.train()
        with self._autocast():
            loss = F.cross_entropy(self.train_model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.step_count += 1
        return loss.detach()

    @torch.no_grad()
    def eval_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.settings.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        self.model.eval()
        with self._autocast():
            out = self.eval_model(self._prepare(x))
        return out.float()

    def timed(self, fn: Callable[[int], object], first: int, count: int) -> Tuple[float, List[float]]:
        """Run fn(first..first+count-1); return (seconds, per-step ms), synchronised."""
        dev = self.device
        if dev.type == "cuda":
            events = [torch.cuda.Event(enable_timing=True) for _ in range(count + 1)]
            torch.cuda.synchronize(dev)
            events[0].record()
            for k in range(count):
                fn(first + k)
                events[k + 1].record()
            torch.cuda.synchronize(dev)
            per = [events[k].elapsed_time(events[k + 1]) for k in range(count)]
            return sum(per) / 1e3, per
        per = []
        for k in range(count):
            t0 = time.perf_counter()
            fn(first + k)
            per.append((time.perf_counter() - t0) * 1e3)
        return sum(per) / 1e3, per


def _step_times(ms: Sequence[float]) -> StepTimes:
    s = sorted(ms)
    p90 = s[min(len(s) - 1, int(math.ceil(0.9 * len(s))) - 1)]
    return StepTimes(round(statistics.median(s), 4), round(p90, 4), round(s[0], 4), round(s[-1], 4))


def _split_rounds(steps: int, rounds: int) -> List[int]:
    rounds = max(1, min(rounds, steps))
    base, extra = divmod(steps, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def settled(step_ms: Sequence[float], window: int, tolerance: float) -> bool:
    """Steady state: the last ``window`` step times lie within ``tolerance`` of their median."""
    if window < 1 or len(step_ms) < window:
        return False
    last = list(step_ms[-window:])
    med = statistics.median(last)
    return med > 0 and (max(last) - min(last)) / med <= tolerance


def _warm_up(r: Runner, config: BenchConfig, eval_source, progress, name: str,
             all_agree: Callable[[bool], bool] = lambda ok: ok) -> Tuple[List[float], bool]:
    """At least ``config.warmup`` steps, then more until steady (or the limit): (step ms, settled).

    ``all_agree`` turns this process's "steady" into the group's: under DDP every rank must
    take the same number of steps (each one is a collective), so all stop when all are steady."""
    times: List[float] = []
    limit = config.warmup_limit()
    while len(times) < limit:
        if len(times) >= config.warmup and all_agree(settled(times, config.settle_window,
                                                             config.settle_tolerance)):
            break
        _, per = r.timed(r.train_step, len(times), 1)
        times += per
        if progress:
            progress(0, None, f"warming up {name}: step {len(times)}")
    is_settled = config.warmup_limit() == 0 or settled(times, config.settle_window, config.settle_tolerance)
    for i in range(min(2, config.warmup) or 1):   # compile/autotune the eval graph too
        r.eval_logits(eval_source(i)[0])
    return times, is_settled


def _measure(factories: Dict[str, Callable[[], Runner]], config: BenchConfig, device: torch.device,
             dist_info: DistInfo, eval_source: Callable[[int], Tuple[torch.Tensor, torch.Tensor]],
             progress=None, sampler=None) -> Tuple[Dict[str, Runner], Dict[str, dict], bool]:
    """Build and warm up every runner until steady, then time training and eval in alternating
    rounds. Returns (runners, measurements, interrupted): Ctrl-C keeps the rounds that finished.

    Peak memory of an implementation is the device-memory peak while it is
    built and warmed up, above what was allocated before (the shared input
    batches and the other implementation's model), so the two do not mix.
    """
    out: Dict[str, dict] = {}
    runners: Dict[str, Runner] = {}
    total = (config.steps + max(1, config.steps // 2)) * len(factories)
    done = 0
    try:
        for name, make in factories.items():
            base = 0
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            r = runners[name] = make()
            _barrier(dist_info, device)
            t0 = time.perf_counter()
            warm, is_settled = _warm_up(
                r, config, eval_source, progress, name,
                lambda ok: _all_reduce_max(0.0 if ok else 1.0, dist_info, device) == 0.0)
            _sync(device)
            out[name] = {"warmup_s": time.perf_counter() - t0, "warmup_ms": warm, "settled": is_settled,
                         "train_s": 0.0, "train_ms": [], "train_steps": 0,
                         "eval_s": 0.0, "eval_steps": 0, "rounds": [], "eval_rounds": [],
                         "peak_memory": (int(torch.cuda.max_memory_allocated(device)) - base
                                         if device.type == "cuda" else None)}
        offset = max(len(m["warmup_ms"]) for m in out.values())
        for chunk in _split_rounds(config.steps, config.rounds):
            for name, r in runners.items():
                _barrier(dist_info, device)
                if sampler:
                    sampler.start()
                secs, per = r.timed(r.train_step, offset + out[name]["train_steps"], chunk)
                if sampler:
                    sampler.stop()
                m = out[name]
                m["train_s"] += secs
                m["train_ms"] += per
                m["train_steps"] += chunk
                m["rounds"].append(config.batch_size * chunk * dist_info.world / secs if secs > 0 else 0.0)
                done += chunk
                if progress:
                    progress(done, total, f"training {name}")
        for chunk in _split_rounds(max(1, config.steps // 2), config.rounds):
            for name, r in runners.items():
                _barrier(dist_info, device)
                if sampler:
                    sampler.start()
                secs, _ = r.timed(lambda i, r=r: r.eval_logits(eval_source(i)[0]), 0, chunk)
                if sampler:
                    sampler.stop()
                m = out[name]
                m["eval_s"] += secs
                m["eval_steps"] += chunk
                m["eval_rounds"].append(config.batch_size * chunk * dist_info.world / secs if secs > 0 else 0.0)
                done += chunk
                if progress:
                    progress(done, total, f"eval {name}")
    except KeyboardInterrupt:
        if sampler:
            sampler.stop()
        return runners, {n: m for n, m in out.items() if m["train_steps"]}, True
    for name in runners:
        m = out[name]
        # Aggregate rates use the slowest rank's time.
        m["train_s"] = _all_reduce_max(m["train_s"], dist_info, device)
        m["eval_s"] = _all_reduce_max(m["eval_s"], dist_info, device)
    return runners, out, False


def _batch_sources(config: BenchConfig, device: torch.device, dist_info: DistInfo, cifar=None):
    """(train source, eval source): step index → (images, labels)."""
    from mltools.shakeshake import data as data_mod

    if cifar is None:
        x, y = data_mod.synthetic_batches(SYNTHETIC_POOL, config.batch_size, device,
                                          seed=config.seed + 1000 * dist_info.rank)
        src = lambda i: (x[i % SYNTHETIC_POOL], y[i % SYNTHETIC_POOL])   # noqa: E731
        return src, src
    gen = torch.Generator(device=device).manual_seed(config.seed + 1000 * dist_info.rank)
    n = cifar.train_size

    def train_src(i: int):
        # augmentation on the device counts in the step, as it would in training
        idx = torch.randint(0, n, (config.batch_size,), device=device, generator=gen)
        return data_mod.augment(cifar.train_x[idx], gen), cifar.train_y[idx]

    tb = config.batch_size
    ntest = cifar.test_x.shape[0]

    def eval_src(i: int):
        start = (i * tb) % max(1, ntest - tb + 1)
        return data_mod.normalise(cifar.test_x[start:start + tb]), cifar.test_y[start:start + tb]

    return train_src, eval_src


def _peak(config: BenchConfig, device_label: str, precision: str) -> Optional[Peak]:
    if config.peak_tflops is not None:
        return given_peak(config.peak_tflops, precision)
    return find_peak(device_label, precision)


def _impl_result(name: str, r: Runner, m: dict, config: BenchConfig, world: int,
                 device_label: str, train_flops: int) -> ImplResult:
    images = config.batch_size * m["train_steps"] * world
    ips = images / m["train_s"] if m["train_s"] > 0 else float("inf")
    eval_ips = (config.batch_size * m["eval_steps"] * world / m["eval_s"] if m["eval_s"] > 0 else
                (float("inf") if m["eval_steps"] else None))
    achieved = train_flops * ips / 1e12
    peak = _peak(config, device_label, r.settings.precision)
    mfu = achieved / (peak.tflops * world) if peak else None
    s = r.settings
    return ImplResult(impl=name, precision=s.precision, autocast=s.autocast, channels_last=s.channels_last,
                      compiled=s.compiled, cuda_graphs=s.cuda_graphs, second_conv=s.second_conv,
                      optimizer=s.optimizer, images_per_s=round(ips, 2),
                      eval_images_per_s=None if eval_ips is None else round(eval_ips, 2),
                      step_ms=_step_times(m["train_ms"]),
                      warmup_s=round(m["warmup_s"], 3), peak_memory_bytes=m["peak_memory"],
                      achieved_tflops=round(achieved, 4), mfu=None if mfu is None else round(mfu, 4),
                      peak_tflops=peak.tflops if peak else None,
                      round_images_per_s=tuple(round(v, 2) for v in m["rounds"]), peak=peak,
                      warmup_steps=len(m["warmup_ms"]), settled=m["settled"], timed_steps=m["train_steps"])


def _record(recorder: Recorder, name: str, m: dict, config: BenchConfig) -> None:
    """The cases of one implementation: images/s per round (training, eval) and every step's time."""
    params = {"impl": name, "batch_size": config.batch_size, "depth": config.depth, "width": config.width}
    recorder.add(f"{name}/train", "images/s", HIGHER, m["rounds"], params=dict(params, what="training rounds"))
    recorder.add(f"{name}/step", "ms", LOWER, m["train_ms"], warmup=m["warmup_ms"],
                 params=dict(params, what="timed training steps", warmup_steps=len(m["warmup_ms"]),
                             settled=m["settled"]))
    recorder.add(f"{name}/eval", "images/s", HIGHER, m["eval_rounds"], params=dict(params, what="eval rounds"))


def _open_telemetry(config: BenchConfig, device: torch.device, rank0: bool):
    """(Sampler or None, GPU states for the machine, note) for rank 0's CUDA device."""
    if device.type != "cuda" or not config.telemetry or not rank0:
        return None, (), None
    from mltools.shakeshake import telemetry as T

    nvml, note = T.open_nvml()
    if nvml is None:
        return None, (), note
    index = device.index if device.index is not None else torch.cuda.current_device()
    bus = _pci_bus_id(index)
    states = T.gpu_states(nvml, [(index, bus)])
    handle = T.handle_for(nvml, bus, index)
    if handle is None:
        return None, states, f"no GPU telemetry: NVML has no device at PCI {bus} (index {index})"
    return T.Sampler(nvml, handle, torch.cuda.get_device_name(device)), states, None


def _pci_bus_id(index: int) -> Optional[str]:
    """The device's PCI address as NVML spells it, from torch's device properties
    (None with older torch: NVML's index order then has to match CUDA's)."""
    from mltools.numa.pci import torch_busid

    return torch_busid(torch.cuda.get_device_properties(index), domain_digits=8)


def _set_backend_flags(device: torch.device, tf32: Optional[bool] = None) -> None:
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    if tf32 is not None:
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32


def _check_world(config: BenchConfig, dist_info: DistInfo) -> None:
    if config.cuda_graphs and dist_info.active:
        raise UsageError("--cuda-graphs is for one process: drop it with --gpus or torchrun")


def run_benchmark(config: BenchConfig, dist_info: DistInfo = DistInfo(),
                  progress: Optional[Callable[..., None]] = None, command: Sequence[str] = ()) -> BenchResult:
    """Time every implementation in ``config.impls`` on ``config.device``.

    In a multi-process group every rank calls this; all ranks return the same
    aggregate figures (rank 0's step times, memory and GPU telemetry).
    ``progress(done, total, detail)`` follows the timed steps (``total`` None
    while warming up); ``command`` is recorded with the result.
    """
    config.validate()
    _check_world(config, dist_info)
    device = torch.device(config.device)
    _set_backend_flags(device, config.tf32)
    torch.manual_seed(config.seed + dist_info.rank)
    sampler, gpu_states, telemetry_note = _open_telemetry(config, device, dist_info.rank == 0)
    recorder = Recorder(command, threads=torch.get_num_threads() if device.type == "cpu" else 1,
                        machine=_machine(gpu_states, telemetry_note))
    cifar = None
    if config.data_dir:
        from mltools.shakeshake.data import load_cifar10
        cifar = load_cifar10(config.data_dir, device)
    label = device_name(device)
    fl = shakeshake_flops(config.depth, config.width)
    train_src, eval_src = _batch_sources(config, device, dist_info, cifar)

    single: Dict[str, float] = {}
    if dist_info.active:
        # Scaling baseline: rank 0 alone, same per-process batch, no DDP.
        if dist_info.rank == 0:
            if progress:
                progress(0, None, "one process alone, for the scaling efficiency")
            solo = {i: (lambda i=i: Runner(i, config, device, DistInfo(), train_src)) for i in config.impls}
            solo, m, _ = _measure(solo, config, device, DistInfo(), eval_src)
            single = {i: config.batch_size * config.steps / m[i]["train_s"] for i in config.impls}
            del solo
        _barrier(dist_info, device)

    factories = {i: (lambda i=i: Runner(i, config, device, dist_info, train_src)) for i in config.impls}
    tf32 = {"cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}
    runners, measured, interrupted = _measure(factories, config, device, dist_info, eval_src, progress, sampler)
    results = []
    for name, r in runners.items():
        if name not in measured:
            continue                    # interrupted before its first timed round
        res = _impl_result(name, r, measured[name], config, dist_info.world, label, fl.train)
        _record(recorder, name, measured[name], config)
        if dist_info.active and not interrupted:
            single_t = _broadcast_from_rank0(single.get(name, 0.0), dist_info, device)
            res = replace(res, single_process_images_per_s=round(single_t, 2),
                          scaling_efficiency=round(res.images_per_s / (dist_info.world * single_t), 4))
        results.append(res)
    telemetry: Tuple[GpuTelemetry, ...] = ()
    notes: List[str] = []
    if sampler is not None:
        telemetry = (sampler.summary(),)
        from mltools.shakeshake.telemetry import close_nvml
        close_nvml(sampler.nvml)
    elif telemetry_note:
        notes.append(telemetry_note)
    throttled = any(t.throttled for t in telemetry)
    for t in telemetry:
        if t.throttled:
            notes.append(f"THROTTLED: {t.gpu} slowed down during the timed steps ("
                         + ", ".join(f"{r} in {100 * t.reasons[r]:.0f}% of samples" for r in t.throttle_reasons)
                         + "): the figures are below what this GPU does when it is not held back")
    for res in results:
        if res.settled is False:
            notes.append(f"{res.impl}: the step time had not settled after {res.warmup_steps} warm-up steps "
                         f"(last {config.settle_window} not within {100 * config.settle_tolerance:.0f}%): "
                         "raise --max-warmup")
    if interrupted:
        notes.append("interrupted: only the rounds that had finished are counted")
    params = count_parameters(next(iter(runners.values())).model) if runners else \
        count_parameters(build_model(config.impls[0], config.depth, config.width, config.shake_level))
    result = _assemble(config, dist_info, device, label, fl, results, tf32, params=params,
                       data="synthetic" if cifar is None else cifar.directory)
    return replace(result, telemetry=telemetry, throttled=throttled, machine=recorder.machine,
                   run=recorder.finish(), cases=tuple(recorder.cases), notes=tuple(notes), interrupted=interrupted)


def _machine(gpu_states, note) -> Machine:
    from mltools.env.machine import collect_machine

    return collect_machine(gpus=tuple(gpu_states), gpu_note=note)


def _broadcast_from_rank0(value: float, dist_info: DistInfo, device: torch.device) -> float:
    if not dist_info.active:
        return value
    import torch.distributed as dist

    dev = device if dist_info.backend == "nccl" else torch.device("cpu")
    t = torch.tensor([value], dtype=torch.float64, device=dev)
    dist.broadcast(t, src=0)
    return float(t.item())


def _assemble(config, dist_info, device, label, fl, results, tf32, params, data) -> BenchResult:
    by = {r.impl: r for r in results}
    speedup = None
    if "reference" in by and "fast" in by and by["reference"].images_per_s > 0:
        speedup = round(by["fast"].images_per_s / by["reference"].images_per_s, 4)
    impl = "both" if len(config.impls) == 2 else config.impls[0]
    settings = dict(tf32)
    try:   # torch >= 2.9 names the precision per backend
        settings["cudnn_conv_fp32_precision"] = torch.backends.cudnn.conv.fp32_precision
    except AttributeError:
        pass
    settings.update({"threads": torch.get_num_threads(), "rounds": config.rounds, "seed": config.seed,
                     "optimizer": "SGD nesterov momentum 0.9, weight decay 1e-4, "
                                  f"lr {BASE_LR} x global batch / {BASE_BATCH}"})
    return BenchResult(
        params=params, flops_per_image={"forward": fl.forward, "train": fl.train},
        depth=config.depth, width=config.width, shake_level=config.shake_level, impl=impl,
        params_only=False, device=str(device), device_name=label, batch_size=config.batch_size,
        global_batch_size=config.batch_size * dist_info.world, world_size=dist_info.world,
        backend=dist_info.backend, data=data, steps=config.steps, warmup=config.warmup,
        images_per_s={r.impl: r.images_per_s for r in results},
        mfu={r.impl: r.mfu for r in results}, speedup=speedup, implementations=tuple(results),
        versions=device_versions(device), settings=settings)


# ---------------------------------------------------------------- training for real

def run_training(config: BenchConfig, dist_info: DistInfo = DistInfo(),
                 on_epoch: Optional[Callable[[EpochResult], None]] = None,
                 on_step: Optional[Callable[[int, int], None]] = None, command: Sequence[str] = ()) -> BenchResult:
    """Train one implementation on CIFAR-10 for ``config.train_epochs`` epochs
    (cosine LR per iteration from 0.2 × batch/128) and report test accuracy per epoch.
    Ctrl-C returns the epochs that had finished, marked ``interrupted``."""
    config.validate()
    _check_world(config, dist_info)
    from mltools.shakeshake import data as data_mod

    device = torch.device(config.device)
    _set_backend_flags(device, config.tf32)
    torch.manual_seed(config.seed + dist_info.rank)
    recorder = Recorder(command, threads=torch.get_num_threads() if device.type == "cpu" else 1)
    cifar = data_mod.load_cifar10(config.data_dir, device)
    steps_per_epoch = cifar.train_size // (config.batch_size * dist_info.world)
    if steps_per_epoch < 1:
        raise InputError(f"{config.data_dir}: fewer training images than one global batch")
    total = steps_per_epoch * config.train_epochs
    impl = config.impls[0]
    epoch_batches: List = []
    runner = Runner(impl, config, device, dist_info, lambda i: epoch_batches[i], total_steps=total)
    gen = torch.Generator(device=device).manual_seed(config.seed)   # same permutation on every rank
    epochs: List[EpochResult] = []
    try:
        _train_epochs(config, dist_info, device, cifar, runner, epoch_batches, gen, steps_per_epoch, epochs,
                      on_epoch, on_step)
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    fl = shakeshake_flops(config.depth, config.width)
    label = device_name(device)
    tf32 = {"cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark)}
    results = []
    if epochs:
        best = max(e.train_images_per_s for e in epochs)
        achieved = fl.train * best / 1e12
        s = runner.settings
        peak = _peak(config, label, s.precision)
        results.append(ImplResult(
            impl=impl, precision=s.precision, autocast=s.autocast, channels_last=s.channels_last,
            compiled=s.compiled, cuda_graphs=s.cuda_graphs, second_conv=s.second_conv,
            optimizer=s.optimizer, images_per_s=best, eval_images_per_s=None, step_ms=None, warmup_s=None,
            peak_memory_bytes=int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
            achieved_tflops=round(achieved, 4),
            mfu=round(achieved / (peak.tflops * dist_info.world), 4) if peak else None,
            peak_tflops=peak.tflops if peak else None, training=tuple(epochs), peak=peak))
        recorder.add(f"{impl}/train-epochs", "images/s", HIGHER, [e.train_images_per_s for e in epochs],
                     params={"impl": impl, "what": "training epochs", "batch_size": config.batch_size})
    result = _assemble(replace(config, steps=total, warmup=0), dist_info, device, label, fl, results,
                       tf32, count_parameters(runner.model), cifar.directory)
    return replace(result, machine=recorder.machine, run=recorder.finish(), cases=tuple(recorder.cases),
                   interrupted=interrupted,
                   notes=(f"interrupted: {len(epochs)} of {config.train_epochs} epochs finished",) if interrupted
                   else ())


def _train_epochs(config, dist_info, device, cifar, runner, epoch_batches, gen, steps_per_epoch, epochs,
                  on_epoch, on_step) -> None:
    from mltools.shakeshake import data as data_mod

    for epoch in range(1, config.train_epochs + 1):
        t0 = time.perf_counter()
        epoch_batches[:] = []
        loss_sum = torch.zeros((), device=device)
        for i, batch in enumerate(data_mod.train_batches(cifar, config.batch_size, rank=dist_info.rank,
                                                         world=dist_info.world, generator=gen)):
            epoch_batches.append(batch)
            loss_sum += runner.train_step(i).float()
            epoch_batches[i] = None   # free the batch
            if on_step:
                on_step(i + 1, steps_per_epoch)
        _sync(device)
        secs = time.perf_counter() - t0
        correct = torch.zeros((), device=device, dtype=torch.int64)
        for x, y in data_mod.test_batches(cifar, 500):
            correct += (runner.eval_logits(x).argmax(1) == y).sum()
        acc = float(correct.item()) / cifar.test_x.shape[0]
        secs = _all_reduce_max(secs, dist_info, device)
        ep = EpochResult(epoch, round(float(loss_sum.item()) / steps_per_epoch, 5),
                         round(steps_per_epoch * config.batch_size * dist_info.world / secs, 2),
                         round(acc, 5), round(secs, 3))
        epochs.append(ep)
        if on_epoch:
            on_epoch(ep)


# ---------------------------------------------------------------- --gpus: one process per GPU

def _spawned_worker(rank: int, devices: Tuple[str, ...], config: BenchConfig, port: int, queue,
                    command: Sequence[str] = ()) -> None:
    import torch.distributed as dist

    try:
        os.environ["LOCAL_RANK"] = str(rank)
        backend = "nccl" if devices[rank].startswith("cuda") else "gloo"
        if backend == "gloo":
            torch.set_num_threads(max(1, torch.get_num_threads() // len(devices)))
        dist_info = init_distributed(backend, rank, len(devices), master_addr="127.0.0.1", master_port=port)
        cfg = replace(config, device=devices[rank])
        res = (run_training(cfg, dist_info, command=command) if cfg.train_epochs
               else run_benchmark(cfg, dist_info, command=command))
        if rank == 0:
            queue.put(("ok", res))
        # Leave together: a rank that tears gloo down while its peer still
        # holds the connection can abort the peer ("terminate called without
        # an active exception"), which reads as a failed run.
        _barrier(dist_info, torch.device(cfg.device))
    except BaseException as exc:   # noqa: BLE001 - reported by the parent as one line
        msg = exc.message if isinstance(exc, MltoolsError) else f"{type(exc).__name__}: {exc}"
        queue.put(("error", f"{devices[rank]} (rank {rank}): {msg}"))
        # A non-zero exit makes the parent stop the other ranks instead of
        # leaving them waiting in a collective.
        raise SystemExit(1)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_on_gpus(gpus: Sequence[int], config: BenchConfig, command: Sequence[str] = ()) -> BenchResult:
    """Spawn one DDP process per GPU (NCCL on 127.0.0.1) and return rank 0's result."""
    return run_spawned([f"cuda:{g}" for g in gpus], config, command)


def run_spawned(devices: Sequence[str], config: BenchConfig, command: Sequence[str] = ()) -> BenchResult:
    """One DDP process per device (NCCL for CUDA devices, gloo for "cpu"), rank 0's result;
    ``command`` is recorded with it."""
    import torch.multiprocessing as mp

    queue = mp.get_context("spawn").SimpleQueue()
    messages = []
    failure = None
    from contextlib import ExitStack

    from mltools._lifecycle import owned_process

    procs = mp.start_processes(_spawned_worker, args=(tuple(devices), config, free_port(), queue, tuple(command)),
                               nprocs=len(devices), join=False, start_method="spawn")
    with ExitStack() as owned:       # an interrupted run ends the ranks too
        for p in procs.processes:
            owned.enter_context(owned_process(p.pid, own_group=False))
        try:
            while not procs.join(timeout=1):
                while not queue.empty():   # drain, so a worker never blocks on a full pipe
                    messages.append(queue.get())
        except Exception as exc:   # noqa: BLE001 - a worker failed or was killed
            failure = exc
    while not queue.empty():
        messages.append(queue.get())
    errors = [m for status, m in messages if status == "error"]
    if errors:
        raise MltoolsError(errors[0])
    if failure is not None:
        last = str(failure).strip().splitlines()
        raise MltoolsError(f"a worker process failed: {last[-1] if last else type(failure).__name__}")
    results = [m for status, m in messages if status == "ok"]
    if not results:
        raise MltoolsError("the worker processes returned no result")
    return results[0]
