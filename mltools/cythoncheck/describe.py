"""Text for people of ``mltools cython check`` and ``demo``: plain text and GitHub annotations."""
from __future__ import annotations

__all__ = ["render_text", "render_github", "render_demo"]


def _gh_escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def render_text(report) -> str:
    lines = [f"{f.path}:{f.line}:{f.col}: {f.code} {f.severity.value}: {f.message} (fix: {f.fix})"
             + ("" if f.verified else " [not verified]") for f in report.findings]
    lines.extend(e.message for e in report.errors)
    counts = {}
    for f in report.findings:
        counts[f.severity.value] = counts.get(f.severity.value, 0) + 1
    what = ", ".join(f"{counts[s]} {s}{'s' if counts[s] != 1 else ''}"
                     for s in ("error", "warning", "info") if s in counts) or "no findings"
    if report.errors:
        n = len(report.errors)
        what += f"; {n} file{'s' if n != 1 else ''} could not be checked"
    files = f"{report.files_checked} file{'s' if report.files_checked != 1 else ''}"
    head = "interrupted after" if getattr(report, "interrupted", False) else "checked"
    lines.append(f"{head} {files}: {what}")
    return "\n".join(lines)


def render_github(report) -> str:
    level = {"error": "error", "warning": "warning", "info": "notice"}
    lines = [f"::{level[f.severity.value]} file={_gh_escape(f.path, True)},line={f.line},col={f.col},"
             f"title={f.code}::{_gh_escape(f'{f.code} {f.message} (fix: {f.fix})')}"
             for f in report.findings]
    lines.extend(f"::error file={_gh_escape(e.path, True)},line={max(e.line, 1)},col={max(e.col, 1)},"
                 f"title=not checked::{_gh_escape(e.message)}" for e in report.errors)
    return "\n".join(lines)


def render_demo(report) -> str:
    out = [f"Compiled with Cython {report.cython_version} and {report.compiler} "
           f"({report.build_s:.1f} s), run in a child process.", ""]
    for c in report.cases:
        out.append(f"{c.name} ({c.rule}): {c.what}")
        out.append(f"  truth    {c.truth}")
        out.append(f"  flagged  {c.wrong}   [{'wrong' if c.wrong_is_wrong else 'NOT WRONG'}]")
        out.append(f"  fixed    {c.fixed}   [{'right' if c.fixed_is_right else 'NOT RIGHT'}]")
    shown = sum(c.wrong_is_wrong and c.fixed_is_right for c in report.cases)
    out.append(f"\n{shown} of {len(report.cases)} cases showed the pitfall and its fix.")
    return "\n".join(out)
