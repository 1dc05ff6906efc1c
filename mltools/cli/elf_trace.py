"""``mltools elf trace``: a structured LD_DEBUG report of a command."""
from __future__ import annotations

import os
import shlex
from typing import Optional

import click

from mltools.cli import TargetCommand
from mltools.cli._options import json_option
from mltools.cli._output import Table, findings_text, key_values

_TEXT_LIMIT = 20      # rows shown per list in the text report (--json lists all)


def _short(path: Optional[str]) -> str:
    if not path:
        return "-"
    return path


def _search_text(lib) -> str:
    if not lib.searched:
        return "direct path"
    parts: list = []
    for step in lib.search:
        label = step.source
        for long, short in (("RUNPATH from file ", "RUNPATH of "), ("RPATH from file ", "RPATH of ")):
            if label.startswith(long):
                label = short + os.path.basename(label[len(long):])
        if parts and parts[-1][0] == label:
            parts[-1][1] += len(step.tried)
        else:
            parts.append([label, len(step.tried)])
    return ", ".join(f"{label} ({n} tried)" for label, n in parts) or "-"


def _render_program(p, verbose: bool, symbol_patterns=()) -> str:
    head = f"[pid {p.pid}] {p.name or '?'}" + ("" if p.started else "  (ld.so did not start it)")
    if p.forked_from is not None:
        head += f"  (forked from pid {p.forked_from}, no exec)"
    if p.index:
        head += f"  (after exec #{p.index} in this process)"
    startup = sum(1 for lib in p.libraries if lib.at_startup)
    dl = sum(1 for lib in p.libraries if lib.how == "dlopen")
    lines = [head, f"  {startup} loaded at start-up, {len(p.libraries) - startup} later "
                   f"({dl} by dlopen); {p.version_checks} version checks; "
                   f"{p.line_count} lines ({p.unparsed_count} unparsed)"]
    if p.libraries:
        t = Table(["library", "how", "requested by", "found at", "searched"])
        libs = p.libraries if verbose else p.libraries[:_TEXT_LIMIT * 3]
        for lib in libs:
            t.add(os.path.basename(lib.name) if verbose is False else lib.name, lib.how, os.path.basename(lib.requested_by) or "-",
                  lib.path or "NOT FOUND", _search_text(lib))
        lines.append("\n".join("  " + s for s in t.render().splitlines()))
        if len(libs) < len(p.libraries):
            lines.append(f"  ... {len(p.libraries) - len(libs)} more (--verbose or --json lists all)")
    if verbose:
        for lib in p.libraries:
            if not lib.search:
                continue
            lines.append(f"  search for {lib.name} (requested by {lib.requested_by or '?'}):")
            for step in lib.search:
                lines.append(f"    {step.source}: {':'.join(step.dirs)}")
                for tried in step.tried:
                    lines.append(f"      tried {tried}")
    for err in p.errors:
        lines.append(f"  ld.so error: {err.object}: {err.kind}: {err.message}"
                     + (" (fatal)" if err.fatal else ""))
    b = p.bindings
    if b is not None:
        lines.append(f"  bindings: {b.total} ({b.symbols} distinct symbols) to {len(b.by_provider)} objects")
        for prov, n in b.by_provider[:_TEXT_LIMIT if not verbose else None]:
            lines.append(f"    {n:>8}  {prov}")
        if b.several_providers:
            lines.append(f"  symbols bound to more than one object: {len(b.several_providers)}")
            for sym, provs in b.several_providers[:_TEXT_LIMIT if not verbose else None]:
                lines.append(f"    {sym}: {', '.join(provs)}")
        lines.append(f"  interpositions (bound symbol also defined elsewhere): {len(b.interpositions)}")
        for ip in b.interpositions[:_TEXT_LIMIT if not verbose else None]:
            lines.append(f"    {ip.symbol} -> {ip.bound_to}; also in {', '.join(ip.also_defined_in)}")
        if not verbose and len(b.interpositions) > _TEXT_LIMIT:
            lines.append(f"    ... {len(b.interpositions) - _TEXT_LIMIT} more (--verbose or --json)")
        if b.unreadable:
            lines.append(f"  symbols not read from: {', '.join(b.unreadable)}")
        if symbol_patterns:
            import fnmatch

            hits = [(sym, objs) for sym, objs in b.bound_to.items()
                    if any(fnmatch.fnmatchcase(sym.split("@", 1)[0], pat) for pat in symbol_patterns)]
            lines.append(f"  symbols matching {', '.join(symbol_patterns)}: {len(hits)}")
            for sym, objs in hits:
                lines.append(f"    {sym} -> {', '.join(objs)}")
    if verbose and p.unparsed:
        lines.append("  unparsed lines:")
        lines.extend(f"    {u}" for u in p.unparsed)
        if p.unparsed_count > len(p.unparsed):
            lines.append(f"    ... {p.unparsed_count - len(p.unparsed)} more not kept")
    return "\n".join(lines)


def render_trace(r, verbose: bool = False, symbol_patterns=()) -> str:
    status = str(r.exit_status) + (f" ({r.signal})" if r.signal else "")
    out = [key_values([
        ("command", shlex.join(r.command)),
        ("target", f"{r.target.path} ({r.target.kind}"
                   + (f", {r.target.interpreter}" if r.target.interpreter else "") + ")"),
        ("exit status", status),
        ("LD_DEBUG", ",".join(r.categories)),
        ("processes", f"{r.processes} ({len(r.programs)} programs, "
                      f"{r.line_count} lines, {r.unparsed_count} unparsed)"),
    ] + ([("raw output", r.raw_dir)] if r.raw_dir else []))]
    for note in r.notes:
        out.append(f"note: {note}")
    for p in r.programs:
        out.append("")
        out.append(_render_program(p, verbose, symbol_patterns))
    if r.findings:
        out.append("\nFindings")
        out.append(findings_text(r.findings))
    return "\n".join(out)


@click.command("trace", cls=TargetCommand,
               context_settings={"allow_interspersed_args": False, "ignore_unknown_options": False})
@click.option("--categories", default="libs,files,versions", show_default=True,
              help="LD_DEBUG categories: libs, files, versions, bindings, or all "
                   "(libs and files are always added).")
@click.option("--report", "report_file", type=click.Path(dir_okay=False, writable=True),
              help="Write the report to FILE and leave the target's stdout on stdout.")
@click.option("--keep", "keep_dir", type=click.Path(file_okay=False),
              help="Also copy the raw LD_DEBUG files (ld.<pid>) into DIR.")
@click.option("--symbol", "symbol_patterns", multiple=True, metavar="PATTERN",
              help="With bindings: list the objects these symbols (shell patterns, e.g. 'omp_*') "
                   "bound to; repeatable. --json always has every symbol.")
@click.option("-v", "--verbose", is_flag=True,
              help="Every library, every path tried, and the lines not understood.")
@json_option
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def trace_cmd(ctx: click.Context, categories: str, report_file: Optional[str],
              keep_dir: Optional[str], symbol_patterns, verbose: bool, as_json: bool, command) -> None:
    """Run COMMAND under LD_DEBUG and report what ld.so did.

    Per process and per program (an exec starts a new one in the same
    process): each library loaded, the paths searched and where it was found,
    who needed or dlopen'ed it, failed version checks and loader errors, and
    with --categories ...,bindings which object each symbol bound to and the
    interpositions. ld.so writes to a private temporary directory, never into
    the program's stderr.

    Where things go: the report (text, or JSON with --json) is written to
    stdout after COMMAND exits, and COMMAND's own stdout is sent to stderr so
    that stdout holds only the report. With --report FILE the report goes to
    FILE and COMMAND's stdout stays on stdout.

    Exit status: COMMAND's (128+N if signal N killed it); 127 if COMMAND does
    not exist, 126 if it cannot be executed, 125 if mltools itself failed.

    Example: mltools elf trace --categories libs,bindings -- python -c 'import numpy'
    """
    from mltools import _jsonio
    from mltools.elf import lddebug
    from mltools.elf.trace import TargetStartError, trace_command

    try:
        cats = lddebug.parse_categories(categories)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--categories") from None
    if symbol_patterns and "bindings" not in cats:
        raise click.BadParameter("needs bindings in --categories", param_hint="--symbol")
    if report_file:
        # refuse before running the command, not after
        parent = os.path.dirname(os.path.abspath(report_file)) or "."
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK) or (
                os.path.exists(report_file) and not os.access(report_file, os.W_OK)):
            raise click.BadParameter(f"cannot write {report_file}", param_hint="--report")
    try:
        report = trace_command(list(command), categories=cats, keep_dir=keep_dir,
                               target_stdout_fd=None if report_file else 2)
    except TargetStartError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        ctx.exit(exc.exit_status)
        return
    if as_json:
        text = _jsonio.dumps(report, report.SCHEMA, report.SCHEMA_VERSION)
    else:
        text = render_trace(report, verbose, tuple(symbol_patterns))
    if report_file:
        try:
            with open(report_file, "w", encoding="utf-8") as fh:
                fh.write(text.rstrip("\n") + "\n")
        except OSError as exc:
            click.echo(f"Error: cannot write --report {report_file}: {exc.strerror}", err=True)
            ctx.exit(125)
            return
    else:
        click.echo(text.rstrip("\n"))
    ctx.exit(report.exit_status)
