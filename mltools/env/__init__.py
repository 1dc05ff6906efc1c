"""What this machine and process are: ``collect_env()``."""
from mltools.env.report import (
    CpuInfo, EnvReport, GpuInfo, LibcInfo, MemoryInfo, NumaNodeInfo, PythonInfo,
    RuntimeLibrary, collect_env, cpu_model_name, describe_machine, environment_findings,
    isa_level_from_flags,
)

__all__ = [
    "CpuInfo", "EnvReport", "GpuInfo", "LibcInfo", "MemoryInfo", "NumaNodeInfo",
    "PythonInfo", "RuntimeLibrary", "collect_env", "cpu_model_name", "describe_machine",
    "environment_findings",
    "isa_level_from_flags",
]
