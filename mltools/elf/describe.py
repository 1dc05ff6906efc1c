"""Text for people of every ``mltools elf`` result: inspect, tree, ldcache, scan, check, trace.

The JSON of these results is their dataclasses (``mltools._jsonio``); this
module is only the text view. Nothing here prints.
"""
from __future__ import annotations

import os
from collections import Counter

from mltools._text import Table, findings_text, key_values
from mltools.elf.ldtree import via_label

__all__ = ["render_inspect", "render_tree", "render_ldcache", "render_scan", "render_check", "render_trace"]


# --- inspect ---------------------------------------------------------------------------------

def _path_text(sp) -> str:
    if sp is None:
        return "-"
    expanded = ":".join("(dropped)" if e is None else (e or "(cwd)") for e in sp.expanded)
    return sp.raw if expanded == sp.raw else f"{sp.raw}  =>  {expanded}"


def render_inspect(report) -> str:
    blocks = []
    for f in report.files:
        isa = ("-" if not f.x86_isa_level else
               "x86-64-baseline" if f.x86_isa_level == 1 else f"x86-64-v{f.x86_isa_level}")
        pairs = [
            ("file", f.path + ("" if f.realpath == f.path else f"  ->  {f.realpath}")),
            ("class", f"ELF{f.elf_class}, {f.byte_order} endian, {f.machine}"
                      + (f" ({f.machine_name})" if f.machine_name != f.machine else "") + f", OS/ABI {f.osabi}"),
            ("type", f.type),
            ("interpreter", f.interpreter),
            ("soname", f.soname),
            ("needed", ", ".join(f.needed) or "-"),
            ("rpath", _path_text(f.rpath)),
            ("runpath", _path_text(f.runpath)),
            ("flags", " ".join(f.flags) or "-"),
            ("flags_1", " ".join(f.flags_1) or "-"),
            ("build-id", f.build_id),
            ("abi tag", f.abi_tag),
            ("isa level", isa + (f" ({', '.join(f.x86_features)})" if f.x86_features else "")),
            ("stack", f.gnu_stack or "- (no PT_GNU_STACK: executable)"),
            ("relro", "yes" if f.relro else "no"),
            ("tls", f"{f.tls_size_bytes} bytes" if f.tls_size_bytes is not None else "-"),
            ("symbols", f"{f.defined_symbols} defined, {f.undefined_symbols} undefined"),
            ("version defs", ", ".join(f.version_defs) or "-"),
            ("size", f"{f.size_bytes} bytes"),
            ("sha256", f.sha256),
        ]
        if f.from_sections:
            pairs.append(("from sections", ", ".join(f.from_sections) + " (no program header has them)"))
        text = key_values(pairs)
        if f.version_needs:
            t = Table(["library", "versions needed"], title="\nversion needs")
            for vn in f.version_needs:
                t.add(vn.file, " ".join(vn.versions))
            text += "\n" + t.render()
        if f.symbols is not None:
            t = Table(["symbol", "version", "bind", "type", "defined"], title="\ndynamic symbols")
            for s in f.symbols:
                ver = "" if s.version is None else ("@" if s.hidden or s.library else "@@") + s.version
                t.add(s.demangled, ver or "-", s.binding, s.type, "yes" if s.defined else "no")
            text += "\n" + t.render()
        if f.findings:
            text += "\n\nfindings\n" + findings_text(f.findings)
        blocks.append(text)
    blocks.extend(errors_text(report.errors))
    return "\n\n".join(blocks)


def errors_text(errors) -> list:
    """One ``error: PATH: message`` line per input that could not be processed."""
    return [f"error: {e.message}" if e.message.startswith(e.path) else f"error: {e.path}: {e.message}"
            for e in errors]


# --- tree ------------------------------------------------------------------------------------

def _via_text(lib) -> str:
    if lib.via is None:
        return ""
    text = via_label(lib.via, short=True)
    if lib.via == "rpath" and lib.via_object:
        text += f" of {lib.via_object}"
    elif lib.via == "preload" and lib.via_object:
        text += f" from {lib.via_object}"
    if lib.hwcaps_subdir:
        text += f", {lib.hwcaps_subdir}"
    return f"[{text}]"


def _lib_line(lib) -> str:
    if lib.error:
        return f"{lib.soname} => {lib.found_as}: ERROR {lib.error}"
    if lib.path is None:
        return f"{lib.soname} => not found"
    shown = lib.found_as if lib.found_as else lib.path
    real = "" if (shown == lib.path) else f" ({lib.path})"
    return f"{lib.soname} => {shown}{real} {_via_text(lib)}"


def _missing_details(lib, indent: str) -> list:
    out = []
    if lib.tried:
        out.append(f"{indent}tried, in order:")
        for c in lib.tried:
            reason = f" ({c.reason})" if c.reason else ""
            out.append(f"{indent}  {c.path}  [{via_label(c.source, short=True)}] {c.outcome}{reason}")
    elif lib.path is None:
        out.append(f"{indent}tried: no directory on its search path holds that name")
    if lib.near_misses:
        out.append(f"{indent}near misses:")
        for nm in lib.near_misses:
            out.append(f"{indent}  {nm.path}: {nm.reason}")
    return out


def render_tree(tree, flat: bool = False) -> str:
    out = []
    if flat:
        t = Table(["soname", "path", "via", "depth", "needed by"])
        for lib in tree.libraries:
            t.add(lib.soname, lib.path if lib.path and not lib.error else ("ERROR " + lib.error if lib.error else "not found"),
                  _via_text(lib).strip("[]") or "-", lib.depth, len(lib.needed_by))
        out.append(f"{tree.root}\n" + t.render())
        for lib in tree.libraries:
            if not lib.found:
                out.append(f"\n{lib.soname}:")
                out.extend(_missing_details(lib, "  "))
    else:
        children = {}
        for lib in tree.libraries:
            # the interpreter is mapped before anything: show it under its first user
            parent = lib.loader or (lib.needed_by[0] if lib.needed_by else tree.root)
            children.setdefault(parent, []).append(lib)
        lines = [tree.root]

        def walk(parent, prefix):
            kids = children.get(parent, [])
            for i, lib in enumerate(kids):
                last = i == len(kids) - 1
                lines.append(prefix + ("└── " if last else "├── ") + _lib_line(lib))
                sub = prefix + ("    " if last else "│   ")
                if not lib.found:
                    lines.extend(_missing_details(lib, sub + "  "))
                if lib.path and lib.found:
                    walk(lib.path, sub)

        walk(tree.root, "")
        out.append("\n".join(lines))
    if tree.findings:
        out.append("\nfindings\n" + findings_text(tree.findings))
    return "\n".join(out)


# --- ldcache ---------------------------------------------------------------------------------

def render_ldcache(r) -> str:
    head = key_values([
        ("cache", r.path),
        ("format", r.format + (f" (glibc-hwcaps: {', '.join(r.hwcaps_subdirs)})" if r.hwcaps_subdirs else "")),
        ("generator", r.generator),
        ("entries", len(r.entries)),
        ("ld.so.conf dirs", ", ".join(r.configured_dirs) or "-"),
    ])
    t = Table(["name", "abi", "hwcaps", "path"])
    for e in r.entries:
        t.add(e.name, e.description, e.hwcaps_subdir or "-", e.path)
    text = head + "\n\n" + t.render()
    if r.findings:
        text += "\n\nfindings\n" + findings_text(r.findings)
    return text


# --- scan ------------------------------------------------------------------------------------

def render_scan(r, list_files: bool = False) -> str:
    kinds = Counter(f.kind for f in r.files)
    out = [key_values([
        ("scanned", ", ".join(r.roots)),
        ("ELF files", f"{len(r.files)} loadable ("
                      + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")"),
        ("with missing deps", sum(1 for f in r.files if f.missing)),
        ("identical groups", len([g for g in r.duplicates if g.identical])),
    ])]
    if list_files:
        t = Table(["path", "kind", "soname", "needed", "missing"], title="\nfiles")
        for f in r.files:
            t.add(f.path, f.kind, f.soname, len(f.needed), ", ".join(f.missing) or "-")
        out.append(t.render())
    if r.duplicates:
        out.append("\nidentical files" if any(g.identical for g in r.duplicates) else "\nsame build-id")
        for g in r.duplicates:
            out.append(f"  {g.key[:23]}{'' if g.identical else ' (same build-id, different bytes)'}")
            out.extend(f"    {p}" for p in g.paths)
    if r.runtimes:
        out.append("\nruntimes with several copies")
        for rc in r.runtimes:
            out.append(f"  {rc.family}:")
            out.extend(f"    {p}" for p in rc.paths)
    if r.findings:
        out.append("\nfindings\n" + findings_text(r.findings))
    return "\n".join(out)


# --- check -----------------------------------------------------------------------------------

def render_check(r) -> str:
    out = []
    for fc in r.files:
        ctx = ""
        if fc.python:
            ctx = f" inside {fc.python}"
            if fc.after:
                ctx += f" after import {', '.join(fc.after)} ({fc.loaded_before} objects loaded)"
        s = fc.stats
        out.append(f"{fc.file}{ctx}: {s.objects} objects, {s.symbols_checked} undefined symbols and "
                   f"{s.versions_checked} version needs checked")
        shown = [f for f in fc.findings if f.severity.rank > 0]
        info = len(fc.findings) - len(shown)
        if not shown and len(r.files) > 1:
            out.pop()      # many files: only those with problems are listed
            continue
        if shown:
            out.append("\n".join("  " + line for line in findings_text(shown).splitlines()))
        else:
            out.append("  ok: ld.so would load it" + (f" ({info} informational findings, --json lists them)"
                                                     if info else ""))
    if len(r.files) > 1:
        bad = sum(1 for fc in r.files if any(f.severity.rank >= 2 for f in fc.findings))
        warned = sum(1 for fc in r.files if any(f.severity.rank == 1 for f in fc.findings)
                     and not any(f.severity.rank >= 2 for f in fc.findings))
        clean = len(r.files) - bad - warned
        out.append(f"{'' if not out else chr(10)}{len(r.files)} files: {bad} with errors, "
                   f"{warned} with warnings only, {clean} clean")
    return "\n".join(out)


# --- trace -----------------------------------------------------------------------------------

_TEXT_LIMIT = 20      # rows shown per list in the text report (--json lists all)


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
        ("command", _shell_join(r.command)),
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


def _shell_join(argv) -> str:
    import shlex

    return shlex.join(argv)
