"""``mltools bench``: measured performance of this machine's ML stack.

This module holds only the group; each benchmark lives in its own module.
"""
from __future__ import annotations

import click

from mltools.cli import MltoolsGroup
from mltools.cli.bench_numa import numa_cmd
from mltools.cli.bench_shakeshake import shakeshake_cmd
from mltools.cli.bench_sum import sum_cmd


@click.group("bench", cls=MltoolsGroup)
def bench() -> None:
    """Benchmarks of this machine's ML stack, with the reference measured in the same run."""


for _command in (numa_cmd, sum_cmd, shakeshake_cmd):
    bench.add_command(_command)
