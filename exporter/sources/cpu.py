"""Chooses the CPU power source (RAPL, the utilisation x TDP estimate, or none) and says why."""

from __future__ import annotations

from exporter.errors import ConfigError
from exporter.sources import CpuSource, SourceUnavailable
from exporter.sources.cpu_estimate import EstimatedCpuSource
from exporter.sources.rapl import RaplCpuSource

CPU_MODES = ("auto", "rapl", "estimated", "none")


def select_cpu_source(
    mode: str,
    sysfs_root: str = "/sys",
    procfs_root: str = "/proc",
    tdp_watts: float | None = None,
) -> tuple[CpuSource | None, str]:
    """The CPU source for ``--source.cpu`` and one line for the log saying what is used and why.

    ``auto``: RAPL when its counters are readable, else the estimate (else none, said in the line).
    ``rapl`` and ``estimated`` raise SourceUnavailable when that source cannot work here.
    """
    if mode not in CPU_MODES:
        raise ConfigError("source.cpu", f"must be one of {', '.join(CPU_MODES)}, got {mode!r}")
    if tdp_watts is not None and not tdp_watts > 0:
        raise ConfigError("source.cpu.tdp-watts", f"must be a positive number of watts, got {tdp_watts}")
    if mode == "none":
        return None, "CPU power disabled by --source.cpu=none"
    if mode in ("auto", "rapl"):
        try:
            rapl = RaplCpuSource(sysfs_root)
        except SourceUnavailable as exc:
            if mode == "rapl":
                raise
            why = f"RAPL not readable: {exc}"
        else:
            return rapl, f"using {rapl.describe()}"
        try:
            estimate = EstimatedCpuSource(procfs_root, tdp_watts=tdp_watts, reason=why)
        except SourceUnavailable as exc:
            return None, f"{why}; no CPU power either: {exc}"
        return estimate, f"{why}; using {estimate.describe()}"
    estimate = EstimatedCpuSource(procfs_root, tdp_watts=tdp_watts)
    return estimate, f"using {estimate.describe()}, selected by --source.cpu=estimated"
