"""Text for people of ``mltools malloc-fail`` runs and sweeps (their JSON is the dataclasses)."""
from __future__ import annotations

from typing import TYPE_CHECKING, List

from mltools._text import Table

if TYPE_CHECKING:
    from mltools.mallocfail.run import RunReport
    from mltools.mallocfail.sweep import SweepReport

__all__ = ["render_report", "render_sweep", "process_table"]


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
    injecting = [p for p in report.processes if p.injects]
    if any(p.exited_normally for p in injecting):
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
    if len(injecting) > 1:
        lines.append("")
        lines.append(process_table(report.processes))
    lines.extend(f"  note: {n}" for n in report.notes)
    return "\n".join(lines)


def process_table(processes) -> str:
    """Each process the shim loaded into, with its own counts, and the total of those that inject."""
    t = Table(["pid", "ppid", "role", "counted", "failed", "exit record", "exe"])
    for p in processes:
        t.add(p.pid, p.ppid, p.role, p.counted_total if p.exited_normally else "?", p.failed_total,
              "yes" if p.exited_normally else "no", p.exe)
    injecting = [p for p in processes if p.injects]
    t.add("total", "", "injecting", sum(p.counted_total for p in injecting),
          sum(p.failed_total for p in injecting), "", "")
    return t.render()


_FALLBACK = {"libc-caller": "called from inside libc", "threads": "more than one thread",
             "fork-failed": "fork failed", "child-lost": "the target reaped the child"}


def render_sweep(rep: "SweepReport") -> str:
    lines = [f"malloc-fail sweep: {rep.program}" + (" (persistent)" if rep.persistent else "")
             + (" -- INTERRUPTED: the points finished before the interrupt" if rep.interrupted else ""),
             f"  baseline: {rep.baseline.counted_total} counted calls, exit {rep.baseline.exit_status} "
             f"(a plain run: exit {rep.baseline.plain_exit_status}), {rep.baseline.elapsed_s:.3f} s",
             f"  ran {rep.points_run} points ({rep.forked} in forked children, {rep.rerun} re-run), "
             f"{rep.not_reached} not reached"
             + (f"; {rep.duplicates_skipped} duplicate stacks skipped" if rep.duplicates_skipped else "")
             + f"; {rep.elapsed_s:.2f} s",
             "  " + ", ".join(f"{k} {v}" for k, v in rep.by_class.items())]
    if rep.fork_fallbacks:
        lines.append("  not forked (re-run instead): " + ", ".join(
            f"{n} ({_FALLBACK.get(k, k)})" for k, n in sorted(rep.fork_fallbacks.items())))
    lines.append("")
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
