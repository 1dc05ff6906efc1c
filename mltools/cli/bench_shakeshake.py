"""``mltools bench shakeshake``: Shake-Shake ResNet training throughput and MFU."""
from __future__ import annotations

import click

from mltools.cli._bench import check_outputs, command_line, output_option, write_output
from mltools.cli._options import json_option, quiet_option
from mltools.cli._output import emit, note, warn


def _parse_gpus(text: str):
    try:
        gpus = [int(p) for p in text.split(",") if p.strip() != ""]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated GPU indices, got {text!r}", param_hint="--gpus")
    if not gpus:
        raise click.BadParameter("no GPU index given", param_hint="--gpus")
    return gpus


@click.command("shakeshake")
@click.option("--depth", type=int, default=26, show_default=True, help="Network depth, 6n+2 (26: 4 blocks per stage).")
@click.option("--width", type=int, default=96, show_default=True, help="Per-branch base width K of 2xKd (32, 64, 96).")
@click.option("--batch-size", type=int, default=128, show_default=True, help="Images per step per process.")
@click.option("--steps", type=int, default=None, help="Timed training steps [50 on GPUs, 3 on the CPU].")
@click.option("--warmup", type=int, default=None,
              help="Untimed warm-up steps at least [10 on GPUs, 1 on the CPU]; more follow until the step "
                   "time settles (the last 3 within 10%), up to --max-warmup.")
@click.option("--max-warmup", type=int, default=None,
              help="Warm-up steps at most while waiting for a steady step time [100 on GPUs, --warmup + 4 "
                   "on the CPU].")
@click.option("--impl", type=click.Choice(["reference", "fast", "both"]), default="both", show_default=True,
              help="Which implementation(s); both alternate in one run and report the speed-up.")
@click.option("--shake-level", type=click.Choice(["image", "batch"]), default="image", show_default=True,
              help="One α/β per image (Shake-Shake-Image) or per block and step.")
@click.option("--gpu", type=int, default=None, help="Run on this CUDA GPU.")
@click.option("--gpus", default=None, metavar="I,J,...", help="Data-parallel over these GPUs (one process each, NCCL).")
@click.option("--device", default=None, metavar="cpu|cuda[:N]", help="Run on this torch device.")
@click.option("--data", "data_dir", type=click.Path(), default=None,
              help="CIFAR-10 python batches (data_batch_1..5, test_batch) instead of synthetic data.")
@click.option("--train-epochs", type=int, default=0, help="With --data: train this many epochs, report test accuracy.")
@click.option("--params-only", is_flag=True, help="Print parameters and FLOPs per image; no device, no timing.")
@click.option("--peak-tflops", type=float, default=None, help="Peak TFLOP/s for MFU (overrides the table of known GPUs).")
@click.option("--compile/--no-compile", "compile_", default=None,
              help="torch.compile the fast model [on for CUDA, off on the CPU].")
@click.option("--cuda-graphs", is_flag=True, help="Fast model: torch.compile mode reduce-overhead (CUDA graphs).")
@click.option("--fast-conv2", type=click.Choice(["grouped", "split"]), default="grouped", show_default=True,
              help="Fast model's second convolutions: one grouped conv or two plain ones.")
@click.option("--tf32/--no-tf32", "tf32", default=None,
              help="Allow TF32 in cuDNN convolutions and matmuls [torch's default: convolutions on].")
@click.option("--seed", type=int, default=0, show_default=True)
@output_option
@json_option
@quiet_option
def shakeshake_cmd(depth, width, batch_size, steps, warmup, max_warmup, impl, shake_level, gpu, gpus, device,
                   data_dir, train_epochs, params_only, peak_tflops, compile_, cuda_graphs, fast_conv2, tf32, seed,
                   output_path, as_json) -> None:
    """Shake-Shake ResNet training throughput, MFU and fast-vs-reference speed-up.

    Trains Shake-Shake-26 2xKd (Gastaldi 2017) on synthetic CIFAR-shaped data made
    on the device (or CIFAR-10 with --data): images/s for training and eval, step
    time percentiles, peak memory, achieved TFLOP/s and MFU (architecture FLOPs
    over the peak of the precision used). `reference` is two-branch eager fp32
    (TF32 convolutions where torch enables them); `fast` fuses the branches, uses
    channels_last, bf16 autocast and torch.compile on GPUs.

    Without a GPU it falls back to the CPU with a warning. Multi-GPU: --gpus 0,1
    or torchrun (NCCL; gloo on CPUs); --batch-size is per process.

    Warm-up runs until the step time settles (the count is reported). On GPUs,
    NVML (pip install 'mltools[gpu]') samples clocks, power, temperature and
    throttle reasons during the timed steps, and a throttled run says so. MFU
    names the peak it used and its source. Every round and step is kept
    (--output, --json). Ctrl-C prints the rounds that had finished and exits
    130 (143 for SIGTERM).
    """
    from mltools.shakeshake import require_torch

    require_torch()
    from mltools.errors import UsageError
    from mltools.shakeshake import bench as B
    from mltools.shakeshake.describe import render_shakeshake

    if depth < 8 or (depth - 2) % 6:
        raise UsageError(f"--depth must be 6n+2 with n >= 1 (8, 14, 20, 26, ...), got {depth}")
    if width < 2 or width % 2:
        raise UsageError(f"--width must be an even number >= 2, got {width}")
    check_outputs(output_path)
    if params_only:
        result = B.params_only_result(depth, width, shake_level, impl)
        write_output(result, output_path)
        emit(result, as_json, render_shakeshake)
        return
    if data_dir is not None:   # fail fast, before spawning or building anything
        from pathlib import Path

        from mltools.errors import InputError
        from mltools.shakeshake.data import _find_dir
        if not Path(data_dir).is_dir():
            raise InputError(f"{data_dir}: no such directory")
        _find_dir(Path(data_dir))
    if train_epochs and data_dir is None:
        raise UsageError("--train-epochs needs --data DIR (CIFAR-10 python batches)")
    if sum(x is not None for x in (gpu, gpus, device)) > 1:
        raise UsageError("give only one of --gpu, --gpus and --device")
    gpu_list = _parse_gpus(gpus) if gpus is not None else None
    trun = B.torchrun_info()
    if trun is not None and (gpu_list or gpu is not None):
        raise UsageError("under torchrun each process uses its LOCAL_RANK GPU: drop --gpu/--gpus")

    if device is not None:
        dev = device.strip().lower()
        if dev == "cuda":
            dev = "cuda:0"
        if dev.startswith("cuda:"):
            try:
                B.check_gpu_indices([int(dev[5:])])
            except ValueError:
                raise UsageError(f"--device: not a device: {device!r} (cpu, cuda or cuda:N)") from None
        elif dev != "cpu":
            raise UsageError(f"--device: not a device: {device!r} (cpu, cuda or cuda:N)")
    elif gpu is not None:
        B.check_gpu_indices([gpu])
        dev = f"cuda:{gpu}"
    elif gpu_list is not None:
        B.check_gpu_indices(gpu_list)
        dev = f"cuda:{gpu_list[0]}"
    elif trun is not None:
        dev = f"cuda:{trun[2]}" if B.cuda_device_count() > trun[2] else "cpu"
    elif B.cuda_device_count() > 0:
        dev = "cuda:0"
    else:
        dev = "cpu"
        warn("no CUDA GPU found: running on the CPU (give --device cpu to silence this)")

    on_cpu = dev == "cpu"
    if steps is None:
        steps = 3 if on_cpu else 50
    if warmup is None:
        warmup = 1 if on_cpu else 10
    config = B.BenchConfig(depth=depth, width=width, batch_size=batch_size, steps=steps, warmup=warmup,
                           impls=("reference", "fast") if impl == "both" else (impl,),
                           shake_level=shake_level, device=dev, compile=compile_, cuda_graphs=cuda_graphs,
                           second_conv=fast_conv2, data_dir=data_dir, train_epochs=train_epochs,
                           peak_tflops=peak_tflops, seed=seed, tf32=tf32, max_warmup=max_warmup)
    config.validate()
    if cuda_graphs and (trun is not None or (gpu_list is not None and len(gpu_list) > 1)):
        raise UsageError("--cuda-graphs is for one process: drop it with --gpus or torchrun")

    if gpu_list is not None and len(gpu_list) > 1:
        result = B.run_on_gpus(gpu_list, config, command_line())
    elif trun is not None:
        rank, world, _ = trun
        info = B.init_distributed("gloo" if on_cpu else "nccl", rank, world)
        result = _run_local(B, config, info)
        if rank != 0:
            return   # rank 0 reports for everyone
    else:
        result = _run_local(B, config, B.DistInfo())
    write_output(result, output_path)
    emit(result, as_json, render_shakeshake)


def _run_local(B, config, info):
    from mltools.cli._output import Progress

    if config.train_epochs:
        bar = Progress("training", None) if info.rank == 0 else None

        def on_step(i, total):
            if bar is not None:
                bar.total = total
                bar.done = i - 1
                bar.advance(1)

        def on_epoch(ep):
            if bar is not None:
                bar.close()
                note(f"epoch {ep.epoch}: loss {ep.train_loss:.4f}, test accuracy {100 * ep.test_accuracy:.2f}%, "
                     f"{ep.train_images_per_s:,.0f} img/s")
        try:
            return B.run_training(config, info, on_epoch=on_epoch, on_step=on_step, command=command_line())
        finally:
            if bar is not None:
                bar.close()
    if info.rank != 0:
        return B.run_benchmark(config, info, command=command_line())
    with Progress("bench shakeshake") as bar:
        def progress(done, total=None, detail=""):
            if total is None:
                bar.status(detail)        # warming up: no count yet
            else:
                bar.update(done, total, detail)
        return B.run_benchmark(config, info, progress=progress, command=command_line())
