"""Text for people of ``mltools malloc-fail`` runs and sweeps (their JSON is the dataclasses)."""
from __future__ import annotations

from typing import TYPE_CHECKING, List

from mltools._text import Table

if TYPE_CHECKING:
    from mltools.mallocfail.run import RunReport
    from mltools.mallocfail.sweep import SweepReport

__all__ = ["render_report", "render_sweep"]


def _short(frame) -> str:
    return str(frame) if frame is not None else "?"


def render_report(report: "RunReport") -> str:
    lines: List[str] = []
    spec = " ".join(report.spec.cli_args()) or "(count only)"
    lines.append(f"malloc-fail: {spec}; scope {report.scope}; target {report.target}")
    active = [c for c in report.counts if c.calls]
    if active:
        lines.append("  calls   " + ", ".join(
            f"{c.function} {c.calls}" + (f" ({c.counted} counted)" if c.counted != c.calls else "")
            + (f" [{c.failed} failed]" if c.failed else "") for c in active))
    if any(p.injects and p.exited_normally for p in report.processes):
        lines.append(f"  counted {report.counted_total}; failures injected {report.failures_injected}")
    else:
        lines.append(f"  failures injected {report.failures_injected} (call counts are written at exit: "
                     "the target did not exit normally)")
    for f in report.failures[:10]:
        lines.append(f"  failed  #{f.index} {f.function}({f.size}) pid {f.pid} "
                     f"at {_short(f.user_site or f.caller)}")
        if f.user_site is not None and f.user_site != f.caller:
            lines.append(f"          raw caller {_short(f.caller)}")
    if len(report.failures) > 10:
        lines.append(f"  … {len(report.failures) - 10} more failure records (see --report)")
    if report.crash_site is not None:
        lines.append(f"  died at {_short(report.crash_site)}")
    oc = report.outcome
    lines.append(f"  outcome {oc.class_name}" + (f" ({oc.reason})" if oc.reason else "") + f": {oc.detail}")
    lines.append(f"  exit status {report.exit_status}" + (f" ({report.signal})" if report.signal else ""))
    lines.extend(f"  note: {n}" for n in report.notes)
    return "\n".join(lines)


def render_sweep(rep: "SweepReport") -> str:
    lines = [f"malloc-fail sweep: {rep.program}" + (" (persistent)" if rep.persistent else ""),
             f"  baseline: {rep.baseline.counted_total} counted calls, exit {rep.baseline.exit_status}, "
             f"{rep.baseline.elapsed_s:.3f} s",
             f"  tested {rep.points_tested} points ({rep.forked} in forked children, {rep.rerun} re-run"
             + (f", {rep.duplicates_skipped} duplicate stacks skipped" if rep.duplicates_skipped else "")
             + f") in {rep.elapsed_s:.2f} s",
             "  " + ", ".join(f"{k} {v}" for k, v in rep.by_class.items()), ""]
    t = Table(["class", "reason", "points", "first", "call site"])
    for s in rep.sites:
        t.add(s.class_name, s.reason or "", s.points, s.first_index, s.site)
    lines.append(t.render())
    replays = [s for s in rep.sites if s.replay]
    if replays:
        lines.append("")
        lines.append("replay:")
        for s in replays:
            lines.append(f"  # {s.class_name}{' (' + s.reason + ')' if s.reason else ''} at {s.site}"
                         + (f"; died at {s.crash_site}" if s.crash_site else ""))
            lines.append(f"  {s.replay}")
    return "\n".join(lines)
