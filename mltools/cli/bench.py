"""``mltools bench``: measured performance of this machine's ML stack.

This module holds only the group; each benchmark lives in its own module.
"""
from __future__ import annotations

import click

from mltools.cli import LazyGroup


@click.group("bench", cls=LazyGroup, lazy={
    "compare": "mltools.cli.bench_compare:compare_cmd",
    "numa": "mltools.cli.bench_numa:numa_cmd",
    "shakeshake": "mltools.cli.bench_shakeshake:shakeshake_cmd",
    "sum": "mltools.cli.bench_sum:sum_cmd",
})
def bench() -> None:
    """Benchmarks of this machine's ML stack, with the reference measured in the same run."""
