"""GPU telemetry through NVML (``nvidia-ml-py``, imported as ``pynvml``) while steps are timed.

A GPU figure means little without the clocks it ran at: a GPU that hit its
power cap or its thermal limit during the timed steps ran slower than its
datasheet, and the run must say so. :class:`Sampler` polls NVML from a thread
every ``interval_s`` while the timed steps run (SM and memory clocks, power,
temperature and the clock event ("throttle") reasons) and summarises them as
:class:`GpuTelemetry`. :func:`gpu_states` describes each GPU once for the
run's :class:`~mltools.env.machine.Machine`.

Everything takes the NVML module as an argument (``nvml``), so the tests run
it against a fake of the NVML API; :func:`open_nvml` imports and initialises
the real one, and says why not (no nvidia-ml-py, no driver) instead of
failing, so a machine without a GPU skips telemetry cleanly. Nothing here
imports torch.
"""
from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mltools.env.machine import GpuState

__all__ = ["open_nvml", "close_nvml", "handle_for", "gpu_states", "Sampler", "GpuTelemetry", "Range",
           "THROTTLE_REASONS", "SLOWDOWN_REASONS"]

# Clock event reasons (nvml.h, nvmlClocksEventReason*; older bindings call them
# ClocksThrottleReason*): bit -> (our name, whether it slows the GPU below what it was asked for).
THROTTLE_REASONS: Tuple[Tuple[int, str, bool], ...] = (
    (0x1, "gpu_idle", False),
    (0x2, "applications_clocks_setting", False),
    (0x4, "sw_power_cap", True),
    (0x8, "hw_slowdown", True),
    (0x10, "sync_boost", False),
    (0x20, "sw_thermal_slowdown", True),
    (0x40, "hw_thermal_slowdown", True),
    (0x80, "hw_power_brake_slowdown", True),
    (0x100, "display_clock_setting", False),
)
SLOWDOWN_REASONS = tuple(name for _, name, slows in THROTTLE_REASONS if slows)


def open_nvml(nvml: Any = None) -> Tuple[Optional[Any], Optional[str]]:
    """(the initialised NVML module, None), or (None, why not)."""
    if nvml is None:
        try:
            import pynvml as nvml   # the nvidia-ml-py package
        except ImportError:
            return None, "no GPU telemetry: nvidia-ml-py is not installed (pip install 'mltools[gpu]')"
    try:
        nvml.nvmlInit()
    except Exception as exc:   # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"no GPU telemetry: NVML did not start ({exc})"
    return nvml, None


def close_nvml(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:   # noqa: BLE001 - nothing to do about it
        pass


def _call(fn, *args):
    """An NVML query, None when the GPU does not support it (NVMLError_NotSupported, ...)."""
    try:
        return fn(*args)
    except Exception:   # noqa: BLE001 - a query a GPU lacks is a missing value, not a failure
        return None


def _text(v) -> Optional[str]:
    if v is None:
        return None
    return v.decode() if isinstance(v, bytes) else str(v)


def handle_for(nvml: Any, pci_bus_id: Optional[str], index: int):
    """The NVML handle of a CUDA device: by PCI bus id (right whatever CUDA_VISIBLE_DEVICES
    reorders), else by index."""
    if pci_bus_id:
        h = _call(nvml.nvmlDeviceGetHandleByPciBusId, pci_bus_id)
        if h is not None:
            return h
    return _call(nvml.nvmlDeviceGetHandleByIndex, index)


def _reasons(nvml: Any, handle) -> Optional[int]:
    fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
    return None if fn is None else _call(fn, handle)


def gpu_states(nvml: Any, devices: Sequence[Tuple[int, Optional[str]]]) -> Tuple[GpuState, ...]:
    """Model, driver and clocks of each (index, PCI bus id) now."""
    driver = _text(_call(nvml.nvmlSystemGetDriverVersion))
    out = []
    for index, bus in devices:
        h = handle_for(nvml, bus, index)
        if h is None:
            continue
        mem = _call(nvml.nvmlDeviceGetMemoryInfo, h) if hasattr(nvml, "nvmlDeviceGetMemoryInfo") else None
        power = _call(nvml.nvmlDeviceGetPowerUsage, h)
        limit = _call(nvml.nvmlDeviceGetEnforcedPowerLimit, h)
        out.append(GpuState(
            index=index, name=_text(_call(nvml.nvmlDeviceGetName, h)) or "unknown GPU",
            uuid=_text(_call(nvml.nvmlDeviceGetUUID, h)), pci_bus_id=bus, driver_version=driver,
            memory_total_mib=None if mem is None else int(mem.total) // (1 << 20),
            sm_clock_mhz=_call(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_SM),
            mem_clock_mhz=_call(nvml.nvmlDeviceGetClockInfo, h, nvml.NVML_CLOCK_MEM),
            max_sm_clock_mhz=_call(nvml.nvmlDeviceGetMaxClockInfo, h, nvml.NVML_CLOCK_SM),
            max_mem_clock_mhz=_call(nvml.nvmlDeviceGetMaxClockInfo, h, nvml.NVML_CLOCK_MEM),
            temperature_c=_call(nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU),
            power_w=None if power is None else power / 1000.0,
            power_limit_w=None if limit is None else limit / 1000.0))
    return tuple(out)


@dataclass(frozen=True)
class Range:
    min: float
    median: float
    max: float


def _range(values: List[float]) -> Optional[Range]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return Range(min(vals), statistics.median(vals), max(vals))


@dataclass(frozen=True)
class GpuTelemetry:
    """What NVML saw of one GPU while the timed steps ran."""

    gpu: str
    samples: int
    interval_s: float
    sm_clock_mhz: Optional[Range]
    mem_clock_mhz: Optional[Range]
    max_sm_clock_mhz: Optional[int]
    power_w: Optional[Range]
    power_limit_w: Optional[float]
    temperature_c: Optional[Range]
    reasons: Dict[str, float]          # clock event reason -> fraction of samples it was active in
    throttled: bool                    # a slowdown reason (power cap, thermal, HW slowdown) was active
    throttle_reasons: Tuple[str, ...]  # those slowdown reasons
    note: Optional[str] = None


class Sampler:
    """Polls one GPU from a thread between :meth:`start` and :meth:`stop`."""

    def __init__(self, nvml: Any, handle, name: str, interval_s: float = 0.1):
        self.nvml, self.handle, self.name, self.interval_s = nvml, handle, name, interval_s
        self._rows: List[Tuple[Optional[int], Optional[int], Optional[int], Optional[int], Optional[int]]] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def sample(self) -> None:
        n, h = self.nvml, self.handle
        self._rows.append((_call(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_SM),
                           _call(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_MEM),
                           _call(n.nvmlDeviceGetPowerUsage, h),
                           _call(n.nvmlDeviceGetTemperature, h, n.NVML_TEMPERATURE_GPU),
                           _reasons(n, h)))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def start(self) -> "Sampler":
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="mltools-nvml", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Pause sampling (start again for the next timed round)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def summary(self) -> GpuTelemetry:
        self.stop()
        if not self._rows:
            self.sample()     # a run shorter than one interval still gets one reading
        rows = self._rows
        sm, mem, power, temp, reasons = (list(col) for col in zip(*rows))
        active: Dict[str, float] = {}
        for bit, name, _ in THROTTLE_REASONS:
            seen = [r for r in reasons if r is not None]
            if seen:
                frac = sum(1 for r in seen if r & bit) / len(seen)
                if frac:
                    active[name] = round(frac, 3)
        slow = tuple(r for r in SLOWDOWN_REASONS if r in active)
        limit = _call(self.nvml.nvmlDeviceGetEnforcedPowerLimit, self.handle)
        pw = _range([None if p is None else p / 1000.0 for p in power])
        note = None if any(r is not None for r in reasons) else "this GPU does not report clock event reasons"
        return GpuTelemetry(
            gpu=self.name, samples=len(rows), interval_s=self.interval_s,
            sm_clock_mhz=_range(sm), mem_clock_mhz=_range(mem),
            max_sm_clock_mhz=_call(self.nvml.nvmlDeviceGetMaxClockInfo, self.handle, self.nvml.NVML_CLOCK_SM),
            power_w=pw, power_limit_w=None if limit is None else limit / 1000.0,
            temperature_c=_range(temp), reasons=active, throttled=bool(slow), throttle_reasons=slow, note=note)
