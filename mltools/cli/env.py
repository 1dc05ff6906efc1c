"""``mltools env``: what this machine and process are."""
from __future__ import annotations

import click

from mltools.cli._options import json_option, quiet_option
from mltools.cli._output import emit


@click.command("env")
@json_option
@quiet_option
def env_cmd(as_json: bool) -> None:
    """What this machine and process are.

    Python, numpy and its BLAS/OpenMP runtimes, CPU and x86-64 ISA level, cores,
    memory, NUMA nodes, GPUs, glibc and its loader, and the loader and threading
    variables set, with warnings for known traps.

    Exit status 0: the findings are advice (use `mltools doctor` to check).
    """
    from mltools.env import collect_env
    from mltools.env.describe import render_env

    emit(collect_env(), as_json, render_env)
