"""CPU package and DRAM energy from the Linux powercap RAPL interface (/sys/class/powercap)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from exporter.model import CpuReading
from exporter.sources import SourceUnavailable

# Top-level package zones. AMD Zen CPUs are served by the same intel_rapl_msr driver and show up as
# intel-rapl:N; amd-rapl:N is accepted in case a kernel names them so. intel-rapl-mmio:N is
# deliberately not matched: it is a second interface to the same package counter (Tiger Lake and
# newer clients) and exporting it would count the package twice.
_PACKAGE_ZONE = re.compile(r"^(intel-rapl|amd-rapl):(\d+)$")
_SUB_ZONE = re.compile(r"^(intel-rapl|amd-rapl):(\d+):(\d+)$")

_PERMISSION_ADVICE = (
    "energy_uj is readable only by root on kernels patched for CVE-2020-8694; run the exporter as "
    "root, give it CAP_DAC_READ_SEARCH, or grant read access to energy_uj (this reopens the "
    "PLATYPUS power side channel to that user); otherwise --source.cpu=auto falls back to the "
    "estimated CPU power"
)


def _read_text(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


@dataclass
class _Domain:
    """One exported RAPL counter and what the source remembers about it between reads."""

    label: str
    energy_path: str
    max_range_uj: int | None
    last_uj: int | None = None
    last_time: float | None = None
    total_j: float = 0.0


class RaplCpuSource:
    """Reads package-N and package-N-dram energy counters; unwraps and accumulates them.

    Exported: every top-level package zone whose ``name`` is ``package-*`` (one per socket, or per
    die on multi-die parts), and the ``dram`` sub-zone of each. The core/uncore sub-zones are parts
    of the package counter and are not exported; ``psys`` (whole SoC on client parts) and the
    ``intel-rapl-mmio`` duplicates are skipped so that nothing is counted twice.
    """

    name = "rapl"

    def __init__(self, sysfs_root: str = "/sys", opener: Callable[[str], str] | None = None) -> None:
        # The opener is resolved at call time so tests can replace the module-level reader.
        self._open: Callable[[str], str] = opener if opener is not None else _read_text
        self._powercap = os.path.join(sysfs_root, "class", "powercap")
        self._errors: dict[str, int] = {}
        self._domains = self._discover()
        self._probe()

    @property
    def labels(self) -> list[str]:
        """The package labels this source exports, in order."""
        return [d.label for d in self._domains]

    def describe(self) -> str:
        return f"RAPL energy counters under {self._powercap} ({', '.join(self.labels)})"

    def errors(self) -> dict[str, int]:
        """Read errors since start, by kind ("io", "permission", "parse", "range")."""
        return dict(self._errors)

    def read(self, now: float) -> list[CpuReading]:
        readings: list[CpuReading] = []
        failed = 0
        for domain in self._domains:
            try:
                uj = int(self._open(domain.energy_path).strip())
            except PermissionError:
                self._count("permission")
                failed += 1
                continue
            except OSError:
                self._count("io")
                failed += 1
                continue
            except ValueError:
                self._count("parse")
                failed += 1
                continue
            reading = self._advance(domain, uj, now)
            if reading is not None:
                readings.append(reading)
        if failed == len(self._domains):
            # Every domain failed this time: an exception tells the sampler the whole source is down
            # (footprint_source_up 0) rather than silently serving nothing.
            raise OSError(f"no RAPL counter under {self._powercap} could be read")
        return readings

    def close(self) -> None:
        return None

    def _advance(self, domain: _Domain, uj: int, now: float) -> CpuReading | None:
        if domain.last_uj is None or domain.last_time is None:
            domain.last_uj, domain.last_time = uj, now
            return CpuReading(package=domain.label, method="rapl", energy_j=0.0, power_w=None)
        delta_uj = uj - domain.last_uj
        if delta_uj < 0:
            if domain.max_range_uj is None or uj > domain.max_range_uj:
                # Without the counter's range a wrap cannot be undone; restart from this value so
                # the total never goes down and never gains a bogus jump.
                self._count("range")
                domain.last_uj, domain.last_time = uj, now
                return None
            delta_uj = uj + domain.max_range_uj - domain.last_uj
        elapsed = now - domain.last_time
        domain.total_j += delta_uj / 1e6
        domain.last_uj, domain.last_time = uj, now
        power = delta_uj / 1e6 / elapsed if elapsed > 0 else None
        return CpuReading(package=domain.label, method="rapl", energy_j=domain.total_j, power_w=power)

    def _count(self, kind: str) -> None:
        self._errors[kind] = self._errors.get(kind, 0) + 1

    def _discover(self) -> list[_Domain]:
        try:
            entries = sorted(os.listdir(self._powercap))
        except OSError as exc:
            raise SourceUnavailable(
                "absent",
                f"no powercap interface at {self._powercap} ({exc.strerror or exc}): the kernel has no "
                "RAPL driver (VM, non-x86 CPU, intel_rapl_msr not loaded) or /sys is not mounted in "
                "the container; point --path.sysfs at the host's /sys if it is mounted elsewhere",
            ) from exc
        packages: list[tuple[int, int, str]] = []
        for entry in entries:
            m = _PACKAGE_ZONE.match(entry)
            if m:
                # intel-rapl sorts before amd-rapl so a driver exposing both keeps the intel name.
                packages.append((int(m.group(2)), 0 if m.group(1) == "intel-rapl" else 1, entry))
        domains: list[_Domain] = []
        seen: set[str] = set()
        for index, _, entry in sorted(packages):
            zone = os.path.join(self._powercap, entry)
            name = self._zone_name(zone) or f"package-{index}"
            if not name.startswith("package-") or name in seen:
                continue  # psys, or a second driver's view of the same package
            seen.add(name)
            domains.append(self._domain(name, zone))
            for sub in self._sub_zones(entry, zone, entries):
                if self._zone_name(sub) == "dram" and f"{name}-dram" not in seen:
                    seen.add(f"{name}-dram")
                    domains.append(self._domain(f"{name}-dram", sub))
        if not domains:
            raise SourceUnavailable(
                "absent",
                f"no RAPL package zones (intel-rapl:N) under {self._powercap}: the CPU or VM exposes no "
                "RAPL counters, or the intel_rapl_msr module is not loaded",
            )
        return domains

    def _sub_zones(self, entry: str, zone: str, top_entries: list[str]) -> list[str]:
        # Sub-zones live inside the package directory; /sys/class/powercap also lists them as links
        # at the top level, which matters for fixture trees or mounts that keep only those.
        found: dict[str, str] = {}
        prefix, index = entry.split(":")
        try:
            inside = sorted(os.listdir(zone))
        except OSError:
            inside = []
        for name in inside:
            m = _SUB_ZONE.match(name)
            if m and m.group(1) == prefix and m.group(2) == index:
                found[name] = os.path.join(zone, name)
        for name in top_entries:
            m = _SUB_ZONE.match(name)
            if m and m.group(1) == prefix and m.group(2) == index and name not in found:
                found[name] = os.path.join(self._powercap, name)
        return [found[k] for k in sorted(found, key=lambda n: int(n.rsplit(":", 1)[1]))]

    def _zone_name(self, zone: str) -> str | None:
        try:
            return self._open(os.path.join(zone, "name")).strip()
        except (OSError, ValueError):
            return None

    def _domain(self, label: str, zone: str) -> _Domain:
        try:
            max_range: int | None = int(self._open(os.path.join(zone, "max_energy_range_uj")).strip())
        except (OSError, ValueError):
            max_range = None
        return _Domain(label=label, energy_path=os.path.join(zone, "energy_uj"), max_range_uj=max_range)

    def _probe(self) -> None:
        """Read every counter once so that an unusable interface fails at start, with the reason."""
        usable: list[_Domain] = []
        problems: list[str] = []
        for domain in self._domains:
            try:
                int(self._open(domain.energy_path).strip())
            except PermissionError as exc:
                raise SourceUnavailable(
                    "permission", f"permission denied on {domain.energy_path}: {_PERMISSION_ADVICE}"
                ) from exc
            except (OSError, ValueError) as exc:
                # Some platforms list a dram zone whose counter answers ENODATA; drop just that one.
                problems.append(f"{domain.energy_path}: {exc}")
                continue
            usable.append(domain)
        if not any(not d.label.endswith("-dram") for d in usable):
            raise SourceUnavailable("io", "no RAPL package counter could be read: " + "; ".join(problems))
        self._domains = usable
