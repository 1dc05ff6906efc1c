"""``mltools elf``: shared-library debugging."""
from __future__ import annotations

import click

from mltools.cli import MltoolsGroup
from mltools.cli.elf_trace import trace_cmd


@click.group("elf", cls=MltoolsGroup)
def elf_group() -> None:
    """Shared libraries: what ld.so loads, why, and what breaks."""


elf_group.add_command(trace_cmd)
