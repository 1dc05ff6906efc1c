"""``mltools`` and ``python -m mltools``: the entry point of the command line.

Every command is a click command (``mltools.cli``). ``elf tree`` and ``elf
inspect`` with ordinary arguments, the commands people run on one file or in
loops, take a short path first: their arguments are parsed here, the library
is called, and the result is written exactly as the click command writes it
(tests/test_fast_cli.py runs every option both ways and compares), without
importing click, which is most of what such a run would cost. Anything else
(--help, an option this parser does not know, a value click would refuse, an
error of any kind) goes to click, which says it the usual way.
"""
import sys

# option -> "flag", "value" or "multi" (repeatable), as the click commands declare them
_OPTIONS = {
    "tree": {"--json": "flag", "--flat": "flag", "--clean-env": "flag", "-q": "flag", "--quiet": "flag",
             "--root": "value", "--ld-library-path": "value", "--hwcaps-mask": "value", "-j": "value",
             "--jobs": "value", "--env": "multi", "--preload": "multi"},
    "inspect": {"--json": "flag", "--symbols": "flag", "-q": "flag", "--quiet": "flag"},
}


def main(argv=None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 3 and args[0] == "elf" and args[1] in _OPTIONS:
        status = _short_path(args[1], args[2:])
        if status is not None:
            raise SystemExit(status)
    from mltools.cli import main as cli_main

    cli_main(args)


def _parse(command: str, args):
    """({option: value or True or [values]}, [files]), or None to leave it to click."""
    table = _OPTIONS[command]
    opts, files = {}, []
    i = 0
    while i < len(args):
        a = args[i]
        i += 1
        if not a.startswith("-") or a == "-":
            if a == "-":
                return None
            files.append(a)
            continue
        name, eq, value = a.partition("=") if a.startswith("--") else (a, "", "")
        kind = table.get(name)
        if kind is None or (kind == "flag" and eq):
            return None
        if kind == "flag":
            opts[name] = True
            continue
        if not eq:
            if i >= len(args):
                return None
            value = args[i]
            i += 1
        if kind == "multi":
            opts.setdefault(name, []).append(value)
        else:
            opts[name] = value
    return (opts, files) if files else None


def _tree(opts, files):
    import os

    from mltools.elf.batch import tree_batch

    jobs = opts.get("--jobs", opts.get("-j"))
    if jobs is not None:
        if not jobs.isdigit():
            return None
        jobs = int(jobs) or None
    root = opts.get("--root")
    if root is not None and os.path.exists(root) and not os.path.isdir(root):
        return None                                 # click's "is a file" error
    batch = tree_batch(files, env_pairs=opts.get("--env", ()), ld_library_path=opts.get("--ld-library-path"),
                       clean_env="--clean-env" in opts, preload=opts.get("--preload", ()), root=root,
                       hwcaps_mask=opts.get("--hwcaps-mask"), flat="--flat" in opts, jobs=jobs,
                       as_json="--json" in opts)
    return batch.document(), 0 if batch.ok else 1


def _inspect(opts, files):
    from mltools.elf.inspect import inspect_files

    report = inspect_files(files, symbols="--symbols" in opts)
    if "--json" in opts:
        from mltools import _jsonio

        text = _jsonio.dumps(report, report.SCHEMA, report.SCHEMA_VERSION)
    else:
        from mltools.elf.describe import render_inspect

        text = render_inspect(report).rstrip("\n")
    return text, 1 if report.failed else 0


def _short_path(command: str, args):
    """The exit status after writing the result, or None when click should run the command."""
    parsed = _parse(command, args)
    if parsed is None:
        return None
    from mltools._lifecycle import report_interrupt, signals_handled, write_stdout

    try:
        with signals_handled():
            try:
                done = (_tree if command == "tree" else _inspect)(*parsed)
            except Exception:      # noqa: BLE001 - click runs it again and reports it its own way
                return None
            if done is None:
                return None
            text, status = done
            if text:               # as mltools.cli._output.emit: one newline at the end, never cut short
                write_stdout(text + "\n")
            return status
    except KeyboardInterrupt:
        return report_interrupt()


if __name__ == "__main__":
    main()
