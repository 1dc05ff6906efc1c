"""Text for people of ``mltools bench shakeshake`` (its JSON is the dataclass itself)."""
from __future__ import annotations

from mltools._text import Table, key_values
from mltools.results.describe import run_summary

__all__ = ["render_shakeshake"]


def _fmt_rate(v) -> str:
    return "-" if v is None else f"{v:,.1f}"


def _num(v):
    """Readable table numbers: integers from 100 up, else 3 significant digits."""
    if v is None:
        return None
    return int(round(v)) if abs(v) >= 100 else float(f"{v:.3g}")


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def render_shakeshake(r) -> str:
    head = [("model", f"Shake-Shake-{r.depth} 2x{r.width}d, shake per {r.shake_level}"),
            ("parameters", f"{r.params:,}"),
            ("FLOPs per image", f"{r.flops_per_image['forward'] / 1e9:.4f} G forward, "
                                f"{r.flops_per_image['train'] / 1e9:.4f} G training")]
    if r.params_only:
        return key_values(head)
    v = r.versions
    head += [("device", f"{r.device}: {r.device_name}"),
             ("versions", ", ".join(f"{k} {v[k]}" for k in ("torch", "cuda", "cudnn", "driver") if v.get(k))),
             ("batch", f"{r.batch_size} per process" + (f" x {r.world_size} processes ({r.backend}) = "
                                                        f"{r.global_batch_size}" if r.world_size > 1 else "")),
             ("data", r.data),
             ("steps", f"{r.steps} timed after warm-up (at least {r.warmup} steps, until the step time settles)")]
    trained = [i for i in r.implementations if i.training]
    if trained:
        head[-1] = ("training", f"{len(trained[0].training)} epochs, {r.steps} steps "
                                "(train img/s below: the best epoch)")
    if r.device and r.device.startswith("cuda"):
        head.append(("tf32", "cuDNN convolutions " + ("on" if r.settings.get("cudnn_allow_tf32") else "off")
                     + ", matmul " + ("on" if r.settings.get("matmul_allow_tf32") else "off")))
    out = [key_values(head)]
    cases = {c.name: c for c in r.cases}
    t = Table(["impl", "precision", "compile", "train img/s", "rounds min-max", "eval img/s", "step p50 ms",
               "p90 ms", "warm-up", "TFLOP/s", "MFU", "peak mem MiB", ""], title="")
    for i in r.implementations:
        rounds = cases.get(f"{i.impl}/train")
        step = cases.get(f"{i.impl}/step")
        warm = "-" if i.warmup_s is None else (f"{i.warmup_steps} steps, {i.warmup_s:.3g} s"
                                               + ("" if i.settled is not False else ", not settled"))
        noisy = any(c is not None and c.stats.noisy for c in (rounds, step))
        t.add(i.impl, i.precision + (" channels_last" if i.channels_last else ""),
              ("cuda graphs" if i.cuda_graphs else "yes") if i.compiled else "no",
              _num(i.images_per_s), f"{_num(rounds.stats.min)}-{_num(rounds.stats.max)}" if rounds else None,
              _num(i.eval_images_per_s), _num(i.step_ms and i.step_ms.p50_ms),
              _num(i.step_ms and i.step_ms.p90_ms), warm, _num(i.achieved_tflops), _pct(i.mfu),
              None if i.peak_memory_bytes is None else round(i.peak_memory_bytes / 2**20), "noisy" if noisy else "")
    out.append(t.render())
    for i in r.implementations:
        if i.peak is not None:
            out.append(f"MFU of {i.impl}: {i.achieved_tflops:.4g} / {i.peak.tflops:g} TFLOP/s, the {i.peak.precision} "
                       f"peak of the {i.peak.gpu} ({i.peak.source})")
    for tm in r.telemetry:
        def rng(x, unit):
            return "-" if x is None else f"{x.min:.0f}-{x.max:.0f} {unit} (median {x.median:.0f})"
        out.append(f"GPU telemetry ({tm.samples} NVML samples every {tm.interval_s:g} s while timed): "
                   f"SM clock {rng(tm.sm_clock_mhz, 'MHz')} of max {tm.max_sm_clock_mhz or '-'}, "
                   f"memory clock {rng(tm.mem_clock_mhz, 'MHz')}, power {rng(tm.power_w, 'W')} of "
                   f"{tm.power_limit_w or '-'} W, temperature {rng(tm.temperature_c, 'C')}; "
                   + ("THROTTLED: " + ", ".join(tm.throttle_reasons) if tm.throttled else "not throttled")
                   + (f"; clock event reasons {tm.reasons}" if tm.reasons else "")
                   + (f"; {tm.note}" if tm.note else ""))
    if r.world_size > 1:
        for i in r.implementations:
            out.append(f"{i.impl}: one process alone {_fmt_rate(i.single_process_images_per_s)} img/s, "
                       f"scaling efficiency {_pct(i.scaling_efficiency)} over {r.world_size} processes")
    for i in r.implementations:
        if i.training:
            e = Table(["epoch", "train loss", "train img/s", "test accuracy", "seconds"], title=f"\ntraining ({i.impl})")
            for ep in i.training:
                e.add(ep.epoch, ep.train_loss, ep.train_images_per_s, f"{100 * ep.test_accuracy:.2f}%", ep.seconds)
            out.append(e.render())
    if r.speedup is not None:
        out.append(f"\nspeed-up fast / reference: {r.speedup:.2f}x (training images/s, same run)")
    if any(i.mfu is None for i in r.implementations):
        out.append("MFU: unknown peak for this device (give --peak-tflops)")
    for n in r.notes:
        out.append(f"note: {n}")
    if r.machine is not None:
        out.append("\n" + run_summary(r.machine, r.run, r.interrupted))
    return "\n".join(out)
