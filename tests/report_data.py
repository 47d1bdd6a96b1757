"""Two days of two nodes' footprint series with a known truth, written as OpenMetrics for promtool's backfill.

What the exporters would have served, scraped every 60 s, from 2025-02-28T22:00Z to 2025-03-03T02:00Z; the
report period is 2025-03-01T00:00Z to 2025-03-03T00:00Z. Power is constant within each minute between
scrapes (it changes on the hour), so the truth is an exact sum.

node-a (cluster train, zone DE from electricitymaps, PUE 1.2, WUE 1.8 L/kWh, no market, no BMC):
  GPU 0: pod team-a/train-1 (user alice) at 300/350/400 W by hour, 60 W unattributed; CPU package 100 W, of
  which 30 W charged to train-1. Its exporter is killed at 20:00 on the first day and starts again two
  minutes later from zero (a counter reset mid-period); Prometheus misses its scrapes for an hour from
  20:00 on the second day (a scrape gap; the counters ran on); its intensity is 4 h old from 06:00 to 10:00
  on the second day (a stale intensity).
node-b (cluster infer, no zone: the embedded WORLD average 480 g/kWh, PUE 1.5, market 100 g/kWh, a BMC
  with 120 W unmetered, no WUE):
  GPU 0: pod team-b/infer-1 (user bob) 200 W generating 500 tokens/s, 40 W unattributed; GPU 1: pod
  team-b/batch-2 (user carol, an SGLang server making 100 tokens/s) 250 W from 09:59:30 to 05:59:30 the
  next day, 50 W idle otherwise, and down
  (no energy) for 5 minutes at 16:00 on the second day; CPU 80 W, of which 20 W is Slurm job 77 (user
  dave, no namespace).

The truth is what the exporters measured inside the period, per (instance, workload labels, part).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

T0 = 1740787200.0  # 2025-03-01T00:00:00Z: the report's start
T1 = T0 + 2 * 86400  # the report's end
DATA_START = T0 - 2 * 3600
DATA_END = T1 + 2 * 3600
STEP = 60
HOUR = 3600.0
JOULES_PER_KWH = 3.6e6

A, B = "node-a:9877", "node-b:9877"
CLUSTER = {A: "train", B: "infer"}
CRASH = T0 + 20 * HOUR  # node-a's exporter is killed right after this scrape...
RESTART = CRASH + 120  # ...and starts again from zero here
SCRAPE_GAP = (T0 + 44 * HOUR, T0 + 45 * HOUR)  # node-a: no scrape stored strictly inside
STALE = (T0 + 30 * HOUR, T0 + 34 * HOUR)  # node-a: intensity age 4 h
BATCH = (T0 + 10 * HOUR - 30, T0 + 30 * HOUR - 30)
GPU1_DOWN = (T0 + 40 * HOUR, T0 + 40 * HOUR + 300)
RETENTION = 600.0  # a finished process's series stays this long with its last value
PUE = {A: 1.2, B: 1.5}
WUE_A = 1.8
MARKET_B = 100.0
TOKENS_PER_S = 500.0
BATCH_TOKENS_PER_S = 100.0
GPU_EMBODIED_G_PER_S = {A: 0.012, B: 0.01}
NODE_EMBODIED_A = 0.02


def intensity(instance: str, t: float) -> float:
    if instance == B:
        return 480.0
    return 300.0 + 10.0 * (int((t - DATA_START) // HOUR) % 24)


@dataclass(frozen=True)
class Workload:
    namespace: str = ""
    pod: str = ""
    user: str = ""
    slurm_job_id: str = ""
    pid: str = ""
    comm: str = "python"


TRAIN = Workload("team-a", "train-1", "alice", "", "4242")
INFER = Workload("team-b", "infer-1", "bob", "", "5151")
BATCH2 = Workload("team-b", "batch-2", "carol", "", "6161")
SLURM = Workload("", "", "dave", "77", "7171", "srun")


def _draws(instance: str, t: float) -> tuple[dict[tuple[str, Workload | None], float], float]:
    """Power in the minute after scrape t: {(device, workload, None: unattributed): W}, and unmetered W."""
    hour = int((t - DATA_START) // HOUR)
    if instance == A:
        return {
            ("gpu0", TRAIN): 300.0 + 50.0 * (hour % 3),
            ("gpu0", None): 60.0,
            ("cpu0", TRAIN): 30.0,
            ("cpu0", None): 70.0,
        }, 0.0
    draws: dict[tuple[str, Workload | None], float] = {
        ("gpu0", INFER): 200.0,
        ("gpu0", None): 40.0,
        ("cpu0", SLURM): 20.0,
        ("cpu0", None): 60.0,
    }
    if GPU1_DOWN[0] <= t < GPU1_DOWN[1]:
        return draws, 120.0  # GPU 1 gives no reading: nothing accrues for it
    # The batch process runs over [BATCH[0], BATCH[1]); a minute holding its start or end is split.
    running = max(0.0, min(t + STEP, BATCH[1]) - max(t, BATCH[0]))
    if running > 0:
        draws[("gpu1", BATCH2)] = 250.0 * running / STEP
    draws[("gpu1", None)] = 50.0 * (STEP - running) / STEP
    return draws, 120.0


@dataclass
class Truth:
    """Measured in [T0, T1]: part (energy_j, location_g, ...) -> (instance, workload or None) -> value."""

    values: dict[str, dict[tuple[str, Workload | None], float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    tokens: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # pod -> generated tokens

    def add(self, part: str, instance: str, workload: Workload | None, value: float) -> None:
        self.values[part][(instance, workload)] += value

    def total(self, part: str, instance: str | None = None, **labels: str) -> float:
        """Sum of a part over workloads whose labels match (``namespace="team-a"``), or all with no labels."""
        out = 0.0
        for (inst, w), v in self.values[part].items():
            if instance is not None and inst != instance:
                continue
            if labels and (w is None or any(getattr(w, k) != x for k, x in labels.items())):
                continue
            out += v
        return out


class _Series:
    def __init__(self, family: str, kind: str, labels: dict[str, str]) -> None:
        self.family, self.kind, self.labels = family, kind, labels
        self.points: list[tuple[float, float]] = []
        self.value = 0.0

    def line(self, t: float, value: float) -> str:
        # Empty labels are absent labels to Prometheus, as when the exporter serves container_id="".
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()) if v)
        name = self.family + ("_total" if self.kind == "counter" else "")
        return f"{name}{{{inner}}} {value!r} {t:.0f}"


class _Node:
    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.series: dict[tuple[str, tuple[tuple[str, str], ...]], _Series] = {}

    def get(self, family: str, metric_type: str, /, **labels: str) -> _Series:
        full = {"instance": self.instance, "job": "footprint", "cluster": CLUSTER[self.instance], **labels}
        key = (family, tuple(sorted(full.items())))
        if key not in self.series:
            self.series[key] = _Series(family, metric_type, full)
        return self.series[key]

    def add(self, family: str, value: float, **labels: str) -> None:
        series = self.get(family, "counter", **labels)
        series.value += value

    def reset(self) -> None:
        for s in self.series.values():
            if s.kind == "counter":
                s.value = 0.0


def _process_labels(device: str, w: Workload) -> dict[str, str]:
    return {
        "gpu": device[3:] if device.startswith("gpu") else "",
        "uuid": f"GPU-{device}" if device.startswith("gpu") else "",
        "pid": w.pid,
        "comm": w.comm,
        "user": w.user,
        "container_id": "",
        "pod": w.pod,
        "namespace": w.namespace,
        "slurm_job_id": w.slurm_job_id,
    }


def _scraped(instance: str, t: float) -> bool:
    if instance == A and CRASH < t < RESTART + STEP:
        return False  # the exporter is down, then not yet scraped
    return not (instance == A and SCRAPE_GAP[0] < t < SCRAPE_GAP[1])


def _running(instance: str, t: float) -> bool:
    """Whether the exporter measures the minute after t."""
    return not (instance == A and CRASH <= t < RESTART)


def build(path: Path) -> Truth:
    """Write the OpenMetrics file and return the truth."""
    truth = Truth()
    nodes = {A: _Node(A), B: _Node(B)}
    tokens = _Series(
        "vllm:generation_tokens",
        "counter",
        {
            "namespace": "team-b",
            "pod": "infer-1",
            "instance": "10.0.0.5:8000",
            "job": "vllm",
            "model_name": "llama",
        },
    )
    # batch-2 is an SGLang server: its counter, as the rules in prometheus/rules/inference.rules.yml read it.
    batch_tokens = _Series(
        "sglang:generation_tokens",
        "counter",
        {
            "namespace": "team-b",
            "pod": "batch-2",
            "instance": "10.0.0.6:30000",
            "job": "sglang",
            "model_name": "qwen",
        },
    )
    budget = _Series("footprint:budget_usage:ratio", "gauge", {"budget": "team-b-monthly"})
    ticks = [DATA_START + i * STEP for i in range(int((DATA_END - DATA_START) // STEP) + 1)]
    for t in ticks:
        for instance, node in nodes.items():
            if instance == A and t == RESTART:
                node.reset()
            if _scraped(instance, t):
                _scrape(node, t)
            if not _running(instance, t) or t + STEP > DATA_END:
                continue
            _accrue(node, t, truth)
        if batch_tokens.value > 0:
            batch_tokens.points.append((t, batch_tokens.value))
        if t + STEP <= DATA_END:
            tokens.value += TOKENS_PER_S * STEP
            running = max(0.0, min(t + STEP, BATCH[1]) - max(t, BATCH[0]))
            batch_tokens.value += BATCH_TOKENS_PER_S * running
            if T0 <= t < T1:
                truth.tokens["infer-1"] += TOKENS_PER_S * STEP
                truth.tokens["batch-2"] += BATCH_TOKENS_PER_S * running
        tokens.points.append((t, tokens.value))
        budget.points.append((t, max(0.0, (t - T0) / (T1 - T0) * 0.8)))
    lines: list[str] = []
    families: dict[str, list[_Series]] = defaultdict(list)
    for node in nodes.values():
        for s in node.series.values():
            families[s.family].append(s)
    families["vllm:generation_tokens"].append(tokens)
    families["sglang:generation_tokens"].append(batch_tokens)
    families["footprint:budget_usage:ratio"].append(budget)
    for family, members in families.items():
        lines.append(f"# TYPE {family} {members[0].kind}")
        for s in members:
            lines.extend(s.line(t, v) for t, v in s.points)
    lines.append("# EOF")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return truth


def _accrue(node: _Node, t: float, truth: Truth) -> None:
    """Add the minute after t to the node's counters, and to the truth when it lies in the period."""
    instance = node.instance
    draws, unmetered_w = _draws(instance, t)
    inside = T0 <= t < T1
    grams_per_j = intensity(instance, t) * PUE[instance] / JOULES_PER_KWH
    per_device: dict[str, float] = defaultdict(float)
    for (device, w), watts in draws.items():
        joules = watts * STEP
        per_device[device] += joules
        if w is not None:
            labels = _process_labels(device, w)
            kind = "gpu" if device.startswith("gpu") else "cpu"
            node.add(f"footprint_process_{kind}_energy_joules", joules, **labels)
            node.add(f"footprint_process_{kind}_emissions_grams", joules * grams_per_j, **labels)
            if instance == B:
                node.add(
                    f"footprint_process_{kind}_market_emissions_grams",
                    joules * MARKET_B * PUE[B] / JOULES_PER_KWH,
                    **labels,
                )
        if inside:
            truth.add("energy_j", instance, w, joules)
            truth.add("location_g", instance, w, joules * grams_per_j)
            if instance == B:
                truth.add("market_g", instance, w, joules * MARKET_B * PUE[B] / JOULES_PER_KWH)
            truth.add("facility_j", instance, w, joules * PUE[instance])
    for device, joules in per_device.items():
        if device.startswith("gpu"):
            gl = {"gpu": device[3:], "uuid": f"GPU-{device}"}
            node.add("footprint_gpu_energy_joules", joules, **gl)
            node.add("footprint_gpu_unattributed_energy_joules", draws.get((device, None), 0.0) * STEP, **gl)
            node.add("footprint_gpu_emissions_grams", joules * grams_per_j, **gl)
            if instance == B:
                node.add(
                    "footprint_gpu_market_emissions_grams", joules * MARKET_B * PUE[B] / JOULES_PER_KWH, **gl
                )
            embodied = GPU_EMBODIED_G_PER_S[instance] * STEP
            node.add("footprint_gpu_embodied_emissions_grams", embodied, **gl)
            # The GPU's embodied share follows the attribution shares of its energy.
            for (d, w), watts in draws.items():
                if d == device and w is not None:
                    share = embodied * watts * STEP / joules
                    node.add("footprint_process_gpu_embodied_emissions_grams", share, **_process_labels(d, w))
                    if inside:
                        truth.add("embodied_g", instance, w, share)
            if inside:
                attributed = sum(
                    watts * STEP for (d, w), watts in draws.items() if d == device and w is not None
                )
                truth.add("embodied_g", instance, None, embodied * (joules - attributed) / joules)
        else:
            node.add("footprint_cpu_energy_joules", joules, package="package-0", method="rapl")
            node.add(
                "footprint_cpu_unattributed_energy_joules",
                draws.get((device, None), 0.0) * STEP,
                package="package-0",
            )
            node.add("footprint_cpu_emissions_grams", joules * grams_per_j, package="package-0")
            if instance == B:
                node.add(
                    "footprint_cpu_market_emissions_grams",
                    joules * MARKET_B * PUE[B] / JOULES_PER_KWH,
                    package="package-0",
                )
    it_joules = sum(per_device.values())
    if instance == A:
        node.add("footprint_node_embodied_emissions_grams", NODE_EMBODIED_A * STEP)
        node.add("footprint_water_litres", it_joules / JOULES_PER_KWH * WUE_A)
        if inside:
            truth.add("embodied_g", instance, None, NODE_EMBODIED_A * STEP)
            truth.add("water_l", instance, None, it_joules / JOULES_PER_KWH * WUE_A)
    if unmetered_w:
        joules = unmetered_w * STEP
        node.add("footprint_node_unmetered_energy_joules", joules)
        node.add("footprint_node_unmetered_emissions_grams", joules * grams_per_j)
        if inside:
            truth.add("energy_j", instance, None, joules)
            truth.add("unmetered_j", instance, None, joules)
            truth.add("location_g", instance, None, joules * grams_per_j)
            truth.add("facility_j", instance, None, joules * PUE[instance])
    node.add("footprint_samples", 1.0)


def _scrape(node: _Node, t: float) -> None:
    """Record every series' value at a scrape at time t, as the exporter would serve it then."""
    instance = node.instance
    for s in list(node.series.values()):
        if s.kind != "counter":
            continue
        if s.family.startswith("footprint_process_") and not _process_alive(node, s, t):
            continue
        s.points.append((t, s.value))
    gauges = {
        ("footprint_pue_ratio", ()): PUE[instance],
        ("footprint_source_up", (("source", "nvml"),)): 1.0,
        ("footprint_build_info", (("python_version", "3.11.2"), ("version", "0.1.0"))): 1.0,
    }
    zone, provider = ("DE", "electricitymaps") if instance == A else ("WORLD", "embedded")
    intensity_labels: tuple[tuple[str, str], ...] = (
        ("provider", provider),
        ("signal", "average"),
        ("zone", zone),
    )
    if instance == B:
        intensity_labels += (("basis", "lifecycle"),)
    gauges[("footprint_grid_carbon_intensity_grams_per_kwh", intensity_labels)] = intensity(instance, t)
    source = (("source", "" if instance == A else "Ember"), ("year", "" if instance == A else "2023"))
    gauges[("footprint_carbon_intensity_info", (*intensity_labels[:3], *source))] = 1.0
    age = 4 * HOUR if (instance == A and STALE[0] <= t < STALE[1]) else 300.0
    if instance == B:
        age = t - 1704067200.0  # the embedded table's year ended 2024-01-01
    gauges[("footprint_carbon_intensity_age_seconds", (("provider", provider), ("zone", zone)))] = age
    if instance == B:
        for gpu in ("0", "1"):
            up = 0.0 if gpu == "1" and GPU1_DOWN[0] < t <= GPU1_DOWN[1] else 1.0
            gauges[("footprint_gpu_up", (("gpu", gpu), ("uuid", f"GPU-gpu{gpu}")))] = up
    else:
        gauges[("footprint_gpu_up", (("gpu", "0"), ("uuid", "GPU-gpu0")))] = 1.0
    if instance == B:
        # GPU 1's failing reads, as the exporter states them: its source reports the failure, and the
        # device's energy method is "none" while nothing is measured.
        failing = GPU1_DOWN[0] < t <= GPU1_DOWN[1]
        gauges[("footprint_source_up", (("source", "nvml"),))] = 0.0 if failing else 1.0
        method = (("device", "GPU-gpu1"), ("kind", "gpu"), ("method", "none" if failing else "counter"))
        reason = (("reason", "read_failed" if failing else ""),)
        gauges[("footprint_device_energy_method_info", (*method, *reason))] = 1.0
    for (family, labels), value in gauges.items():
        node.get(family, "gauge", **dict(labels)).points.append((t, value))


def _process_alive(node: _Node, s: _Series, t: float) -> bool:
    """A process series is served from its first energy until RETENTION after its last."""
    if s.value == 0.0:
        return False
    if s.labels.get("pod") != "batch-2":
        return True
    return t <= BATCH[1] + RETENTION + STEP
