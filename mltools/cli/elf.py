"""``mltools elf``: ELF files, the loader's dependency tree, its cache, tree scans."""
from __future__ import annotations

import click

from mltools.cli import MltoolsGroup
from mltools.cli._options import fail_on_option, jobs_option, json_option, quiet_option, root_option
from mltools.cli._output import emit


@click.group("elf", cls=MltoolsGroup)
def elf() -> None:
    """ELF files and the dynamic loader: inspect, tree, ldcache, scan.

    Nothing here runs the files it reads or the loader on them.
    """


@elf.command("inspect")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--symbols", is_flag=True, help="List the dynamic symbols with versions, demangled (nm -D -C).")
@json_option
@quiet_option
def inspect_cmd(files, symbols: bool, as_json: bool) -> None:
    """Everything about ELF FILEs in one view.

    Class, machine, type, interpreter, SONAME, NEEDED, RPATH/RUNPATH (raw and
    with $ORIGIN/$LIB/$PLATFORM expanded), FLAGS/FLAGS_1, build-id, stack and
    RELRO, x86-64 ISA level, version needs and definitions, symbol counts and
    sha256. A file that is not ELF, truncated or corrupt is reported and the
    others go on.

    Exit status: 0 all read, no error findings; 1 a file could not be read or
    has an error finding; 2 none could be read.
    """
    from mltools.elf.describe import render_inspect
    from mltools.elf.inspect import inspect_files

    report = inspect_files(list(files), symbols=symbols)
    emit(report, as_json, render_inspect)
    if report.failed:
        click.get_current_context().exit(1)


# --- tree ------------------------------------------------------------------------------------

@elf.command("tree")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--env", "env_pairs", multiple=True, metavar="KEY=VALUE",
              help="Set LD_LIBRARY_PATH or LD_PRELOAD as the program would see them (repeatable). "
                   "By default both come from this environment.")
@click.option("--ld-library-path", default=None, metavar="PATH", help="LD_LIBRARY_PATH to use ('' for none).")
@click.option("--clean-env", is_flag=True, help="Ignore LD_LIBRARY_PATH and LD_PRELOAD of this environment.")
@click.option("--preload", multiple=True, metavar="LIB", help="Preload LIB as ld.so --preload does (repeatable).")
@root_option()
@click.option("--hwcaps-mask", default=None, metavar="LIST",
              help="Search only these glibc-hwcaps subdirectories (x86-64-v3:x86-64-v2, '' for none).")
@click.option("--flat", is_flag=True, help="A table in load order instead of a tree.")
@jobs_option()
@json_option
@quiet_option
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
    from mltools.elf.batch import tree_batch

    batch = tree_batch(files, env_pairs=env_pairs, ld_library_path=ld_library_path, clean_env=clean_env,
                       preload=preload, root=root, hwcaps_mask=hwcaps_mask, flat=flat, jobs=jobs, as_json=as_json)
    emit(batch, as_json)
    if not batch.ok:
        click.get_current_context().exit(1)


# --- ldcache ---------------------------------------------------------------------------------

@elf.command("ldcache")
@click.option("--cache", "cache_path", default=None, type=click.Path(dir_okay=False),
              help="The cache file (default: /etc/ld.so.cache, under --root if given).")
@click.option("--conf", "conf_path", default=None, type=click.Path(dir_okay=False),
              help="The ld.so.conf to compare with (default: /etc/ld.so.conf).")
@root_option("A sysroot whose cache and configuration to read.")
@click.option("--no-stale-check", is_flag=True, help="Only list the entries.")
@json_option
@quiet_option
def ldcache_cmd(cache_path, conf_path, root, no_stale_check, as_json) -> None:
    """The loader's library cache, parsed as ld.so reads it.

    Lists the same entries as `ldconfig -p` (new, old and combined formats, the
    glibc-hwcaps extension) and reports a stale cache: a library in a directory
    that ld.so.conf lists but the cache lacks, or an entry whose file is gone.

    Exit status 1 when the cache is stale.
    """
    from mltools.elf.describe import render_ldcache
    from mltools.elf.ldcache import ldcache_report
    from mltools.findings import FailOn, Severity

    report = ldcache_report(cache_path, conf_path, root, check_stale=not no_stale_check)
    emit(report, as_json, render_ldcache)
    if FailOn.at(Severity.WARNING).matches(report.findings):
        click.get_current_context().exit(1)


# --- scan ------------------------------------------------------------------------------------

@elf.command("scan")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--list", "list_files", is_flag=True, help="Also list every ELF file found.")
@jobs_option()
@root_option("Resolve inside the sysroot DIR.")
@fail_on_option()
@json_option
@quiet_option
def scan_cmd(paths, list_files, jobs, root, fail_on, as_json) -> None:
    """Every ELF file under PATHs (a build dir, a venv, an unpacked wheel).

    Missing dependencies, libraries that resolve only thanks to load order or
    their loader's RPATH (grafted *.libs copies), identical files under
    different names (sha256, build-id), runtimes one process would map twice
    (OpenMP, BLAS, libstdc++, libgfortran, cudart), and a finding per file that
    is not a valid ELF (a Git LFS pointer named libfoo.so). The output does not
    depend on the order of PATHs.
    """
    from mltools.cli._output import Progress
    from mltools.elf.describe import render_scan
    from mltools.elf.scan import scan_paths
    with Progress("elf scan") as bar:
        report = scan_paths(list(paths), jobs=jobs, root=root, progress=bar)
    emit(report, as_json, lambda r: render_scan(r, list_files))
    if fail_on.matches(report.findings):
        click.get_current_context().exit(1)


from mltools.cli.elf_trace import trace_cmd  # noqa: E402 - the command lives in its own module

elf.add_command(trace_cmd)

from mltools.cli.elf_check import check_cmd  # noqa: E402

elf.add_command(check_cmd)
