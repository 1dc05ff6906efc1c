"""What this machine and process are: ``collect_env()``; what a benchmark ran on: ``collect_machine()``."""
from mltools.env.report import (
    CpuInfo, EnvReport, GpuInfo, LibcInfo, MemoryInfo, NumaNodeInfo, PythonInfo,
    RuntimeLibrary, collect_env, cpu_model_name, environment_findings,
    isa_level_from_flags,
)
from mltools.env.machine import GpuState, Machine, collect_machine, describe_machine

__all__ = [
    "CpuInfo", "EnvReport", "GpuInfo", "LibcInfo", "MemoryInfo", "NumaNodeInfo",
    "PythonInfo", "RuntimeLibrary", "collect_env", "cpu_model_name", "describe_machine",
    "environment_findings",
    "isa_level_from_flags", "Machine", "GpuState", "collect_machine",
]
