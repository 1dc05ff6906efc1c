"""Text for people of the results every bench report carries, and of ``bench compare``."""
from __future__ import annotations

from typing import Optional

from mltools._text import Table

__all__ = ["run_summary", "render_compare", "ci_percent"]


def ci_percent(stats) -> Optional[str]:
    """The 95% interval as ``±N%`` of the median (half its width), for table cells."""
    if stats is None:
        return None
    return f"±{50 * stats.ci_rel_width:.1f}%"


def run_summary(machine, run, interrupted: bool = False) -> str:
    """The lines under every bench's text: machine, load, noisy figures, interruption."""
    out = [f"machine: {machine.summary()}"]
    if machine.cpu_freq:
        mhz = sorted(set(machine.cpu_freq.values()))
        freq = f"{mhz[0]}" if len(mhz) == 1 else f"{mhz[0]}-{mhz[-1]}"
        out[-1] += f"; {freq} MHz ({machine.cpu_freq_source})"
        if machine.governor:
            out[-1] += f", governor {machine.governor}"
    if run is None:
        return "\n".join(out)
    if run.load_avg_before is not None:
        load = (f"load average {run.load_avg_before:.2f} before, "
                f"{'-' if run.load_avg_after is None else format(run.load_avg_after, '.2f')} after "
                f"(other processes about {run.other_load} on {run.usable_cpus} usable CPUs)")
        if run.busy:
            load += ": BUSY, every figure is suspect"
        out.append(load)
    if run.noisy_cases:
        out.append(f"noisy: {run.noisy_cases} of {run.cases} figures have a 95% interval (or, for NUMA figures, "
                   f"a spread) wider than {100 * run.noise_threshold:.0f}% of the median; marked 'noisy'")
    else:
        out.append(f"noisy: none of {run.cases} figures (95% interval within {100 * run.noise_threshold:.0f}% "
                   "of the median)")
    if interrupted:
        out.append("INTERRUPTED: only what had finished is shown")
    return "\n".join(out)


def _verdict(c) -> str:
    return c.verdict_text + (" (noisy)" if c.noisy else "")


def render_compare(r) -> str:
    out = [f"baseline: {r.baseline} ({r.baseline_benchmark}, {r.baseline_cases} cases)"]
    for fc in r.comparisons:
        out.append(f"\n{fc.path} ({fc.benchmark}) against the baseline")
        for d in fc.machine_differences:
            out.append(f"warning: different machine: {d}")
        if fc.busy:
            out.append("warning: the baseline or this run was measured on a busy machine (load above its CPUs)")
        if fc.interrupted:
            out.append("warning: this run was interrupted: some cases are missing")
        if fc.benchmark != r.baseline_benchmark:
            out.append(f"warning: different benchmark: {r.baseline_benchmark} -> {fc.benchmark}")
        t = Table(["case", "unit", "baseline", "this", "speed-up", "95% interval", "verdict"])
        for c in fc.cases:
            t.add(c.name, c.unit, float(f"{c.baseline_median:.4g}"), float(f"{c.median:.4g}"),
                  f"{c.speedup:.3f}x", f"[{c.speedup_low:.3f}, {c.speedup_high:.3f}]", _verdict(c))
        out.append(t.render())
        s = fc.summary
        out.append(f"{s.faster} faster, {s.slower} slower, {s.not_significant} not significant"
                   + (f", {s.too_few} with too few samples" if s.too_few else "")
                   + (f"; geometric mean of the speed-ups {fc.geometric_mean_speedup:.3f}x"
                      if fc.geometric_mean_speedup is not None else ""))
        if fc.only_in_baseline:
            out.append(f"only in the baseline ({len(fc.only_in_baseline)}): {', '.join(fc.only_in_baseline)}")
        if fc.only_here:
            out.append(f"only in {fc.path} ({len(fc.only_here)}): {', '.join(fc.only_here)}")
    for e in r.errors:
        out.append(f"\nerror: {e.path}: {e.message}")
    if r.fail_if_slower_pct is not None:
        if r.failed:
            out.append(f"\nFAIL: {len(r.too_slow)} case(s) significantly slower by more than "
                       f"{r.fail_if_slower_pct:g}%: " + ", ".join(r.too_slow))
        else:
            out.append(f"\nno case significantly slower by more than {r.fail_if_slower_pct:g}%")
    out.append("\nspeed-up: how many times faster than the baseline (its median over this one for times, "
               "this over its for rates); significant when the 95% interval "
               f"({r.ci_method}) excludes 1")
    return "\n".join(out)
