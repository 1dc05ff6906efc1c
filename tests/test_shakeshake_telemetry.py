"""Shake-Shake's GPU side without a GPU: NVML telemetry against a fake of the NVML API
(its names checked against the real nvidia-ml-py module), throttle detection, the
steady-state warm-up, and MFU's named peak. The GPU run itself is
benchmarks/shakeshake_gpu.py."""
from __future__ import annotations

import dataclasses

import pytest

from mltools.shakeshake import telemetry as T


class FakeNVML:
    """The part of pynvml's API the sampler uses, replaying scripted readings."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, readings, name="NVIDIA H100 80GB HBM3", max_sm=1980, limit_mw=700_000,
                 reasons_supported=True):
        self.readings = list(readings)      # (sm MHz, mem MHz, power mW, temp C, reasons bitmask)
        self.i = 0
        self.name, self.max_sm, self.limit_mw = name, max_sm, limit_mw
        self.reasons_supported = reasons_supported
        self.inited = self.shut = False

    def _now(self):
        r = self.readings[min(self.i, len(self.readings) - 1)]
        return r

    def nvmlInit(self):
        self.inited = True

    def nvmlShutdown(self):
        self.shut = True

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlDeviceGetHandleByPciBusId(self, bus):
        return ("handle", bus) if bus == "00000000:18:00.0" else (_ for _ in ()).throw(self.NVMLError("not found"))

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetName(self, h):
        return self.name.encode()

    def nvmlDeviceGetUUID(self, h):
        return "GPU-1234"

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("Mem", (), {"total": 80 << 30})()

    def nvmlDeviceGetClockInfo(self, h, kind):
        r = self._now()
        if kind == self.NVML_CLOCK_SM:
            return r[0]
        return r[1]

    def nvmlDeviceGetMaxClockInfo(self, h, kind):
        return self.max_sm if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetPowerUsage(self, h):
        return self._now()[2]

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return self.limit_mw

    def nvmlDeviceGetTemperature(self, h, sensor):
        return self._now()[3]

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        if not self.reasons_supported:
            raise self.NVMLError("Not Supported")
        r = self._now()[4]
        self.i += 1                      # one full reading per sample: the reasons are read last
        return r


def test_the_fake_speaks_the_real_nvml_api():
    pynvml = pytest.importorskip("pynvml")
    used = [n for n in dir(FakeNVML) if n.startswith(("nvml", "NVML_"))]
    missing = [n for n in used if not hasattr(pynvml, n)]
    assert not missing, missing
    for name in ("NVML_CLOCK_SM", "NVML_CLOCK_MEM", "NVML_TEMPERATURE_GPU"):
        assert isinstance(getattr(pynvml, name), int)
    # our reason bits are NVML's
    real = {"gpu_idle": "GpuIdle", "applications_clocks_setting": "ApplicationsClocksSetting",
            "sw_power_cap": "SwPowerCap", "hw_slowdown": "HwSlowdown", "sync_boost": "SyncBoost",
            "sw_thermal_slowdown": "SwThermalSlowdown", "hw_thermal_slowdown": "HwThermalSlowdown",
            "hw_power_brake_slowdown": "HwPowerBrakeSlowdown", "display_clock_setting": "DisplayClockSetting"}
    for bit, name, _ in T.THROTTLE_REASONS:
        assert getattr(pynvml, "nvmlClocksEventReason" + real[name]) == bit, name


def test_without_a_gpu_telemetry_is_skipped_with_a_reason():
    pytest.importorskip("pynvml")
    nvml, note = T.open_nvml()
    if nvml is not None:
        T.close_nvml(nvml)
        pytest.skip("this machine has NVML")
    assert note.startswith("no GPU telemetry: NVML did not start")


def test_missing_nvidia_ml_py_is_a_note(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "pynvml", None)
    nvml, note = T.open_nvml()
    assert nvml is None and "pip install 'mltools[gpu]'" in note


def test_a_power_capped_run_is_throttled():
    steady = (1980, 2619, 690_000, 71, 0x0)
    capped = (1755, 2619, 700_000, 78, 0x4)          # SW power cap
    fake = FakeNVML([steady] * 6 + [capped] * 4)
    nvml, note = T.open_nvml(fake)
    assert nvml is fake and note is None and fake.inited
    h = T.handle_for(fake, "00000000:18:00.0", 0)
    s = T.Sampler(fake, h, "H100")
    for _ in range(10):
        s.sample()
    tm = s.summary()
    assert tm.samples == 10 and tm.throttled and tm.throttle_reasons == ("sw_power_cap",)
    assert tm.reasons == {"sw_power_cap": 0.4}
    assert (tm.sm_clock_mhz.min, tm.sm_clock_mhz.max, tm.max_sm_clock_mhz) == (1755, 1980, 1980)
    assert tm.power_w.max == 700.0 and tm.power_limit_w == 700.0 and tm.temperature_c.max == 78


def test_idle_and_app_clock_reasons_are_not_throttling():
    fake = FakeNVML([(1980, 2619, 300_000, 40, 0x1 | 0x2)] * 3)
    s = T.Sampler(fake, ("handle", 0), "H100")
    for _ in range(3):
        s.sample()
    tm = s.summary()
    assert not tm.throttled and tm.reasons == {"gpu_idle": 1.0, "applications_clocks_setting": 1.0}


def test_a_gpu_without_reasons_says_so_and_the_thread_samples():
    import time
    fake = FakeNVML([(1400, 5001, 250_000, 60, 0)], name="NVIDIA L4", reasons_supported=False)
    s = T.Sampler(fake, ("handle", 0), "L4", interval_s=0.01).start()
    time.sleep(0.1)
    s.stop()
    tm = s.summary()
    assert tm.samples >= 2 and not tm.throttled and "does not report" in tm.note


def test_gpu_states_for_the_machine_record():
    fake = FakeNVML([(1980, 2619, 690_000, 71, 0)])
    (g,) = T.gpu_states(fake, [(0, "00000000:18:00.0")])
    assert (g.name, g.driver_version, g.memory_total_mib, g.max_sm_clock_mhz) == \
        ("NVIDIA H100 80GB HBM3", "550.54.15", 81920, 1980)
    assert g.power_w == 690.0 and g.power_limit_w == 700.0 and g.pci_bus_id == "00000000:18:00.0"
    # an unknown PCI address falls back to the index
    assert T.handle_for(fake, "0000:99:00.0", 3) == ("handle", 3)


# ------------------------------------------------------------------ steady state

torch = pytest.importorskip("torch")


def test_settled_needs_the_last_window_within_tolerance():
    from mltools.shakeshake.bench import settled

    assert not settled([900, 120, 101], 3, 0.10)
    assert settled([900, 120, 101, 100, 104], 3, 0.10)
    assert not settled([100, 100], 3, 0.10)


class _ScriptedRunner:
    def __init__(self, times):
        self.times = list(times)
        self.steps = 0

    def train_step(self, i):
        self.steps += 1

    def timed(self, fn, first, count):
        fn(first)
        t = self.times.pop(0)
        return t / 1e3, [t]

    def eval_logits(self, x):
        pass


@pytest.mark.parametrize("times, warmup, limit, steps, ok", [
    ([5000, 300, 120, 101, 100, 102, 99], 1, 50, 6, True),     # compile; 101, 100, 102 settle at step 6
    ([5000, 100, 100, 100, 100, 100], 4, 50, 4, True),         # never fewer than --warmup
    ([5000, 300, 200, 150, 120, 110, 105], 1, 4, 4, False),    # the limit, not settled
])
def test_warm_up_runs_until_steady(times, warmup, limit, steps, ok):
    from mltools.shakeshake.bench import BenchConfig, _warm_up

    cfg = BenchConfig(warmup=warmup, max_warmup=limit)
    r = _scripted = _ScriptedRunner(times)
    warm, is_settled = _warm_up(r, cfg, lambda i: (None, None), None, "x")
    assert len(warm) == steps == _scripted.steps and is_settled is ok


# ------------------------------------------------------------------ MFU names its peak, throttling shows

def test_cpu_run_records_cases_and_text_names_peak_and_throttling(cli, tmp_path):
    out = tmp_path / "ss.json"
    res = cli("bench", "shakeshake", "--device", "cpu", "--impl", "fast", "--peak-tflops", "2", "--depth", "8",
              "--width", "4", "--batch-size", "4", "--steps", "4", "--warmup", "1", "--max-warmup", "3",
              "--json", "--output", str(out))
    assert res.exit_code == 0, res.stderr
    import json
    doc = json.loads(out.read_text())
    assert doc == res.json()
    assert doc["version"] == 2 and doc["telemetry"] == [] and doc["throttled"] is False
    (impl,) = doc["implementations"]
    assert impl["peak"] == {"tflops": 2.0, "precision": "fp32", "gpu": "as given", "source": "--peak-tflops"}
    assert 1 <= impl["warmup_steps"] <= 3 and impl["timed_steps"] == 4
    cases = {c["name"]: c for c in doc["cases"]}
    assert len(cases["fast/step"]["samples"]) == 4 and len(cases["fast/step"]["warmup"]) == impl["warmup_steps"]
    assert cases["fast/train"]["better"] == "higher" and cases["fast/step"]["unit"] == "ms"

    from mltools.shakeshake import bench as B
    from mltools.shakeshake.describe import render_shakeshake
    from mltools.shakeshake.peaks import find_peak

    r = B.run_benchmark(B.BenchConfig(depth=8, width=4, batch_size=4, steps=2, warmup=1, impls=("fast",)))
    tm = T.GpuTelemetry("NVIDIA H100 80GB HBM3", 10, 0.1, T.Range(1755, 1900, 1980), None, 1980,
                        T.Range(600, 690, 700), 700.0, T.Range(70, 75, 78), {"sw_power_cap": 0.4}, True,
                        ("sw_power_cap",))
    peak = find_peak("NVIDIA H100 80GB HBM3", "bf16")
    impl = dataclasses.replace(r.implementations[0], peak=peak, mfu=0.25, peak_tflops=peak.tflops)
    text = render_shakeshake(dataclasses.replace(r, telemetry=(tm,), throttled=True, implementations=(impl,)))
    assert "THROTTLED: sw_power_cap" in text and "of max 1980" in text
    assert "the bf16 peak of the H100 SXM5 (NVIDIA H100 Tensor Core GPU Architecture whitepaper" in text
