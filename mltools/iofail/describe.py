"""Text for people of ``mltools io-fail`` runs and sweeps (their JSON is the dataclasses)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, List

from mltools._text import Table

if TYPE_CHECKING:
    from mltools.iofail.run import RunReport
    from mltools.iofail.sweep import IoSweepReport

__all__ = ["render_report", "render_sweep"]


def _check(c) -> str:
    if c is None:
        return "-"
    return ("passes" if c.passed else f"fails (exit {c.exit_status})") + (f": {c.detail}" if c.detail else "")


def _call(function, path, path2) -> str:
    if not function:
        return "-"
    where = os.path.basename(path) if path else ""
    if path2:
        where += f" -> {os.path.basename(path2)}"
    return f"{function}({where})"


def _ranges(indices) -> str:
    """[2, 3, 4, 7] -> "2-4, 7"."""
    out = []
    for i in sorted(indices):
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def render_report(report: "RunReport") -> str:
    spec = " ".join(report.spec.cli_args()) or "(count only)"
    lines: List[str] = [f"io-fail: {spec}; scope {report.scope}; target {report.target}"]
    active = [c for c in report.counts if c.calls]
    if active:
        lines.append("  calls   " + ", ".join(
            f"{c.function} {c.calls}" + (f" ({c.eligible} eligible)" if c.eligible != c.calls else "")
            + (f" [{c.failed} failed]" if c.failed else "") for c in active))
    lines.append(f"  eligible {report.eligible_total}; failures injected {report.failures_injected}")
    for f in report.failures[:10]:
        what = "short write" if f.short else f.errno_name
        lines.append(f"  failed  #{f.index} {_call(f.function, f.path, f.path2)} -> {what}, pid {f.pid}")
        if f.python_stack:
            lines.append(f"          at {f.python_stack[0]}")
        lines.append(f"          called from {f.user_site or f.caller}")
    if len(report.failures) > 10:
        lines.append(f"  … {len(report.failures) - 10} more failure records (see --report)")
    if report.crash_site is not None:
        lines.append(f"  died at {report.crash_site}")
    if report.check:
        lines.append(f"  check   {report.check}")
        lines.append(f"          before the run: {_check(report.check_before)}; after: {_check(report.check_after)}")
    oc = report.outcome
    lines.append(f"  outcome {oc.class_name}" + (f" ({oc.reason})" if oc.reason else "") + f": {oc.detail}")
    lines.append(f"  exit status {report.exit_status}" + (f" ({report.signal})" if report.signal else ""))
    lines.extend(f"  note: {n}" for n in report.notes)
    return "\n".join(lines)


def render_sweep(rep: "IoSweepReport") -> str:
    b = rep.baseline
    lines = [f"io-fail sweep: {rep.program}" + (" (persistent)" if rep.persistent else "")
             + (" -- INTERRUPTED: the points finished before the interrupt" if rep.interrupted else ""),
             f"  baseline: {b.eligible_total} eligible calls, exit {b.exit_status} (a plain run: exit "
             f"{b.plain_exit_status}), {b.elapsed_s:.3f} s"]
    if rep.check:
        lines.append(f"  check: {rep.check}: {_check(b.check_before)} before, {_check(b.check_after)} after the "
                     "baseline")
    if rep.state:
        lines.append(f"  state: {rep.state} (put back before every point and at the end)")
    lines.append(f"  ran {rep.points_run} points ({rep.forked} in forked children, {rep.rerun} re-run), "
                 f"{rep.not_reached} not reached; {rep.elapsed_s:.2f} s")
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in rep.by_class.items()))
    lines.append("")
    t = Table(["class", "points", "indices", "call site"])
    for s in rep.sites:
        indices = [p.index for p in rep.points if p.site == s.site and p.outcome.class_name == s.class_name
                   and p.outcome.reason == s.reason]
        t.add(s.class_name + (f" ({s.reason})" if s.reason else ""), s.points, _ranges(indices), s.site)
    lines.append(t.render())
    lines.append("")
    pts = Table(["#", "call", "class", "exit", "check", "site"])
    for p in rep.points:
        pts.add(p.index, _call(p.function, p.path, p.path2) + (" short" if p.short else ""),
                p.outcome.class_name, p.exit_status,
                "-" if p.check is None else ("ok" if p.check.passed else "FAILS"),
                "(past the last eligible call)" if p.outcome.class_name == "not-reached" else p.site)
    lines.append(pts.render())
    replays = [s for s in rep.sites if s.replay]
    if replays:
        lines.append("")
        lines.append("replay:")
        for s in replays:
            lines.append(f"  # {s.class_name} at {s.site}" + (f"; died at {s.crash_site}" if s.crash_site else ""))
            lines.append(f"  {s.replay}")
    return "\n".join(lines)
