"""Estimated CPU package power from utilisation and TDP, for VMs and hosts where RAPL is not readable."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from exporter.model import CpuReading
from exporter.sources import SourceUnavailable

# Share of TDP a package draws when idle. Cloud Carbon Footprint's AWS coefficients (derived from
# SPECpower_ssj2008 results) are 0.74 W per vCPU at 0% and 3.5 W at 100% utilisation: 0.74 / 3.5 =
# 0.21. Power between idle and full load is taken as linear in utilisation, as in that methodology.
IDLE_FRACTION = 0.2

# For a CPU missing from the table: watts per physical core, about the median TDP per core of the
# server parts below (3.5 W for 96-core EPYC to 9.4 W for 32-core Xeon; median 6.3 W).
DEFAULT_WATTS_PER_CORE = 6.3


@dataclass(frozen=True, slots=True)
class CpuModelSpec:
    """A CPU model's vendor TDP per socket and its physical core count."""

    label: str
    pattern: str  # regular expression searched in the cleaned-up `model name`
    tdp_w: float
    cores: int


# Vendor specification TDPs (default TDP, not cTDP maxima) from Intel ARK and AMD product pages; the
# Grace figure is half of NVIDIA's 500 W for the two-CPU Grace Superchip, which includes its LPDDR5X.
# Suffix guards keep e.g. the 250 W Xeon 8380H from matching the 270 W 8380.
TDP_TABLE: tuple[CpuModelSpec, ...] = (
    CpuModelSpec("Intel Xeon Platinum 8592+", r"Platinum 8592\+", 350.0, 64),
    CpuModelSpec("Intel Xeon Platinum 8480+", r"Platinum 8480\+", 350.0, 56),
    CpuModelSpec("Intel Xeon Platinum 8468", r"Platinum 8468(?![0-9A-Z+])", 350.0, 48),
    CpuModelSpec("Intel Xeon Platinum 8462Y+", r"Platinum 8462Y\+", 300.0, 32),
    CpuModelSpec("Intel Xeon Platinum 8380", r"Platinum 8380(?![0-9A-Z+])", 270.0, 40),
    CpuModelSpec("Intel Xeon Platinum 8358", r"Platinum 8358(?![0-9A-Z+])", 250.0, 32),
    CpuModelSpec("Intel Xeon Platinum 8280", r"Platinum 8280[LM]?(?![0-9A-Z+])", 205.0, 28),
    CpuModelSpec("Intel Xeon Platinum 8260", r"Platinum 8260[LM]?(?![0-9A-Z+])", 165.0, 24),
    CpuModelSpec("Intel Xeon Gold 6338", r"Gold 6338(?![0-9A-Z+])", 205.0, 32),
    CpuModelSpec("Intel Xeon Gold 6248R", r"Gold 6248R(?![0-9A-Z+])", 205.0, 24),
    CpuModelSpec("AMD EPYC 9654", r"EPYC 9654P?(?![0-9A-Z])", 360.0, 96),
    CpuModelSpec("AMD EPYC 9554", r"EPYC 9554P?(?![0-9A-Z])", 360.0, 64),
    CpuModelSpec("AMD EPYC 9454", r"EPYC 9454P?(?![0-9A-Z])", 290.0, 48),
    CpuModelSpec("AMD EPYC 7763", r"EPYC 7763(?![0-9A-Z])", 280.0, 64),
    CpuModelSpec("AMD EPYC 7742", r"EPYC 7742(?![0-9A-Z])", 225.0, 64),
    CpuModelSpec("AMD EPYC 7713", r"EPYC 7713P?(?![0-9A-Z])", 225.0, 64),
    CpuModelSpec("AMD EPYC 7543", r"EPYC 7543P?(?![0-9A-Z])", 225.0, 32),
    CpuModelSpec("NVIDIA Grace", r"Grace|Neoverse-V2", 250.0, 72),
)

# arm64 /proc/cpuinfo has no `model name`; name the cores from the implementer and part numbers.
# Neoverse V2 is taken as Grace, the data-center part it ships in next to GPUs (Graviton4 and Axion
# use it too: the core scaling below keeps their VMs' share sensible, or set the TDP by flag).
_ARM_PARTS = {
    ("0x41", "0xd4f"): "Neoverse-V2",
    ("0x41", "0xd40"): "Neoverse-V1",
    ("0x41", "0xd0c"): "Neoverse-N1",
}


def lookup_cpu_model(model_name: str) -> CpuModelSpec | None:
    """The table entry for a /proc/cpuinfo `model name`, or None when the CPU is not in the table."""
    cleaned = re.sub(r"\((R|TM|tm|r)\)", "", model_name)
    for spec in TDP_TABLE:
        if re.search(spec.pattern, cleaned, re.IGNORECASE):
            return spec
    return None


@dataclass(frozen=True, slots=True)
class CpuTopology:
    """What /proc/cpuinfo says about the sockets: model, socket ids and physical cores per socket."""

    model_name: str
    cores_per_socket: dict[int, int]


def parse_cpuinfo(text: str) -> CpuTopology:
    """Sockets from `physical id` (one socket when absent), cores from `cpu cores` or CPU count."""
    blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip()]
    model = ""
    arm_ids: tuple[str, str] | None = None
    logical: dict[int, int] = {}
    cores: dict[int, int] = {}
    for block in blocks:
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip().lower()] = value.strip()
        if "processor" not in fields or not fields["processor"].isdigit():
            continue  # arm64 puts a summary block (Hardware, Serial) after the CPUs
        model = model or fields.get("model name", "")
        if arm_ids is None and "cpu implementer" in fields and "cpu part" in fields:
            arm_ids = (fields["cpu implementer"].lower(), fields["cpu part"].lower())
        socket = int(fields["physical id"]) if fields.get("physical id", "").isdigit() else 0
        logical[socket] = logical.get(socket, 0) + 1
        if fields.get("cpu cores", "").isdigit():
            cores[socket] = int(fields["cpu cores"])
    if not model and arm_ids is not None:
        model = _ARM_PARTS.get(arm_ids, f"Arm CPU implementer {arm_ids[0]} part {arm_ids[1]}")
    per_socket = {s: cores.get(s, n) for s, n in sorted(logical.items())}
    return CpuTopology(model_name=model, cores_per_socket=per_socket or {0: os.cpu_count() or 1})


class ProcStatUtilisation:
    """Node-wide CPU busy fraction between two calls, from the aggregate `cpu` line of /proc/stat.

    Busy is user + nice + system + irq + softirq; idle is idle + iowait. Steal (time the hypervisor
    gave to someone else) is left out of both, and guest time is already inside user and nice.
    Returns None on the first call, which only sets the baseline.
    """

    def __init__(self, procfs_root: str = "/proc") -> None:
        self.path = os.path.join(procfs_root, "stat")
        self._last: tuple[int, int] | None = None

    def __call__(self) -> float | None:
        with open(self.path, encoding="ascii") as f:
            first = f.readline().split()
        if not first or first[0] != "cpu":
            raise ValueError(f"{self.path} does not start with the aggregate cpu line")
        values = [int(v) for v in first[1:9]] + [0] * max(0, 8 - len(first[1:9]))
        user, nice, system, idle, iowait, irq, softirq, _steal = values
        busy = user + nice + system + irq + softirq
        total = busy + idle + iowait
        last, self._last = self._last, (busy, total)
        if last is None or total <= last[1]:
            return None
        return min(1.0, max(0.0, (busy - last[0]) / (total - last[1])))


class EstimatedCpuSource:
    """CPU package power estimated per socket as P = TDP x (idle + (1 - idle) x utilisation).

    ``utilisation`` returns the node's busy fraction (0-1) averaged since its previous call, or None
    when it has no interval yet. The same fraction is applied to every socket. Because the model is
    linear and the utilisation is an interval average, P x dt over each read interval is the exact
    energy of the model; a trapezoid over the reads would smear each interval into the next.
    """

    name = "estimated"

    def __init__(
        self,
        procfs_root: str = "/proc",
        tdp_watts: float | None = None,
        utilisation: Callable[[], float | None] | None = None,
        idle_fraction: float = IDLE_FRACTION,
        reason: str = "selected by --source.cpu=estimated",
    ) -> None:
        if tdp_watts is not None and not tdp_watts > 0:
            raise ValueError(f"TDP must be a positive number of watts, got {tdp_watts}")
        if not 0.0 <= idle_fraction <= 1.0:
            raise ValueError(f"idle fraction must be within 0-1, got {idle_fraction}")
        self.reason = reason
        self.idle_fraction = idle_fraction
        self.topology = self._topology(procfs_root)
        self.cpu_model = self.topology.model_name or "unknown CPU"
        self.spec = lookup_cpu_model(self.topology.model_name)
        self.tdp_watts_per_socket: dict[int, float] = {}
        for socket, cores in self.topology.cores_per_socket.items():
            if tdp_watts is not None:
                self.tdp_watts_per_socket[socket] = tdp_watts
            elif self.spec is not None:
                # A VM sees a few vCPUs of a big part: charge it the share of the socket it can see.
                self.tdp_watts_per_socket[socket] = self.spec.tdp_w * min(1.0, cores / self.spec.cores)
            else:
                self.tdp_watts_per_socket[socket] = DEFAULT_WATTS_PER_CORE * cores
        self.tdp_source = "flag" if tdp_watts is not None else ("table" if self.spec else "default")
        if utilisation is None:
            stat = ProcStatUtilisation(procfs_root)
            try:
                stat()  # sets the baseline, so the first read already has an interval
            except (OSError, ValueError) as exc:
                raise SourceUnavailable(
                    "absent", f"cannot read CPU utilisation from {stat.path}: {exc}"
                ) from exc
            utilisation = stat
        self._utilisation = utilisation
        self._last_time: float | None = None
        self._last_util: float | None = None
        self._energy_j = {socket: 0.0 for socket in self.tdp_watts_per_socket}
        self._errors: dict[str, int] = {}

    def describe(self) -> str:
        """One phrase for the log: the TDP in use, per socket, and where it came from."""
        first = next(iter(self.tdp_watts_per_socket))
        cores = self.topology.cores_per_socket[first]
        tdp = f"{self.tdp_watts_per_socket[first]:g} W"
        if self.tdp_source == "flag":
            where = f"TDP {tdp} per socket from --source.cpu.tdp-watts, {self.cpu_model}"
        elif self.spec is not None and cores < self.spec.cores:
            where = (
                f"TDP {tdp} per socket: {self.spec.label} {self.spec.tdp_w:g} W scaled to the {cores} "
                f"of its {self.spec.cores} cores visible here"
            )
        elif self.spec is not None:
            where = f"TDP {tdp} per socket, {self.spec.label}"
        else:
            where = (
                f"TDP {tdp} per socket: {self.cpu_model} is not in the built-in table, "
                f"{DEFAULT_WATTS_PER_CORE:g} W x {cores} cores; set --source.cpu.tdp-watts"
            )
        sockets = len(self.tdp_watts_per_socket)
        return f"estimated CPU power ({where}; {sockets} socket{'s' if sockets != 1 else ''})"

    def errors(self) -> dict[str, int]:
        """Utilisation read errors since start, by kind."""
        return dict(self._errors)

    def power_at(self, utilisation: float, socket: int) -> float:
        """The model: watts drawn by one socket at a busy fraction (clamped to 0-1)."""
        u = min(1.0, max(0.0, utilisation))
        return self.tdp_watts_per_socket[socket] * (self.idle_fraction + (1.0 - self.idle_fraction) * u)

    def read(self, now: float) -> list[CpuReading]:
        try:
            util = self._utilisation()
        except (OSError, ValueError) as exc:
            self._errors["io"] = self._errors.get("io", 0) + 1
            raise OSError(f"CPU utilisation unreadable: {exc}") from exc
        if util is None:
            # Two reads inside one clock tick of /proc/stat give no new interval: hold the last value.
            util = self._last_util
        self._last_util = util
        elapsed = None if self._last_time is None else now - self._last_time
        self._last_time = now
        readings: list[CpuReading] = []
        for socket in self.tdp_watts_per_socket:
            power = None if util is None else self.power_at(util, socket)
            if power is not None and elapsed is not None and elapsed > 0:
                self._energy_j[socket] += power * elapsed
            readings.append(
                CpuReading(
                    package=f"package-{socket}",
                    method="estimated",
                    energy_j=self._energy_j[socket],
                    power_w=power,
                )
            )
        return readings

    def close(self) -> None:
        return None

    @staticmethod
    def _topology(procfs_root: str) -> CpuTopology:
        path = os.path.join(procfs_root, "cpuinfo")
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return parse_cpuinfo(f.read())
        except OSError:
            return CpuTopology(model_name="", cores_per_socket={0: os.cpu_count() or 1})


__all__ = [
    "DEFAULT_WATTS_PER_CORE",
    "IDLE_FRACTION",
    "TDP_TABLE",
    "CpuModelSpec",
    "CpuTopology",
    "EstimatedCpuSource",
    "ProcStatUtilisation",
    "lookup_cpu_model",
    "parse_cpuinfo",
]
