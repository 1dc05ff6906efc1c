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
        isa = ("-" if not f.x86_isa_level else
               "x86-64-baseline" if f.x86_isa_level == 1 else f"x86-64-v{f.x86_isa_level}")
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


# --- tree ------------------------------------------------------------------------------------

_VIA_SHORT = {
    "rpath": "rpath", "ld_library_path": "LD_LIBRARY_PATH", "runpath": "runpath",
    "ld.so.cache": "ld.so.cache", "system_dir": "default path", "path": "direct",
    "preload": "preload", "loaded": "already loaded", "interpreter": "interpreter",
}


def _via_text(lib) -> str:
    if lib.via is None:
        return ""
    text = _VIA_SHORT.get(lib.via, lib.via)
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
            out.append(f"{indent}  {c.path}  [{_VIA_SHORT.get(c.source, c.source)}] {c.outcome}{reason}")
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


def _parse_env(pairs, ld_library_path, inherit: bool) -> dict:
    import os

    from mltools.errors import UsageError

    env = {k: v for k, v in os.environ.items() if k in ("LD_LIBRARY_PATH", "LD_PRELOAD")} if inherit else {}
    for item in pairs:
        if "=" not in item:
            raise UsageError(f"--env expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        env[k] = v
    if ld_library_path is not None:
        env["LD_LIBRARY_PATH"] = ld_library_path
    return env


@elf.command("tree")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--env", "env_pairs", multiple=True, metavar="KEY=VALUE",
              help="Set LD_LIBRARY_PATH or LD_PRELOAD as the program would see them (repeatable). "
                   "By default both come from this environment.")
@click.option("--ld-library-path", default=None, metavar="PATH", help="LD_LIBRARY_PATH to use ('' for none).")
@click.option("--clean-env", is_flag=True, help="Ignore LD_LIBRARY_PATH and LD_PRELOAD of this environment.")
@click.option("--preload", multiple=True, metavar="LIB", help="Preload LIB as ld.so --preload does (repeatable).")
@click.option("--root", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Resolve inside the sysroot DIR (its ld.so.cache and directories).")
@click.option("--hwcaps-mask", default=None, metavar="LIST",
              help="Search only these glibc-hwcaps subdirectories (x86-64-v3:x86-64-v2, '' for none).")
@click.option("--flat", is_flag=True, help="A table in load order instead of a tree.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes to split 64 or more FILEs over (each with its own caches).")
@json_option
def tree_cmd(files, env_pairs, ld_library_path, clean_env, preload, root, hwcaps_mask, flat, jobs,
             as_json) -> None:
    """The libraries the loader maps for FILE, in its order, and why.

    Gives glibc ld.so's answer without running FILE or the loader: breadth-first
    over DT_NEEDED with reuse by SONAME, DT_RPATH up the loader chain, then
    LD_LIBRARY_PATH, DT_RUNPATH, /etc/ld.so.cache and the default directories,
    glibc-hwcaps subdirectories first. A missing library lists every path tried
    and near misses.

    Exit status 1 when a library is missing or the loader would fail.
    """
    from mltools.elf.ldtree import DepTreeSet, Resolver, resolve_tree

    env = _parse_env(env_pairs, ld_library_path, inherit=not clean_env)
    mask = None if hwcaps_mask is None else tuple(x for x in hwcaps_mask.split(":") if x)
    njobs = jobs
    if len(files) >= 64 and njobs > 1:
        # Many files: resolve them in several processes, each with its own caches.
        from mltools.elf.ldtree import resolve_many_serialized
        from mltools.errors import InputError

        results = resolve_many_serialized(list(files), jobs=njobs, fmt="json" if as_json else "text",
                                          flat=flat, env=env, preload=preload, root=root, hwcaps_mask=mask)
        for kind, payload, _ok in results:
            if kind == "error":
                raise InputError(payload)
        if as_json:
            click.echo('{"schema":"%s","version":%d,"trees":[%s]}' % (
                DepTreeSet.SCHEMA, DepTreeSet.SCHEMA_VERSION, ",".join(p for _k, p, _o in results)))
        else:
            click.echo("\n\n".join(p for _k, p, _o in results))
        if not all(ok for _k, _p, ok in results):
            click.get_current_context().exit(1)
        return
    resolver = Resolver(root=root, hwcaps_mask=mask)
    trees = [resolve_tree(f, env=env, preload=preload, resolver=resolver) for f in files]
    if len(trees) == 1:
        emit(trees[0], as_json, lambda t: render_tree(t, flat))
    elif as_json:
        # Many trees: one compact document (json's C encoder; indenting megabytes is slow).
        from mltools.elf.ldtree import TreeJsonWriter
        writer = TreeJsonWriter()
        click.echo('{"schema":"%s","version":%d,"trees":[%s]}' % (
            DepTreeSet.SCHEMA, DepTreeSet.SCHEMA_VERSION, ",".join([writer.tree_text(t) for t in trees])))
    else:
        click.echo("\n\n".join(render_tree(t, flat) for t in trees))
    if any(not t.ok for t in trees):
        click.get_current_context().exit(1)


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


@elf.command("ldcache")
@click.option("--cache", "cache_path", default=None, type=click.Path(dir_okay=False),
              help="The cache file (default: /etc/ld.so.cache, under --root if given).")
@click.option("--conf", "conf_path", default=None, type=click.Path(dir_okay=False),
              help="The ld.so.conf to compare with (default: /etc/ld.so.conf).")
@click.option("--root", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="A sysroot whose cache and configuration to read.")
@click.option("--no-stale-check", is_flag=True, help="Only list the entries.")
@json_option
def ldcache_cmd(cache_path, conf_path, root, no_stale_check, as_json) -> None:
    """The loader's library cache, parsed as ld.so reads it.

    Lists the same entries as `ldconfig -p` (new, old and combined formats, the
    glibc-hwcaps extension) and reports a stale cache: a library in a directory
    that ld.so.conf lists but the cache lacks, or an entry whose file is gone.

    Exit status 1 when the cache is stale.
    """
    from mltools.elf.ldcache import ldcache_report
    from mltools.findings import Severity, any_at_or_above

    report = ldcache_report(cache_path, conf_path, root, check_stale=not no_stale_check)
    emit(report, as_json, render_ldcache)
    if any_at_or_above(report.findings, Severity.WARNING):
        click.get_current_context().exit(1)


# --- scan ------------------------------------------------------------------------------------

def render_scan(r, list_files: bool = False) -> str:
    from collections import Counter

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


@elf.command("scan")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--list", "list_files", is_flag=True, help="Also list every ELF file found.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=None, help="Threads for reading and hashing.")
@click.option("--root", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Resolve inside the sysroot DIR.")
@click.option("--fail-on", type=click.Choice(["error", "warning"]), default="error", show_default=True,
              help="Exit 1 when a finding is at least this severe.")
@json_option
def scan_cmd(paths, list_files, jobs, root, fail_on, as_json) -> None:
    """Every ELF file under PATHs (a build dir, a venv, an unpacked wheel).

    Missing dependencies, libraries that resolve only thanks to load order or
    their loader's RPATH (grafted *.libs copies), identical files under
    different names (sha256, build-id), runtimes one process would map twice
    (OpenMP, BLAS, libstdc++, libgfortran, cudart), and a finding per file that
    is not a valid ELF (a Git LFS pointer named libfoo.so). The output does not
    depend on the order of PATHs.
    """
    from mltools.elf.scan import scan_paths
    from mltools.findings import Severity, any_at_or_above

    report = scan_paths(list(paths), jobs=jobs, root=root)
    emit(report, as_json, lambda r: render_scan(r, list_files))
    if any_at_or_above(report.findings, Severity.parse(fail_on)):
        click.get_current_context().exit(1)


from mltools.cli.elf_trace import trace_cmd  # noqa: E402 - the command lives in its own module

elf.add_command(trace_cmd)

from mltools.cli.elf_check import check_cmd  # noqa: E402

elf.add_command(check_cmd)
