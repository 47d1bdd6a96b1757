"""Fake-NVML scenarios of devices that do not measure cleanly, served end to end through the collector.

A GPU without power and energy (vGPU guest), a GPU lost at start that recovers, a GPU whose reads fail
for several intervals, a GPU reporting an impossible power: each must drop or qualify only its own
numbers, say so in self-metrics, and leave every other device and the CPU counting.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_pynvml import FakeGpu, FakeNvml, FakeProcess, fail_reads, fault_power_sensor, heal_reads, vgpu_guest

from exporter.attribution import AttributionPolicy
from exporter.collector import SnapshotCollector
from exporter.exposition import render_text
from exporter.ledger import ProcessLedger
from exporter.model import ForecastState, IntensityState, ProviderState
from exporter.sampler import Attribution, Sampler
from exporter.sources.nvml import NvmlGpuSource
from exporter.workload import WorkloadResolver
from tests.metrics_text import parse, select
from tests.test_sampler import ConstantCpu

GRAMS_PER_KWH = 360.0  # 1e-4 g per joule
EMBODIED_G_PER_S = 0.002


class ConstantCarbon:
    """A constant intensity and a known embodied rate per GPU."""

    pue = 1.0
    wue_litres_per_kwh: float | None = None
    has_marginal = False
    market = None

    def segments(self, signal: str, t0: float, t1: float) -> list[tuple[float, float]]:
        return [(t1 - t0, GRAMS_PER_KWH)]

    def gpu_embodied_grams_per_second(self, name: str) -> float:
        return EMBODIED_G_PER_S

    def node_embodied_grams_per_second(self) -> float | None:
        return None

    def intensities(self) -> tuple[IntensityState, ...]:
        return (IntensityState("DE", "static", "average", GRAMS_PER_KWH, 0.0),)

    def providers(self) -> tuple[ProviderState, ...]:
        return ()

    def forecasts(self) -> tuple[ForecastState, ...]:
        return ()

    def emission_factors(self) -> tuple[()]:
        return ()


class Rig:
    """A sampler over a fake NVML with a 1 s clock; ``step`` advances both and ticks."""

    def __init__(self, tmp_path: Path, gpus: list[FakeGpu], policy: AttributionPolicy | None = None) -> None:
        self.nvml = FakeNvml(gpus=gpus)
        self.clock = [1000.0]
        self.cpu = ConstantCpu(80.0)
        self.sampler = Sampler(
            NvmlGpuSource(nvml=self.nvml, procfs_root=str(tmp_path / "noproc")),
            self.cpu,
            carbon=ConstantCarbon(),  # type: ignore[arg-type]
            attribution=Attribution(
                policy=policy or AttributionPolicy(),
                resolver=WorkloadResolver(str(tmp_path / "noproc")),
                gpu_ledger=ProcessLedger("pid", 500, 600.0),
                cpu_ledger=ProcessLedger("pid", 500, 600.0),
            ),
            clock=lambda: self.clock[0],
            wall_clock=lambda: self.clock[0],
        )

    def step(self, seconds: float = 1.0) -> None:
        self.nvml.advance(seconds)
        self.clock[0] += seconds
        self.sampler.tick()

    def metrics(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return parse(render_text(SnapshotCollector(lambda: self.sampler.snapshot)).decode())


def by_uuid(samples: dict, name: str, uuid: str) -> float | None:  # type: ignore[type-arg]
    found = select(samples, name, uuid=uuid)
    assert len(found) <= 1
    return next(iter(found.values()), None)


def test_gpu_without_power_and_energy_has_no_energy_series_and_says_why(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        [
            FakeGpu(uuid="GPU-real", power_w=300.0, energy_j=0.0, processes=[FakeProcess(101)]),
            vgpu_guest("GPU-vgpu", pci_bus_id="00000000:19:00.0", processes=[FakeProcess(202)]),
        ],
    )
    rig.sampler.tick()
    for _ in range(10):
        rig.step()
    m = rig.metrics()
    # The vGPU answers (up, utilisation, memory) but measures nothing: no energy, unattributed,
    # operational or embodied series, and no process series on it, rather than zeros.
    assert by_uuid(m, "footprint_gpu_up", "GPU-vgpu") == 1
    assert by_uuid(m, "footprint_gpu_memory_used_bytes", "GPU-vgpu") == 40_000_000_000
    for name in (
        "footprint_gpu_power_watts",
        "footprint_gpu_energy_joules_total",
        "footprint_gpu_unattributed_energy_joules_total",
        "footprint_gpu_emissions_grams_total",
        "footprint_gpu_embodied_emissions_grams_total",
        "footprint_process_gpu_energy_joules_total",
        "footprint_process_gpu_power_watts",
        "footprint_process_gpu_emissions_grams_total",
        "footprint_process_gpu_embodied_emissions_grams_total",
    ):
        assert by_uuid(m, name, "GPU-vgpu") is None, name
    assert select(m, "footprint_device_energy_method_info", device="GPU-vgpu") == {
        frozenset(
            {("kind", "gpu"), ("device", "GPU-vgpu"), ("method", "none"), ("reason", "no_power_or_energy")}
        ): 1.0
    }
    # The measured GPU and the CPU are untouched by it.
    assert by_uuid(m, "footprint_gpu_energy_joules_total", "GPU-real") == pytest.approx(3000.0)
    assert by_uuid(m, "footprint_gpu_embodied_emissions_grams_total", "GPU-real") == pytest.approx(
        10 * EMBODIED_G_PER_S
    )
    assert select(m, "footprint_device_energy_method_info", device="GPU-real", method="counter")
    assert select(m, "footprint_device_energy_method_info", device="package-0", method="counter")
    assert sum(select(m, "footprint_cpu_energy_joules_total").values()) == pytest.approx(800.0)
    # Nor does it reach the state file: a restart must not turn it into a measured 0.
    assert set(rig.sampler.dump_state()["gpus"]) == {"GPU-real"}


def test_gpu_lost_at_start_leaves_no_phantom_series_after_it_recovers(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path, [FakeGpu(uuid="GPU-a", power_w=200.0), FakeGpu(uuid="GPU-b", power_w=100.0, lost=True)]
    )
    rig.sampler.tick()
    rig.step()
    m = rig.metrics()
    # Down since start, NVML never gave its UUID: it shows as lost, with no counters it never measured.
    assert select(m, "footprint_gpu_up", gpu="1") == {frozenset({("gpu", "1"), ("uuid", "")}): 0.0}
    assert select(m, "footprint_gpu_energy_joules_total", gpu="1") == {}
    rig.nvml.recover(1)
    for _ in range(5):
        rig.step()
    m = rig.metrics()
    # Once it answers, everything is under its UUID: no series with an empty uuid is left, so an alert
    # on footprint_gpu_up == 0 (FootprintGpuLost) resolves.
    assert [k for k in m if ("uuid", "") in k[1]] == []
    assert select(m, "footprint_gpu_up", gpu="1") == {frozenset({("gpu", "1"), ("uuid", "GPU-b")}): 1.0}
    # Read at recovery (the baseline) and 4 more times, 1 s apart, at 100 W.
    assert by_uuid(m, "footprint_gpu_energy_joules_total", "GPU-b") == pytest.approx(400.0)
    assert by_uuid(m, "footprint_gpu_energy_joules_total", "GPU-a") == pytest.approx(1200.0)


def test_reads_failing_for_several_intervals_use_the_gpus_own_elapsed_time(tmp_path: Path) -> None:
    idle_w = 100.0
    rig = Rig(
        tmp_path,
        [FakeGpu(uuid="GPU-t", power_w=400.0, energy_j=0.0, processes=[FakeProcess(101)])],
        policy=AttributionPolicy("idle-baseline", idle_watts=idle_w),
    )
    rig.sampler.tick()
    for _ in range(4):
        rig.step()
    fail_reads(rig.nvml, 0)
    for _ in range(5):
        rig.step()
        assert by_uuid(rig.metrics(), "footprint_gpu_up", "GPU-t") == 0
    heal_reads(rig.nvml, 0)
    rig.step()  # the first good read in 6 s: the hardware counter covers all of them
    m = rig.metrics()
    energy = by_uuid(m, "footprint_gpu_energy_joules_total", "GPU-t")
    assert energy == pytest.approx(400.0 * 10)
    # Every figure derived from that 2400 J delta uses the same 6 s: the idle baseline kept apart is
    # 100 W x 6 s, the process drew (2400 - 600) J / 6 s, and embodied carbon covers all 10 s.
    assert by_uuid(m, "footprint_gpu_unattributed_energy_joules_total", "GPU-t") == pytest.approx(idle_w * 10)
    proc_power = select(m, "footprint_process_gpu_power_watts", uuid="GPU-t")
    assert list(proc_power.values()) == [pytest.approx(400.0 - idle_w)]
    assert by_uuid(m, "footprint_gpu_embodied_emissions_grams_total", "GPU-t") == pytest.approx(
        10 * EMBODIED_G_PER_S
    )
    assert by_uuid(m, "footprint_gpu_emissions_grams_total", "GPU-t") == pytest.approx(
        4000.0 * GRAMS_PER_KWH / 3.6e6
    )
    procs = sum(select(m, "footprint_process_gpu_energy_joules_total", uuid="GPU-t").values())
    assert procs + idle_w * 10 == pytest.approx(energy, rel=1e-12)
    errors = select(m, "footprint_source_errors_total", source="nvml", kind="timeout")
    assert list(errors.values()) == [5.0]


def test_impossible_power_is_dropped_for_that_gpu_only_and_counted(tmp_path: Path) -> None:
    rig = Rig(
        tmp_path,
        [
            FakeGpu(uuid="GPU-old", name="Tesla P100-PCIE-16GB", power_w=250.0, energy_j=None),  # no counter
            FakeGpu(uuid="GPU-new", power_w=300.0, energy_j=0.0),
        ],
    )
    rig.sampler.tick()
    for _ in range(3):
        rig.step()
    fault_power_sensor(rig.nvml, 0)  # 0xFFFFFFFF mW: 4.29 MW, over any limit
    for _ in range(3):
        rig.step()
        m = rig.metrics()
        assert by_uuid(m, "footprint_gpu_power_watts", "GPU-old") is None  # never served as a gauge
        assert by_uuid(m, "footprint_gpu_up", "GPU-old") == 1
        assert select(m, "footprint_device_energy_method_info", device="GPU-old") == {
            frozenset(
                {("kind", "gpu"), ("device", "GPU-old"), ("method", "none"), ("reason", "rejected")}
            ): 1.0
        }
    m = rig.metrics()
    assert select(m, "footprint_device_readings_rejected_total") == {
        frozenset({("kind", "gpu"), ("device", "GPU-old"), ("reason", "above_limit")}): 3.0
    }
    # Nothing of the 4.29 MW reached a total; the other GPU and the CPU kept counting every second.
    assert by_uuid(m, "footprint_gpu_energy_joules_total", "GPU-old") == pytest.approx(750.0)
    assert by_uuid(m, "footprint_gpu_energy_joules_total", "GPU-new") == pytest.approx(1800.0)
    assert sum(select(m, "footprint_cpu_energy_joules_total").values()) == pytest.approx(480.0)
    assert rig.sampler.snapshot.samples_total == 7
    rig.nvml.gpus[0].power_raw_mw = None  # the sensor is back
    rig.step()
    m = rig.metrics()
    # The gap is bridged from the last good reading (250 W) to this one (250 W) over its 4 s.
    assert by_uuid(m, "footprint_gpu_energy_joules_total", "GPU-old") == pytest.approx(250.0 * 7)
    assert select(m, "footprint_device_energy_method_info", device="GPU-old", method="power")
