"""Counters over a crash and a clean restart, as a real Prometheus scraping the real exporter sees them.

One exporter replays a trace whose energy is known exactly, with a state file checkpointed every second.
It is SIGKILLed half-way through the trace (a crash or an OOM kill: the checkpoint on disk is then below
what Prometheus last scraped), restarted, left to finish the trace, stopped with SIGTERM (a clean
shutdown) and restarted again. Over the whole run, ``increase()`` must count no more than what the
exporter measured and lose at most the energy between the last scrape and the crash; across the clean
restart nothing may be lost and ``resets()`` must be 0; and the conservation identity (GPU = processes +
unattributed) must hold for ``increase()`` over windows with processes expiring and both restarts.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import requests

from tests.exporter_proc import ExporterProcess, start_exporter
from tests.metrics_text import parse, select
from tests.prom_procs import RunningServer, free_port, prometheus

pytestmark = pytest.mark.integration

IDLE_START_W, IDLE_START_S = 20.0, 3  # the trace starts idle ...
POWER_W = 400.0  # ... then draws this until it ends
TRACE_S = 16  # then the trace ends: power 0, counter held
TRACE_J = IDLE_START_W * IDLE_START_S + POWER_W * (TRACE_S - IDLE_START_S)  # one full play, exactly
CHECKPOINT_S = 4  # --state.interval
IDLE_W = 50.0  # --attribution.idle-watts: kept apart as unattributed
SCRAPE_S = 1.0
SAMPLE_S = 0.1
RETENTION_S = 4.0  # process 202 ends at 4 s, so its series expires at about 8 s in every run
WAIT_S = 60.0
T = TypeVar("T")


def write_trace(path: Path) -> None:
    lines = []
    energy = 0.0
    for t in range(TRACE_S + 1):
        procs = [{"pid": 101, "comm": "train", "user": "alice", "sm_util": 0.75, "start_time": 1000.0}]
        if t < 4:
            procs.append({"pid": 202, "comm": "eval", "user": "bob", "sm_util": 0.25, "start_time": 1001.0})
        gpu = {
            "index": 0,
            "uuid": "GPU-restart",
            "name": "NVIDIA H100 80GB HBM3",
            "power_w": power(t),
            "energy_j": energy,
            "power_limit_w": 700.0,
            "processes": procs,
        }
        lines.append(json.dumps({"t": float(t), "gpus": [gpu]}))
        energy += power(t)  # held until the next sample, one second later
    path.write_text("\n".join(lines) + "\n")


def power(t: float) -> float:
    return IDLE_START_W if t < IDLE_START_S else POWER_W if t < TRACE_S else 0.0


def wait_for(what: str, predicate: Callable[[], T | None], timeout: float = WAIT_S) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value is not None:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def served_energy(exp: ExporterProcess) -> tuple[float, float] | None:
    """The GPU energy counter and the served snapshot's age, from one scrape of the exporter."""
    samples = parse(exp.metrics())
    energy = select(samples, "footprint_gpu_energy_joules_total")
    age = select(samples, "footprint_snapshot_age_seconds")
    if not energy:
        return None
    return next(iter(energy.values())), next(iter(age.values()))


def samples(prom: RunningServer, selector: str) -> list[tuple[float, float]]:
    """Every stored (timestamp, value) of one series, stale markers left out, oldest first."""
    (series,) = prom.query(f"{selector}[10m]")
    return [(float(t), float(v)) for t, v in series["values"]]


def instant(prom: RunningServer, promql: str, at: float) -> float:
    result = prom.get("/api/v1/query", query=promql, time=f"{at:.3f}")["result"]
    assert len(result) == 1, (promql, result)
    return float(result[0]["value"][1])


def window(start: float, end: float) -> str:
    """A range exactly from one stored sample to another: nothing is extrapolated at either end."""
    return f"[{round((end - start) * 1000)}ms]"


def prometheus_saw(prom: RunningServer, value: float) -> Callable[[], bool | None]:
    def check() -> bool | None:
        try:
            result = prom.query("footprint_gpu_energy_joules_total")
        except requests.RequestException:
            return None
        return True if result and float(result[0]["value"][1]) >= value - 1e-6 else None

    return check


def test_increase_over_a_crash_and_a_clean_restart_counts_what_was_measured(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    write_trace(trace)
    state = tmp_path / "state.json"
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: {SCRAPE_S:g}s\n  evaluation_interval: {SCRAPE_S:g}s\n"
        f"scrape_configs:\n  - job_name: footprint\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{port}']\n"
    )
    args = [
        "--source.gpu=replay",
        f"--source.gpu.replay.file={trace}",
        "--source.cpu=none",
        f"--sample.interval={SAMPLE_S * 1000:g}ms",
        f"--state.file={state}",
        f"--state.interval={CHECKPOINT_S}s",
        "--attribution.policy=idle-baseline",
        f"--attribution.idle-watts={IDLE_W:g}",
        f"--attribution.retention={RETENTION_S:g}s",
    ]
    with prometheus(config, tmp_path / "prom") as prom:
        # Prometheus picks up new targets a few seconds after start: wait until it scrapes (and fails
        # on) the empty port, so that it sees run A from its first seconds.
        wait_for("Prometheus to scrape the target", lambda: prom.query('up{job="footprint"}') or None)
        # Run A: killed while energy flows, between two checkpoints, after Prometheus scraped more
        # than the checkpoint holds: the state file then holds less than was served, the situation in
        # which continuing from it would make Prometheus count the checkpoint twice.
        first = start_exporter(args, port=port)

        def checkpoint_j() -> tuple[float, float] | None:
            try:
                saved = json.loads(state.read_text())
            except (OSError, ValueError):
                return None
            return saved["saved_at"], saved["totals"]["gpus"].get("GPU-restart", {}).get("energy_j", 0.0)

        def poll_kill_point() -> tuple[float, float, float, float, float] | None:
            saved = checkpoint_j()
            if saved is None or saved[1] < IDLE_START_W * IDLE_START_S + POWER_W:
                return None
            scraped = prom.query('footprint_gpu_energy_joules_total{uuid="GPU-restart"}')
            # Half a second of full power above the checkpoint: more than the idle start of the next run
            # adds before its first scrape, so continuing from the checkpoint would show as a reset.
            if not scraped or float(scraped[0]["value"][1]) < saved[1] + POWER_W * SCRAPE_S / 2:
                return None
            asked = time.monotonic()
            got = served_energy(first)
            answered = time.monotonic()
            if got is None or checkpoint_j() != saved:
                return None  # a new checkpoint came meanwhile: wait for the next chance
            return got[0], got[1], asked, answered, saved[1]

        energy_a, age_a, asked, answered, checkpoint_a = wait_for("a kill point", poll_kill_point)
        first.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        first.stop()
        # The exporter measured up to its last tick; the trace delivered POWER_W until the kill.
        # The snapshot was age_a old when served (between asking and the answer), so the energy
        # delivered while run A lived is between these two:
        truth_a_lo = energy_a + POWER_W * (age_a + killed - answered)
        truth_a_hi = energy_a + POWER_W * (age_a + killed - asked)
        left = json.loads(state.read_text())
        assert left["clean"] is False  # what a crash leaves: never continued from
        assert left["totals"]["gpus"]["GPU-restart"]["energy_j"] == checkpoint_a

        # Run B: starts from zero (Prometheus sees a reset), plays the whole trace, stops cleanly.
        second = start_exporter(args, port=port)
        wait_for("run B to finish the trace", lambda: (served_energy(second) or (0.0,))[0] >= TRACE_J or None)
        wait_for("Prometheus to scrape run B's final value", prometheus_saw(prom, TRACE_J))
        code, log_b = second.stop(signal.SIGTERM)
        assert code == 0
        assert "did not shut down cleanly" in log_b and "start from zero" in log_b
        assert json.loads(state.read_text())["clean"] is True

        # Run C: continues from the clean shutdown's totals; plays the trace once more.
        third = start_exporter(args, port=port)
        try:
            assert served_energy(third) is None or served_energy(third)[0] >= TRACE_J  # type: ignore[index]
            restore = select(parse(third.metrics()), "footprint_state_restore_info")
            assert list(restore) == [frozenset({("result", "continued")})]
            assert json.loads(state.read_text())["clean"] is False  # marked in use at start
            wait_for(
                "run C to finish the trace",
                lambda: (served_energy(third) or (0.0,))[0] >= 2 * TRACE_J or None,
            )
            wait_for("Prometheus to scrape run C's final value", prometheus_saw(prom, 2 * TRACE_J))
            time.sleep(2 * SCRAPE_S)
        finally:
            third.stop()

        gpu = 'footprint_gpu_energy_joules_total{uuid="GPU-restart"}'
        stored = samples(prom, gpu)
        first_t, last_t = stored[0][0], stored[-1][0]
        a_first = stored[0][1]
        # B's first samples are below A's last (the reset after the crash); C's continue from B's last.
        resets_at = [k for k in range(1, len(stored)) if stored[k][1] < stored[k - 1][1]]
        assert len(resets_at) == 1
        a_last = stored[resets_at[0] - 1][1]
        assert checkpoint_a < a_last  # the dangerous situation did arise
        b_start = stored[resets_at[0]][0]
        whole = window(first_t, last_t)
        measured = instant(prom, f"increase({gpu}{whole})", last_t)
        assert instant(prom, f"resets({gpu}{whole})", last_t) == 1.0

        # Over the whole run, from the first scrape to the last: what the trace delivered while the
        # exporter ran (minus the part before the first scrape). Never more than that; less by at most
        # what the crash took between the last scrape of run A and the kill.
        truth_lo = truth_a_lo - a_first + 2 * TRACE_J
        truth_hi = truth_a_hi - a_first + 2 * TRACE_J
        assert measured <= truth_hi + 1e-6
        assert measured >= truth_lo - POWER_W * (SCRAPE_S + SAMPLE_S)
        crash_error_j = measured - (truth_lo + truth_hi) / 2

        # Across the clean restart (from B's first scrape to the end): exact, and no reset at all, for
        # the GPU, its unattributed energy and the process that was running when B stopped.
        b_first = next(v for t, v in stored if t == b_start)
        clean = window(b_start, last_t)
        assert instant(prom, f"increase({gpu}{clean})", last_t) == pytest.approx(
            2 * TRACE_J - b_first, abs=1e-6
        )
        for selector in (
            gpu,
            'footprint_gpu_unattributed_energy_joules_total{uuid="GPU-restart"}',
            'footprint_process_gpu_energy_joules_total{pid="101"}',
        ):
            assert instant(prom, f"resets({selector}{clean})", last_t) == 0.0, selector

        # Conservation in PromQL, over the whole run and over the clean restart: process 202 ended at
        # 4 s and its series expired in every run, run A crashed and run C continued.
        parts = (
            "sum(increase(footprint_process_gpu_energy_joules_total{{uuid='GPU-restart'}}{w}))"
            " + sum(increase(footprint_gpu_unattributed_energy_joules_total{{uuid='GPU-restart'}}{w}))"
        )
        expired = samples(prom, 'footprint_process_gpu_energy_joules_total{pid="202"}')
        assert expired[-1][0] < last_t - RETENTION_S  # it did expire before the end of the window
        errors = {}
        for name, w, start in (("whole", whole, first_t), ("clean", clean, b_start)):
            total = instant(prom, f"increase({gpu}{w})", last_t)
            split = instant(prom, parts.format(w=w), last_t)
            errors[name] = split - total
            # Within scrape alignment: the expired series is extrapolated by half a scrape interval
            # at its end, so allow one scrape interval's energy.
            assert abs(split - total) <= POWER_W * SCRAPE_S, (name, split, total)
            assert start < last_t
        print(
            f"\nincrease over crash+clean restart: {measured:.1f} J, truth {truth_lo:.1f}-{truth_hi:.1f} J "
            f"(error {crash_error_j:+.1f} J); clean restart exact; conservation "
            f"{errors['whole']:+.2f} J whole, {errors['clean']:+.2f} J clean"
        )
