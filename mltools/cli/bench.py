"""``mltools bench``: measured speed, next to the reference tools."""
import click

from mltools.cli import MltoolsGroup
from mltools.cli.bench_sum import sum_cmd


@click.group("bench", cls=MltoolsGroup)
def bench() -> None:
    """Benchmarks that run mltools and the reference tools side by side."""


bench.add_command(sum_cmd)
