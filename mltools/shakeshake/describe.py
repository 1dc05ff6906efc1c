"""Text for people of ``mltools bench shakeshake`` (its JSON is the dataclass itself)."""
from __future__ import annotations

from mltools._text import Table, key_values

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
             ("steps", f"{r.steps} timed after {r.warmup} warm-up")]
    trained = [i for i in r.implementations if i.training]
    if trained:
        head[-1] = ("training", f"{len(trained[0].training)} epochs, {r.steps} steps "
                                "(train img/s below: the best epoch)")
    if r.device and r.device.startswith("cuda"):
        head.append(("tf32", "cuDNN convolutions " + ("on" if r.settings.get("cudnn_allow_tf32") else "off")
                     + ", matmul " + ("on" if r.settings.get("matmul_allow_tf32") else "off")))
    out = [key_values(head)]
    t = Table(["impl", "precision", "compile", "train img/s", "eval img/s", "step p50 ms", "p90 ms",
               "warm-up s", "TFLOP/s", "MFU", "peak mem MiB"], title="")
    for i in r.implementations:
        t.add(i.impl, i.precision + (" channels_last" if i.channels_last else ""),
              ("cuda graphs" if i.cuda_graphs else "yes") if i.compiled else "no",
              _num(i.images_per_s), _num(i.eval_images_per_s), _num(i.step_ms and i.step_ms.p50_ms),
              _num(i.step_ms and i.step_ms.p90_ms), _num(i.warmup_s), _num(i.achieved_tflops), _pct(i.mfu),
              None if i.peak_memory_bytes is None else round(i.peak_memory_bytes / 2**20))
    out.append(t.render())
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
    return "\n".join(out)
