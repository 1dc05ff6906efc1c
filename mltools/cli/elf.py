"""``mltools elf``: ELF files, the loader's dependency tree, its cache, tree scans."""
from __future__ import annotations

import click

from mltools.cli import MltoolsGroup
from mltools.cli._options import json_option
from mltools.cli._output import Table, emit, findings_text, key_values


@click.group("elf", cls=MltoolsGroup)
def elf() -> None:
    """ELF files and the dynamic loader: inspect, tree, ldcache, scan.

    Nothing here runs the files it reads or the loader on them.
    """


# --- inspect ---------------------------------------------------------------------------------

def _path_text(sp) -> str:
    if sp is None:
        return "-"
    expanded = ":".join("(dropped)" if e is None else (e or "(cwd)") for e in sp.expanded)
    return sp.raw if expanded == sp.raw else f"{sp.raw}  =>  {expanded}"


def render_inspect(report) -> str:
    blocks = []
    for f in report.files:
        isa = f"x86-64-v{f.x86_isa_level}" if f.x86_isa_level else "-"
        pairs = [
            ("file", f.path + ("" if f.realpath == f.path else f"  ->  {f.realpath}")),
            ("class", f"ELF{f.elf_class}, {f.byte_order} endian, {f.machine}, OS/ABI {f.osabi}"),
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
    return "\n\n".join(blocks)


@elf.command("inspect")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--symbols", is_flag=True, help="List the dynamic symbols with versions, demangled (nm -D -C).")
@json_option
def inspect_cmd(files, symbols: bool, as_json: bool) -> None:
    """Everything about ELF FILEs in one view.

    Class, machine, type, interpreter, SONAME, NEEDED, RPATH/RUNPATH (raw and
    with $ORIGIN/$LIB/$PLATFORM expanded), FLAGS/FLAGS_1, build-id, stack and
    RELRO, x86-64 ISA level, version needs and definitions, symbol counts and
    sha256. A file that is not ELF, truncated or corrupt is an error (exit 2).
    """
    from mltools.elf.inspect import inspect_files

    emit(inspect_files(list(files), symbols=symbols), as_json, render_inspect)


from mltools.cli.elf_trace import trace_cmd  # noqa: E402 - the command lives in its own module

elf.add_command(trace_cmd)
