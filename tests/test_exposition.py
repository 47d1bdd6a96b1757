"""Our text encoder says exactly what prometheus_client's generic one says, escaping included."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.collector import SnapshotCollector
from exporter.exposition import render_text
from exporter.model import GpuReading, GpuState, ProcessState, Snapshot, SourceStatus, Workload


def snapshot() -> Snapshot:
    gpu = GpuReading(index=0, uuid="GPU-a", name='Odd "name"\\ with\nnewline', power_w=301.25, energy_j=5.0)
    procs = tuple(
        ProcessState(
            "GPU-a", "0", str(pid), Workload(comm=f"p{pid}", user="alice", pod="pod-1"), 1e21 * pid, 0.5
        )
        for pid in range(1, 4)
    )
    return Snapshot(
        timestamp=1.0,
        gpus=(GpuState(gpu, energy_j_total=math.inf, unattributed_energy_j_total=0.1),),
        gpu_processes=procs,
        sources=(SourceStatus("nvml", True, {"lost": 2}),),
    )


def test_matches_generic_encoder_sample_for_sample() -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, wall_clock=lambda: 2.0))
    ours = render_text(registry).decode()
    theirs = generate_latest(registry).decode()

    def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    assert samples(ours) == samples(theirs)
    assert [ln for ln in ours.splitlines() if ln.startswith("#")] == [
        ln for ln in theirs.splitlines() if ln.startswith("#")
    ]
    assert 'name="Odd \\"name\\"\\\\ with\\nnewline"' in ours
    assert "+Inf" in ours and "1e+21" in ours
