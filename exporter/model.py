"""Plain data passed between sources, the sampler and the collectors."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class GpuProcessSample:
    """A process holding a GPU, as a source saw it during one read.

    ``sm_util`` is the process' SM utilisation (0-1) to weigh it by in this interval (from NVML:
    see attribution.UtilisationWindow), or None when no process on the GPU has any (then
    attribution splits equally). ``cgroup`` is the process' cgroup path when the source knows it
    (replay traces carry it); live sources leave it None and the workload resolver reads /proc.
    """

    pid: int
    comm: str = ""
    user: str = ""
    sm_util: float | None = None
    used_memory_bytes: int | None = None
    cgroup: str | None = None
    # Process start time (seconds since the epoch, or any per-process constant): with pid, it keys a
    # process so that a reused PID is never charged for its predecessor's energy.
    start_time: float | None = None
    # MIG: the GPU instance the process runs in, and that instance's share of the board's SMs (0-1).
    gpu_instance_id: int | None = None
    mig_sm_share: float | None = None


@dataclass(frozen=True, slots=True)
class MigInstance:
    """One MIG device of a MIG-enabled GPU, as NVML lists it (docs/attribution.md, "MIG").

    ``uuid`` is what ``nvmlDeviceGetUUID`` answers on the MIG device's handle: ``MIG-<uuid>`` from
    driver R470 on, ``MIG-GPU-<gpu uuid>/<gi>/<ci>`` before; the NVIDIA device plugin hands the same
    string to the kubelet as the device id. ``sm_share`` is the instance's share of the SMs MIG hands
    out (0-1), None when unknown.
    """

    gpu_instance_id: int
    uuid: str
    sm_share: float | None = None


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One GPU read once. A field the device does not support is None, never a silent zero."""

    index: int
    uuid: str
    name: str = ""
    driver_version: str = ""
    pci_bus_id: str = ""
    up: bool = True
    error: str = ""
    power_w: float | None = None
    # Cumulative hardware energy counter in joules (NVML total energy, Volta and newer); None when
    # the GPU has none, and the sampler then integrates power.
    energy_j: float | None = None
    util: float | None = None
    mem_used_bytes: int | None = None
    mem_total_bytes: int | None = None
    temp_c: float | None = None
    power_limit_w: float | None = None
    # None: the source cannot list processes; (): it can, and none holds the GPU.
    processes: tuple[GpuProcessSample, ...] | None = None
    # MIG: the GPU's MIG devices, whether a process runs in them or not; None where the GPU has MIG
    # off or its layout is not known.
    mig_instances: tuple[MigInstance, ...] | None = None


@dataclass(frozen=True, slots=True)
class CpuReading:
    """One CPU energy domain (a package, or its DRAM) read once."""

    package: str  # label value, e.g. "package-0", "package-0-dram"
    method: str  # "rapl" or "estimated"
    energy_j: float | None = None  # cumulative, already unwrapped by the source
    power_w: float | None = None  # what the source measured or estimated right now


@dataclass(frozen=True, slots=True)
class SourceError:
    source: str
    kind: str  # short machine-readable reason: "lost", "permission", "not_supported", "io", ...
    message: str


@dataclass(frozen=True, slots=True)
class Workload:
    """Who a process belongs to. Empty strings mean "does not apply"."""

    comm: str = ""
    user: str = ""
    container_id: str = ""
    pod_uid: str = ""
    pod: str = ""
    namespace: str = ""
    slurm_job_id: str = ""


@dataclass(frozen=True, slots=True)
class GpuState:
    """A GPU as the latest snapshot shows it: last reading plus accumulated totals."""

    reading: GpuReading
    energy_j_total: float = 0.0
    unattributed_energy_j_total: float = 0.0
    emissions_g_total: float = 0.0
    marginal_emissions_g_total: float | None = None
    embodied_emissions_g_total: float = 0.0
    # Market-based Scope 2 (only with carbon.market configured).
    market_emissions_g_total: float | None = None
    # False while the GPU has never given power or energy: then it has no energy or emissions series.
    measured: bool = True
    # How the latest reading's energy was obtained: "counter", "power", "none" ("" while down).
    energy_method: str = ""
    # Why the latest reading measured nothing (energy_method "none"): "no_power_or_energy", "rejected".
    unmeasured_reason: str = ""


@dataclass(frozen=True, slots=True)
class ProcessState:
    """One attributed series (a process, or a group of them under --attribution.group-by)."""

    gpu_uuid: str  # "" for CPU series
    gpu_index: str  # label value of ``gpu``; "" for CPU series
    pid: str
    workload: Workload
    energy_j_total: float = 0.0
    power_w: float = 0.0
    emissions_g_total: float = 0.0
    marginal_emissions_g_total: float | None = None
    embodied_emissions_g_total: float = 0.0
    market_emissions_g_total: float | None = None


@dataclass(frozen=True, slots=True)
class CpuState:
    reading: CpuReading
    energy_j_total: float = 0.0
    unattributed_energy_j_total: float = 0.0
    emissions_g_total: float = 0.0
    marginal_emissions_g_total: float | None = None
    market_emissions_g_total: float | None = None
    # As for GpuState: never measured means no energy or emissions series; "counter", "estimate",
    # "power" or "none" for the latest read, and why "none".
    measured: bool = True
    energy_method: str = ""
    unmeasured_reason: str = ""


@dataclass(frozen=True, slots=True)
class RejectedReadings:
    """Readings of one device dropped as impossible (or that failed to account), by reason."""

    kind: str  # "gpu", "cpu" or "dram"
    device: str  # GPU UUID (index-N before it has one) or CPU domain label
    reason: str  # "non_finite", "negative", "above_limit", "energy_jump", "error"
    count: int


@dataclass(frozen=True, slots=True)
class SourceStatus:
    name: str
    up: bool
    errors_total: dict[str, int] = field(default_factory=dict)  # by kind
    read_duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class IntensityState:
    """The grid carbon intensity in use for one signal."""

    zone: str
    provider: str
    signal: str  # "average" or "marginal"
    grams_per_kwh: float
    age_s: float
    # Where the value comes from (the embedded table's row, or the API) and the year it describes.
    source: str = ""
    year: str = ""
    basis: str = "lifecycle"  # emission-factor basis: "lifecycle" or "direct"
    # The data's own time (the start of the period the value describes; for the embedded table the
    # end of its year); None when the data has none.
    observed_at: float | None = None
    # For data without a time: when a refresh last confirmed it (None with observed_at: timeless).
    confirmed_at: float | None = None
    estimated: bool | None = None  # True: estimate or forecast; False: measured; None: not said
    via: str = ""  # "central" when relayed by a central exporter; provider then names the origin


@dataclass(frozen=True, slots=True)
class ProviderState:
    provider: str  # the provider's type
    up: bool
    errors_total: dict[str, int] = field(default_factory=dict)  # by kind: timeout, http_429, ...
    last_success_timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class EmissionFactor:
    """A factor the figures are computed with, where it comes from and the year it describes."""

    kind: str  # pue, wue, grid_fallback, market_instrument, market_supplier, market_residual, embodied_*
    name: str
    value: float
    unit: str
    basis: str = ""
    source: str = ""
    year: str = ""


@dataclass(frozen=True, slots=True)
class ForecastState:
    zone: str
    provider: str
    signal: str
    min_grams_per_kwh: float
    min_timestamp_s: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a scrape serves. Built by the sampler, never mutated after publishing."""

    timestamp: float = 0.0  # wall clock, seconds since the epoch
    samples_total: int = 0
    sample_duration_s: float = 0.0
    gpu_source: str = "none"
    gpus: tuple[GpuState, ...] = ()
    gpu_processes: tuple[ProcessState, ...] = ()
    cpus: tuple[CpuState, ...] = ()
    cpu_processes: tuple[ProcessState, ...] = ()
    # Each process's share of the unmetered node energy (--attribution.node-unmetered=spread).
    node_processes: tuple[ProcessState, ...] = ()
    sources: tuple[SourceStatus, ...] = ()
    intensities: tuple[IntensityState, ...] = ()
    providers: tuple[ProviderState, ...] = ()
    forecasts: tuple[ForecastState, ...] = ()
    emission_factors: tuple[EmissionFactor, ...] = ()
    pue: float = 1.0
    water_litres_total: float | None = None
    node_embodied_emissions_g_total: float | None = None
    attributed_series_dropped_total: int = 0
    state_saves_total: int = 0
    state_save_errors_total: int = 0
    last_state_save_timestamp: float | None = None
    # How this run's totals began (see exporter.state): "continued", "no_file", "unclean", ...; "" when
    # no state file is configured.
    state_restore_result: str = ""
    rejected_readings: tuple[RejectedReadings, ...] = ()
    # NVIDIA GPUs present on the PCI bus by bound driver ("nvidia", "vfio-pci", "" for none); None when
    # sysfs could not be read.
    gpu_pci_devices: tuple[tuple[str, int], ...] | None = None
    node: NodeState | None = None  # whole-node figures, when a node source is configured


@dataclass(frozen=True, slots=True)
class NodeReading:
    """Whole-node input power (and, where the BMC keeps one, its energy counter) read once from the BMC.

    ``energy_j`` is a cumulative counter in joules as the BMC reports it (it may be coarse, may restart
    when the BMC resets); None when the BMC has no energy counter. ``parts`` says which resources the
    figures came from, e.g. ``("System.Embedded.1:Power/PowerControl",)``, for the info metric and logs.
    """

    power_w: float | None
    energy_j: float | None = None
    parts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeState:
    """Whole-node figures from the BMC as the latest snapshot shows them.

    ``fresh`` is False while the node source has had no good reading for a while: then its power and
    energy series are left out. ``unmetered`` is node energy not covered by the GPU, CPU and DRAM
    readings of the same time; its emissions are the node's share of emissions no component carries.
    """

    method: str  # "redfish" or "ipmi"
    fresh: bool
    power_w: float | None
    energy_j_total: float
    unmetered_energy_j_total: float
    emissions_g_total: float | None  # None without carbon accounting
    unmetered_emissions_g_total: float | None
    below_components_total: int  # intervals whose node energy was below the components' (data quality)
    gaps_total: int  # intervals not compared (no reading or no component figures across them)
    parts: tuple[str, ...] = ()
    # With --attribution.node-unmetered=spread: the unmetered energy charged to no process (None: not
    # spread, all of it is node level).
    unmetered_unattributed_j_total: float | None = None
    # Market-based Scope 2 of the node's energy and of its unmetered part (only with carbon.market).
    market_emissions_g_total: float | None = None
    unmetered_market_emissions_g_total: float | None = None
