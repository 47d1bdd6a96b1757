"""Smoke test of the benchmarks at tiny sizes: asserts the deterministic accuracy figures, never timings."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks import accuracy, overhead, report, scale, sharing
from benchmarks.fakes import build_rig
from benchmarks.stats import percentile
from exporter.exposition import render_text
from exporter.sources.replay import ReplayGpuSource


def test_percentile_is_nearest_rank_and_median_of_few() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 100) == 3.0


def test_trace_oracles_are_exact_integrals() -> None:
    constant = accuracy.constant_trace(120.0)
    assert constant.energy(0) == 300.0 * 120
    assert constant.energy(1, 30.0, 60.5) == pytest.approx(450.0 * 30.5)
    bursty = accuracy.bursty_trace(120.0)
    for steps in bursty.gpus:  # steps tile [0, duration] without gaps or overlaps
        assert steps[0].start == 0.0
        assert all(a.end == pytest.approx(b.start) for a, b in itertools.pairwise(steps))
        assert steps[-1].end == pytest.approx(120.0)


def test_written_trace_replays_to_the_oracle(tmp_path: Path) -> None:
    trace = accuracy.bursty_trace(30.0)
    path = tmp_path / "bursty.jsonl"
    accuracy.write_trace(trace, path)
    source = ReplayGpuSource(str(path))
    readings = source.read(0.0)
    readings = source.read(30.0)
    for r in readings:
        assert r.energy_j == pytest.approx(trace.energy(r.index), rel=1e-12)


def test_accuracy_figures_meet_design_targets() -> None:
    results = {r.case: r for r in accuracy.run(quick=True)}
    assert len(results) == 9
    for r in results.values():
        if r.holds is not None:
            assert r.holds, r
    counter = results["bursty trace, energy counter"]
    assert abs(counter.error_pct) < accuracy.ENERGY_TARGET_PCT
    assert counter.exact == pytest.approx(math.fsum(accuracy.bursty_trace().energy(i) for i in range(2)))
    step = results["constant trace, intensity 100 -> 500 g/kWh at t=60.5 s"]
    # 750 W for 60.5 s at 100 g/kWh, then 59.5 s at 500, PUE 1.2.
    assert step.exact == pytest.approx((750 * 60.5 * 100 + 750 * 59.5 * 500) / 3.6e6 * 1.2)
    assert abs(step.error_pct) < 1e-6
    bursty_step = results["bursty trace, intensity 100 -> 500 g/kWh at t=60.5 s"]
    assert abs(bursty_step.error_pct) < accuracy.EMISSIONS_TARGET_PCT
    for case in ("bursty trace, processes coming and going", "8 simulated GPUs, 120 ticks, proportional"):
        assert results[case].error_pct / 100 <= accuracy.CONSERVATION_TARGET_REL
    # The benchmark can see an error where there is one: 1 s power samples miss sub-second bursts.
    assert abs(results["bursty trace, power only, integrated"].error_pct) > 0.1


def test_scaled_rig_conserves_and_serves_every_process() -> None:
    rig = build_rig(2, 10)
    try:
        snap = rig.sampler.snapshot
        assert len(snap.gpu_processes) == 10
        assert {p.gpu_index for p in snap.gpu_processes} == {"0", "1"}
        for g in snap.gpus:
            attributed = math.fsum(
                p.energy_j_total for p in snap.gpu_processes if p.gpu_uuid == g.reading.uuid
            )
            assert attributed + g.unattributed_energy_j_total == pytest.approx(g.energy_j_total, rel=1e-12)
            assert g.energy_j_total == pytest.approx(400.0 * 3)  # three 1 s ticks at 400 W
        assert all(p.workload.pod.startswith("job-") and p.workload.namespace for p in snap.gpu_processes)
    finally:
        rig.close()


def test_scale_measure_counts_series_at_tiny_size() -> None:
    result = scale.measure(1, 10, quick=True)
    assert result.label == "1x10"
    assert result.series > 10 * 4  # energy, power, emissions and embodied series per process at least
    assert result.body_bytes > 0
    assert result.tick_ms[0] <= result.tick_ms[1]


def test_served_encoder_says_what_generate_latest_says_at_scale() -> None:
    rig = build_rig(3, 30)
    try:
        ours = list(text_string_to_metric_families(render_text(rig.registry).decode()))
        theirs = list(text_string_to_metric_families(generate_latest(rig.registry).decode()))
        assert [(f.name, f.type, f.samples) for f in ours] == [(f.name, f.type, f.samples) for f in theirs]
        assert sum(len(f.samples) for f in ours) > 100
    finally:
        rig.close()


def test_report_marks_missed_targets_and_unavailable_columns() -> None:
    sizes = [scale.ScaleResult(8, 200, 917, 250_000, (0.5, 0.7), (12.0, 15.0), (14.0, 16.0), (20.0, 25.0))]
    over = [
        overhead.OverheadResult("footprint-exporter", "x", True, 30.0, 31.0, 0.5, (4.0, 5.0), 1000, 100),
        overhead.OverheadResult(
            "prometheus-node-exporter", "y", True, 15.0, 16.0, 0.25, (8.0, 9.0), 2000, 500
        ),
        overhead.OverheadResult("CodeCarbon", "not available: no network", False),
    ]
    text = report.render(sizes, over, [], "test", "a machine")
    assert "| scrape 8x200 in-process median < 10 ms | 12.00 ms | **no** |" in text
    assert "| tick 8x200, NVML excluded < 2 ms | 0.50 ms | yes |" in text
    assert "| 2.00x | 2.00x | 0.50x |" in text  # RSS, CPU and scrape ratios against node-exporter
    assert "| CodeCarbon | not available: no network |" in text
    assert "a machine" in text


@pytest.mark.integration
def test_overhead_run_measures_exporter_and_node_exporter() -> None:
    results = {
        r.name: r
        for r in overhead.run(
            duration_s=2.0, scrape_every_s=1.0, warmup_s=0.5, burst=2, gpus=2, with_codecarbon=False
        )
    }
    ours, node = results["footprint-exporter"], results["prometheus-node-exporter"]
    assert ours.available, ours.detail
    assert node.available, node.detail
    assert 5.0 < ours.rss_mb_median < 500.0
    assert ours.rss_mb_median <= ours.rss_mb_max
    assert ours.series > 20 and node.series > 20
    assert ours.scrape_ms is not None and node.scrape_ms is not None
    assert ours.cpu_percent >= 0.0


def test_series_per_realistic_node_follow_the_pods_not_the_processes() -> None:
    from benchmarks import series

    procs, pods = series.realistic_node()
    containers = {p.cgroup for p in procs if p.cgroup}
    by_pod = series.count_series("pod", "pod", ticks=3)
    # Kubernetes manifests: GPU series per (GPU, pod) x 4 metrics; CPU series per pod, plus one
    # "system" series for the 350 host processes, x 3 metrics.
    assert by_pod.by_family["footprint_process_gpu_energy_joules_total"] == 8
    assert by_pod.by_family["footprint_process_cpu_energy_joules_total"] == len(pods) + 1
    defaults = series.count_series("pid", "workload", ticks=3)
    assert defaults.by_family["footprint_process_gpu_energy_joules_total"] == 8  # one process per GPU
    assert defaults.by_family["footprint_process_cpu_energy_joules_total"] == len(containers) + 1
    before = series.count_series("pid", "pid", ticks=3)
    assert before.by_family["footprint_process_cpu_energy_joules_total"] == len(procs)
    assert by_pod.series < defaults.series < before.series / 5


def test_sharing_truth_is_the_simulated_gpu_not_the_estimate() -> None:
    # Two processes taking turns every 0.5 s at equal power: exactly half each, whatever NVML says.
    sc = sharing.Scenario(
        "time-slicing",
        "turns",
        (sharing.Job(101, "A", 0.5, 1.0), sharing.Job(102, "B", 0.5, 1.0, 0.5)),
        idle_w=100.0,
    )
    a, b = sharing.run_scenario(sc, 20.0)
    assert a.truth_j == pytest.approx(b.truth_j, rel=1e-9)
    assert a.truth_j + b.truth_j == pytest.approx((100.0 + 300.0) * 20.0, rel=1e-9)
    # MIG truth follows the instance's activity; the exporter cannot see it (NVML has none per instance).
    (mig,) = sharing.run_scenario(
        sharing.Scenario("MIG", "half busy", (sharing.Job(101, "2g", 0.5, 2.0, instance=(2, 28)),)), 20.0
    )
    share = 28 / 98
    busy_w, idle_w = 80.0 + 300.0 * share, 80.0  # half the time each
    assert mig.measured_share == pytest.approx(share, rel=1e-9)
    # Busy seconds x its share of the board, out of all the energy (up to the +-50 ms jitter of the
    # interval edges against the 1 s half-cycles).
    assert mig.truth_share == pytest.approx(share * busy_w / (busy_w + idle_w), rel=0.05)
    assert mig.error_pct is not None and mig.error_pct > 40


def test_sharing_errors_run_through_nvml_source_and_meet_the_time_slicing_bounds() -> None:
    results = sharing.run(quick=True)
    by = {(r.scenario, r.process): r for r in results}
    timed = [r for r in results if r.holds is not None]
    assert len(timed) >= 24
    # The 2 s sampling case of the issue: 90/10, not the 70/30 an equal split on NOT_FOUND gave.
    sparse = by[("90/10, NVML samples every 2 s (sparse)", "A 90%")]
    assert sparse.measured_share == pytest.approx(0.9, abs=0.01)
    assert by[("idle process holding the GPU", "holder (idle)")].measured_share < 0.01
    # NVML sampling every 200 ms, as the H200 did: within 5% per process even in the 2-minute quick
    # run (the full run's figures are in docs/attribution.md). Slower sampling and random draws
    # leave fewer or noisier samples to go by in two minutes: within 25%.
    for r in timed:
        assert r.error_pct is None or abs(r.error_pct) < 25.0, r
    for name in ("2 processes, duty 90% and 30%", "4 processes, duty 80/50/25/10%"):
        for r in results:
            if r.scenario == name:
                assert r.holds, r
    # MIG: a seventh of the board at most; MPS clients on equal SM shares split by what NVML saw.
    assert by[("one busy job on one of seven 1g slices", "1g job 100%")].measured_share == pytest.approx(
        1 / 7
    )
    mps = by[("clients sampled, same SM footprint, duty 80% and 40%", "A 80%")]
    assert mps.error_pct is not None and abs(mps.error_pct) < 5.0
    text = report.render([], [], [], "test", "a machine", sharing=results)
    assert "## Attribution error per GPU sharing mode" in text
    assert "time-slicing attribution error per process < 5%" in text


def test_500_budgets_render_to_one_rule_each_and_fit_a_prometheusrule() -> None:
    """The deterministic half of the budgets benchmark: sizes and rule counts (timings are measured only)."""
    from benchmarks import budgets as budget_bench
    from exporter import budgets

    counts = {}
    for n in (50, 500):
        bf = budgets.parse_budgets(budget_bench.synthetic_budgets(n))
        doc = budgets.render_rules(bf)
        rules = sum(len(g["rules"]) for g in doc["groups"])
        counts[n] = rules - n
        text = budgets.dump(doc, "synthetic")
        spec = budget_bench.yaml.safe_dump(
            {"spec": {"groups": budget_bench._all_groups(doc)}}, sort_keys=False, width=110
        )
        assert len(spec.encode()) < budget_bench.PROMETHEUSRULE_LIMIT, n
        assert len(text.encode()) < 256 * 1024, n
    assert counts[50] == counts[500]  # beyond one definition each, the same shared rules
    assert {b.scope.joined for b in budgets.parse_budgets(budget_bench.synthetic_budgets(20)).budgets} == {
        True,
        False,
    }
