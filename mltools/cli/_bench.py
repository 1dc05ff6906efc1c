"""What every ``bench`` command shares: ``--output FILE``, ``--plot FILE`` checks, the command line.

``--output`` writes the same document ``--json`` prints (every sample, the
statistics, the machine, the command line and the times) to a file, also when
the run was interrupted; ``mltools bench compare`` reads such files.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import click

__all__ = ["output_option", "command_line", "check_outputs", "write_output", "require_matplotlib"]

output_option = click.option(
    "--output", "output_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
    help="Also write the results as JSON to FILE (the --json document: every sample, the statistics, the "
         "machine, the command line); compare files with `mltools bench compare`.")

ARGV_KEY = "mltools.argv"


def command_line() -> Tuple[str, ...]:
    """The command line as typed: ``mltools`` and its arguments (the root group keeps them)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return ()
    root = ctx.find_root()
    return (root.info_name or "mltools",) + tuple(ctx.meta.get(ARGV_KEY, ()))


def require_matplotlib(option: str = "--plot") -> None:
    from mltools.errors import MissingDependencyError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"{option} needs matplotlib, which is not installed: pip install 'mltools[plot]'") from None


def check_outputs(output_path: Optional[str] = None, plot_path: Optional[str] = None) -> None:
    """Refuse unwritable output files, and --plot without matplotlib, before any work starts."""
    from mltools._files import check_writable

    if output_path:
        check_writable(output_path, "--output")
    if plot_path:
        check_writable(plot_path, "--plot")
        require_matplotlib()


def write_output(result, path: Optional[str]) -> None:
    """Write ``result``'s JSON document to ``path`` (whole, or not at all)."""
    if not path:
        return
    from mltools import _jsonio

    text = _jsonio.dumps(result, result.SCHEMA, result.SCHEMA_VERSION) + "\n"
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        from mltools.errors import InputError

        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise InputError(f"--output {path}: {exc.strerror or exc}") from None
