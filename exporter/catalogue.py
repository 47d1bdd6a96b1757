"""The metric catalogue: every metric the exporter serves, read by the collectors, the README and tests."""

from __future__ import annotations

from dataclasses import dataclass

GPU = ("gpu", "uuid")
WORKLOAD = ("pid", "comm", "user", "container_id", "pod", "namespace", "slurm_job_id")
PROCESS_GPU = GPU + WORKLOAD


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str  # full name; counters include the ``_total`` suffix
    type: str  # "gauge", "counter" or "info" (a gauge whose value is always 1)
    labels: tuple[str, ...]
    help: str
    area: str  # README section: gpu, process, cpu, node, carbon, self

    @property
    def family(self) -> str:
        """Name without ``_total``: what prometheus_client's CounterMetricFamily is given."""
        return self.name[: -len("_total")] if self.type == "counter" else self.name


_SPECS = [
    # GPU
    MetricSpec(
        "footprint_gpu_info",
        "info",
        (*GPU, "name", "driver_version", "pci_bus_id"),
        "Static facts of a GPU; always 1.",
        "gpu",
    ),
    MetricSpec(
        "footprint_gpu_up",
        "gauge",
        GPU,
        "1 if the GPU answered its last read, 0 if it is lost or failing.",
        "gpu",
    ),
    MetricSpec("footprint_gpu_power_watts", "gauge", GPU, "Latest board power draw in watts.", "gpu"),
    MetricSpec(
        "footprint_gpu_energy_joules_total",
        "counter",
        GPU,
        "GPU energy in joules since the exporter started (continued from the state file only after a "
        "clean shutdown); from the hardware energy counter where the GPU has one, else integrated "
        "power. Absent for a GPU that gives neither.",
        "gpu",
    ),
    MetricSpec(
        "footprint_gpu_utilization_ratio", "gauge", GPU, "Fraction of time the SMs were busy (0-1).", "gpu"
    ),
    MetricSpec("footprint_gpu_memory_used_bytes", "gauge", GPU, "GPU memory in use, bytes.", "gpu"),
    MetricSpec("footprint_gpu_memory_total_bytes", "gauge", GPU, "GPU memory installed, bytes.", "gpu"),
    MetricSpec(
        "footprint_gpu_temperature_celsius", "gauge", GPU, "GPU core temperature, degrees Celsius.", "gpu"
    ),
    MetricSpec(
        "footprint_gpu_power_limit_watts", "gauge", GPU, "Enforced board power limit in watts.", "gpu"
    ),
    MetricSpec(
        "footprint_gpu_unattributed_energy_joules_total",
        "counter",
        GPU,
        "GPU energy in joules charged to no process (the GPU was idle or held by nothing).",
        "gpu",
    ),
    # Processes
    MetricSpec(
        "footprint_process_gpu_energy_joules_total",
        "counter",
        PROCESS_GPU,
        "GPU energy in joules attributed to a process (or group, see --attribution.group-by).",
        "process",
    ),
    MetricSpec(
        "footprint_process_gpu_power_watts",
        "gauge",
        PROCESS_GPU,
        "GPU power in watts attributed to a process over the last sample interval.",
        "process",
    ),
    MetricSpec(
        "footprint_process_cpu_energy_joules_total",
        "counter",
        WORKLOAD,
        "CPU package energy in joules attributed to a process by its CPU time.",
        "process",
    ),
    MetricSpec(
        "footprint_process_cpu_power_watts",
        "gauge",
        WORKLOAD,
        "CPU power in watts attributed to a process over the last sample interval.",
        "process",
    ),
    MetricSpec(
        "footprint_process_gpu_emissions_grams_total",
        "counter",
        PROCESS_GPU,
        "Operational CO2e in grams (average signal, PUE included) attributed to a process's GPU use.",
        "process",
    ),
    MetricSpec(
        "footprint_process_gpu_marginal_emissions_grams_total",
        "counter",
        PROCESS_GPU,
        "Marginal-signal CO2e in grams attributed to a process's GPU use (only with a marginal provider).",
        "process",
    ),
    MetricSpec(
        "footprint_process_gpu_market_emissions_grams_total",
        "counter",
        PROCESS_GPU,
        "Market-based Scope 2 CO2e in grams (carbon.market: instruments, supplier factor, residual mix; PUE "
        "included) attributed to a process's GPU use (only with carbon.market).",
        "process",
    ),
    MetricSpec(
        "footprint_process_gpu_embodied_emissions_grams_total",
        "counter",
        PROCESS_GPU,
        "Embodied (manufacturing) CO2e in grams of the GPU, shared out by the attribution shares.",
        "process",
    ),
    MetricSpec(
        "footprint_process_cpu_emissions_grams_total",
        "counter",
        WORKLOAD,
        "Operational CO2e in grams attributed to a process's CPU use.",
        "process",
    ),
    MetricSpec(
        "footprint_process_cpu_market_emissions_grams_total",
        "counter",
        WORKLOAD,
        "Market-based Scope 2 CO2e in grams attributed to a process's CPU use (only with carbon.market).",
        "process",
    ),
    MetricSpec(
        "footprint_process_node_unmetered_energy_joules_total",
        "counter",
        WORKLOAD,
        "The process's share of the unmetered node energy in joules, by its share of the GPU + CPU energy "
        "of each node interval (only with --attribution.node-unmetered=spread and a node source).",
        "process",
    ),
    MetricSpec(
        "footprint_process_node_unmetered_emissions_grams_total",
        "counter",
        WORKLOAD,
        "Operational CO2e in grams (average signal, PUE included) of the process's share of the unmetered "
        "node energy (only with --attribution.node-unmetered=spread).",
        "process",
    ),
    MetricSpec(
        "footprint_process_node_unmetered_market_emissions_grams_total",
        "counter",
        WORKLOAD,
        "Market-based Scope 2 CO2e in grams of the process's share of the unmetered node energy (only with "
        "--attribution.node-unmetered=spread and carbon.market).",
        "process",
    ),
    MetricSpec(
        "footprint_cpu_unattributed_energy_joules_total",
        "counter",
        ("package",),
        "CPU package energy in joules charged to no process.",
        "process",
    ),
    # CPU
    MetricSpec(
        "footprint_cpu_power_watts",
        "gauge",
        ("package", "method"),
        "CPU package (or DRAM) power in watts; method is rapl (measured) or estimated.",
        "cpu",
    ),
    MetricSpec(
        "footprint_cpu_energy_joules_total",
        "counter",
        ("package", "method"),
        "CPU package (or DRAM) energy in joules since the exporter started.",
        "cpu",
    ),
    # Node (BMC)
    MetricSpec(
        "footprint_node_power_watts",
        "gauge",
        ("method",),
        "Whole-node input power in watts from the BMC; method is redfish or ipmi (DCMI, the BMC's own "
        "rolling average).",
        "node",
    ),
    MetricSpec(
        "footprint_node_energy_joules_total",
        "counter",
        ("method",),
        "Whole-node input energy in joules from the BMC: its energy counter where it has one, else "
        "integrated power.",
        "node",
    ),
    MetricSpec(
        "footprint_node_unmetered_energy_joules_total",
        "counter",
        (),
        "Node energy in joules not covered by the GPU, CPU and DRAM readings of the same time (fans, NICs, "
        "storage, power supply losses); node level (with --attribution.node-unmetered=spread also shared "
        "out in footprint_process_node_unmetered_energy_joules_total).",
        "node",
    ),
    MetricSpec(
        "footprint_node_unmetered_unattributed_energy_joules_total",
        "counter",
        (),
        "The part of the unmetered node energy in joules charged to no process (only with "
        "--attribution.node-unmetered=spread): processes' shares + this = unmetered.",
        "node",
    ),
    MetricSpec(
        "footprint_node_emissions_grams_total",
        "counter",
        ("method",),
        "Operational CO2e in grams of the whole node's energy from the BMC (average signal, PUE included).",
        "node",
    ),
    MetricSpec(
        "footprint_node_unmetered_emissions_grams_total",
        "counter",
        (),
        "Operational CO2e in grams of the unmetered node energy (average signal, PUE included); GPU + CPU + "
        "unmetered emissions are the node's.",
        "node",
    ),
    MetricSpec(
        "footprint_node_market_emissions_grams_total",
        "counter",
        ("method",),
        "Market-based Scope 2 CO2e in grams of the whole node's energy from the BMC (carbon.market: "
        "instruments, supplier factor, residual mix; PUE included; only with carbon.market).",
        "node",
    ),
    MetricSpec(
        "footprint_node_unmetered_market_emissions_grams_total",
        "counter",
        (),
        "Market-based Scope 2 CO2e in grams of the unmetered node energy (only with carbon.market); GPU + "
        "CPU + unmetered market-based emissions are the node's.",
        "node",
    ),
    MetricSpec(
        "footprint_node_energy_basis_info",
        "info",
        ("basis", "method"),
        "What node-level energy, emissions, water and budgets rest on now: basis is node (the BMC's "
        "reading, with the unmetered part) or components (GPU + CPU + DRAM only).",
        "node",
    ),
    MetricSpec(
        "footprint_node_reading_info",
        "info",
        ("method", "part"),
        "Where the BMC's node figures are read, one series per part, e.g. part=\"System.Embedded.1:power:"
        'Power/PowerControl".',
        "node",
    ),
    MetricSpec(
        "footprint_node_data_quality_errors_total",
        "counter",
        ("kind",),
        "Node intervals that could not be trusted: below_components (the BMC's node energy was below GPU + "
        "CPU + DRAM over the same time) or not_compared (no reading or no component figures across it).",
        "self",
    ),
    # Carbon
    MetricSpec(
        "footprint_grid_carbon_intensity_grams_per_kwh",
        "gauge",
        ("zone", "provider", "signal", "basis"),
        "Grid carbon intensity in use now, grams CO2e per kWh; signal is average or marginal, basis the "
        "emission-factor basis (lifecycle or direct) of the whole chain.",
        "carbon",
    ),
    MetricSpec(
        "footprint_carbon_intensity_age_seconds",
        "gauge",
        ("zone", "provider"),
        "Age in seconds of the carbon intensity in use, from the data's own time (for data without a "
        "time, from the last refresh that confirmed it; 0 for a static figure).",
        "carbon",
    ),
    MetricSpec(
        "footprint_carbon_intensity_timestamp_seconds",
        "gauge",
        ("zone", "provider", "signal"),
        "The data's own time of the intensity in use (start of the period it describes; the embedded "
        "table's: the end of its year), seconds since the epoch; absent when the data has no time.",
        "carbon",
    ),
    MetricSpec(
        "footprint_carbon_intensity_estimated",
        "gauge",
        ("zone", "provider", "signal"),
        "1 if the intensity in use is an estimate or forecast, 0 if measured; absent when the provider "
        "does not say.",
        "carbon",
    ),
    MetricSpec(
        "footprint_carbon_intensity_info",
        "info",
        ("zone", "provider", "signal", "basis", "source", "year", "via"),
        "Where the intensity in use comes from: data source, the year it describes, and via=central when "
        "relayed by a central exporter (provider then names the central instance's provider).",
        "carbon",
    ),
    MetricSpec(
        "footprint_carbon_provider_up",
        "gauge",
        ("provider",),
        "1 if the provider's last refresh worked.",
        "carbon",
    ),
    MetricSpec(
        "footprint_carbon_provider_errors_total",
        "counter",
        ("provider", "kind"),
        "Failed provider refreshes and refused values by kind (timeout, connection, http_4xx, http_429, "
        "http_5xx, malformed, auth, implausible, basis).",
        "carbon",
    ),
    MetricSpec(
        "footprint_carbon_forecast_min_grams_per_kwh",
        "gauge",
        ("zone", "provider", "signal"),
        "Lowest forecast intensity over the next 24 h, grams CO2e per kWh.",
        "carbon",
    ),
    MetricSpec(
        "footprint_carbon_forecast_min_timestamp_seconds",
        "gauge",
        ("zone", "provider", "signal"),
        "When the lowest forecast intensity of the next 24 h begins, seconds since the epoch.",
        "carbon",
    ),
    MetricSpec(
        "footprint_pue_ratio", "gauge", (), "Power usage effectiveness applied to every emission.", "carbon"
    ),
    MetricSpec(
        "footprint_emission_factor",
        "gauge",
        ("kind", "name", "unit", "basis", "source", "year"),
        "A fixed factor the figures use (PUE, WUE, embedded grid fallback, market instruments, supplier "
        "and residual factors, embodied figures), with its source and the year it describes.",
        "carbon",
    ),
    MetricSpec(
        "footprint_gpu_emissions_grams_total",
        "counter",
        GPU,
        "Operational CO2e in grams of the GPU (average signal, PUE included).",
        "carbon",
    ),
    MetricSpec(
        "footprint_gpu_marginal_emissions_grams_total",
        "counter",
        GPU,
        "Operational CO2e in grams of the GPU using the marginal signal (only with a marginal provider).",
        "carbon",
    ),
    MetricSpec(
        "footprint_gpu_market_emissions_grams_total",
        "counter",
        GPU,
        "Market-based Scope 2 CO2e in grams of the GPU: contractual instruments, then the supplier factor "
        "or residual mix, PUE included (only with carbon.market).",
        "carbon",
    ),
    MetricSpec(
        "footprint_cpu_emissions_grams_total",
        "counter",
        ("package",),
        "Operational CO2e in grams of the CPU package (average signal, PUE included).",
        "carbon",
    ),
    MetricSpec(
        "footprint_cpu_marginal_emissions_grams_total",
        "counter",
        ("package",),
        "Operational CO2e in grams of the CPU package, marginal signal.",
        "carbon",
    ),
    MetricSpec(
        "footprint_cpu_market_emissions_grams_total",
        "counter",
        ("package",),
        "Market-based Scope 2 CO2e in grams of the CPU package (only with carbon.market).",
        "carbon",
    ),
    MetricSpec(
        "footprint_gpu_embodied_emissions_grams_total",
        "counter",
        GPU,
        "Manufacturing CO2e in grams of the GPU, amortised per second over its service life.",
        "carbon",
    ),
    MetricSpec(
        "footprint_node_embodied_emissions_grams_total",
        "counter",
        (),
        "Manufacturing CO2e in grams of the node without its GPUs, amortised over its service life.",
        "carbon",
    ),
    MetricSpec(
        "footprint_water_litres_total",
        "counter",
        (),
        "Site water use in litres for the node's energy (energy x WUE; only with carbon.wue set).",
        "carbon",
    ),
    # Self
    MetricSpec("footprint_source_up", "gauge", ("source",), "1 if the source's last read worked.", "self"),
    MetricSpec(
        "footprint_source_errors_total", "counter", ("source", "kind"), "Failed source reads by kind.", "self"
    ),
    MetricSpec(
        "footprint_source_read_duration_seconds",
        "gauge",
        ("source",),
        "Time the source's last read took.",
        "self",
    ),
    MetricSpec(
        "footprint_sample_duration_seconds",
        "gauge",
        (),
        "Time the last sampler tick took, reads included.",
        "self",
    ),
    MetricSpec("footprint_samples_total", "counter", (), "Sampler ticks since start.", "self"),
    MetricSpec(
        "footprint_snapshot_age_seconds",
        "gauge",
        (),
        "Seconds since the snapshot being served was published.",
        "self",
    ),
    MetricSpec(
        "footprint_attribution_series_folded_total",
        "counter",
        (),
        'Process series folded into comm="other" by --attribution.max-series.',
        "self",
    ),
    MetricSpec(
        "footprint_workload_lookup_up",
        "gauge",
        ("lookup",),
        "1 if the pod lookup's last attempt worked (lookup: apiserver, kubelet or pod-resources).",
        "self",
    ),
    MetricSpec(
        "footprint_workload_lookup_errors_total",
        "counter",
        ("lookup", "kind"),
        "Failed pod lookups by kind (unauthorized, token, forbidden, tls, timeout, connection, http_5xx, "
        "malformed, unavailable, ...); kind expired counts watches listed again after 410 Gone.",
        "self",
    ),
    MetricSpec(
        "footprint_workload_lookup_pods",
        "gauge",
        ("lookup",),
        "Pods the lookup knows on this node (pod-resources: pods holding devices).",
        "self",
    ),
    MetricSpec(
        "footprint_workload_pod_unresolved_total",
        "counter",
        (),
        "Process lookups whose pod UID no pod lookup could name; their pod label carries the UID.",
        "self",
    ),
    MetricSpec(
        "footprint_device_energy_method_info",
        "info",
        ("kind", "device", "method", "reason"),
        "How a device's energy is obtained now: kind gpu, cpu or dram; device the GPU UUID or CPU "
        "domain; method counter (hardware energy counter), power (integrated power readings), estimate "
        "(a model) or none (unmeasured: no energy or emissions accrue); reason why none "
        "(no_power_or_energy, rejected, read_failed).",
        "self",
    ),
    MetricSpec(
        "footprint_device_readings_rejected_total",
        "counter",
        ("kind", "device", "reason"),
        "Device readings dropped as impossible (non_finite, negative, above_limit: over twice the power "
        "limit or 5 kW, energy_jump: a counter step no plausible power delivers) or whose accounting "
        "failed (error).",
        "self",
    ),
    MetricSpec(
        "footprint_gpu_pci_devices",
        "gauge",
        ("driver",),
        "NVIDIA GPUs on the PCI bus (sysfs, --path.sysfs) by bound driver (nvidia, vfio-pci, ...), "
        "whether or not the exporter can read them: more here than GPUs served means missed GPUs.",
        "self",
    ),
    MetricSpec(
        "footprint_http_connections_rejected_total",
        "counter",
        ("reason",),
        "HTTP connections the exporter closed or refused because of its connection bounds: evicted (closed "
        "to make room while still waiting for its request headers, all 64 slots taken), refused (all slots "
        "busy answering requests), timeout (request headers not in within 10 s, or the whole request "
        "not done within 60 s).",
        "self",
    ),
    MetricSpec(
        "footprint_state_restore_info",
        "info",
        ("result",),
        "How this run's totals began: continued (from a clean shutdown's state file), or from zero "
        "because of no_file, unclean (the last run crashed), set_aside, unreadable or not_marked.",
        "self",
    ),
    MetricSpec("footprint_state_saves_total", "counter", (), "Successful state file saves.", "self"),
    MetricSpec("footprint_state_save_errors_total", "counter", (), "Failed state file saves.", "self"),
    MetricSpec(
        "footprint_state_last_save_timestamp_seconds",
        "gauge",
        (),
        "When the state file was last saved, seconds since the epoch.",
        "self",
    ),
    MetricSpec(
        "footprint_build_info", "info", ("version", "python_version"), "Build facts; always 1.", "self"
    ),
]

CATALOGUE: dict[str, MetricSpec] = {s.name: s for s in _SPECS}


def spec(name: str) -> MetricSpec:
    return CATALOGUE[name]


def markdown_table() -> str:
    """The README's metrics table, generated so that it cannot drift from the code."""
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for s in _SPECS:
        kind = "gauge (=1)" if s.type == "info" else s.type
        labels = ", ".join(s.labels) if s.labels else "-"
        lines.append(f"| `{s.name}` | {kind} | {labels} | {s.help} |")
    return "\n".join(lines) + "\n"
