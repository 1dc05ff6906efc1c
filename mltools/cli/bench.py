"""``mltools bench``: measurements of this machine against reference tools.

This module holds only the group; each benchmark lives in its own module and
is registered here.
"""
from __future__ import annotations

import click

from mltools.cli import MltoolsGroup


@click.group("bench", cls=MltoolsGroup)
def bench() -> None:
    """Measure memory, summation and training speed on this machine."""


from mltools.cli.bench_numa import numa_cmd  # noqa: E402

bench.add_command(numa_cmd)
