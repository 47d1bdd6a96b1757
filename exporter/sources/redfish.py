"""Whole-node input power and energy from the BMC's Redfish service (DMTF DSP0266, schemas DSP8010).

Discovery walks the service root to the Chassis collection once (and again after a failure or an hour)
and picks, per chassis, ONE place each for power and for energy, so nothing is added twice:

- power: ``EnvironmentMetrics.PowerWatts`` (current schema), else a chassis-level ``Power`` sensor,
  else the deprecated ``Power`` resource's chassis-level ``PowerControl[].PowerConsumedWatts``, else the
  sum of the power supplies' input power (``PowerSubsystem`` supplies' ``Metrics.InputPowerWatts``,
  else the deprecated ``Power.PowerSupplies[].PowerInputWatts``);
- energy: ``EnvironmentMetrics.EnergykWh``/``EnergyJoules``, else a chassis-level energy sensor
  (``ReadingType`` EnergykWh, EnergyWh or EnergyJoules), else the supplies' ``Metrics.EnergykWh`` when
  every supply has one; no energy counter at all is normal (the poller integrates power).

Only outermost chassis are read: a chassis contained in another (``Links.ContainedBy``, or listed in
another's ``Links.Contains``) is part of its parent's figure (the OCP Sustainability profile puts the
product-level power and energy on the outermost chassis). ``--source.node.redfish.chassis`` overrides.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from exporter.model import NodeReading
from exporter.sources import SourceReadError
from exporter.sources.bmc_credentials import BmcCredentials

log = logging.getLogger(__name__)

JOULES_PER_KWH = 3.6e6
# Sensor.ReadingType values for energy (Sensor v1_0+: EnergykWh; v1_2+: EnergyJoules, EnergyWh) and the
# factor to joules; the schema fixes the unit per type (ReadingUnits "kW.h", "J", "W.h").
ENERGY_READING_TYPES = {"EnergykWh": JOULES_PER_KWH, "EnergyWh": 3600.0, "EnergyJoules": 1.0}
ENERGY_UNITS = {"EnergykWh": "kW.h", "EnergyWh": "W.h", "EnergyJoules": "J"}
# PhysicalContext values naming a part of the chassis, not the chassis itself: a PowerControl entry or a
# sensor with one of these covers a subsystem (CPU, memory, a GPU...) and is never the node's total.
SUBSYSTEM_CONTEXTS = frozenset(
    {
        "CPU",
        "CPUSubsystem",
        "Memory",
        "MemorySubsystem",
        "GPU",
        "GPUSubsystem",
        "Accelerator",
        "ASIC",
        "FPGA",
        "StorageDevice",
        "StorageBay",
        "NetworkingDevice",
        "NetworkBay",
        "Fan",
        "Backplane",
        "ExpansionSubsystem",
        "ComputeBay",
        "Board",
        "VoltageRegulator",
        "Rectifier",
        "Transceiver",
        "TrustedModule",
        "Battery",
        "LiquidInlet",
        "LiquidOutlet",
        "Exhaust",
        "Intake",
        "Room",
    }
)
MAX_BODY_BYTES = 4 * 1024 * 1024  # Redfish resources are a few KiB; a bigger body is not one of them
MAX_PAGES = 32  # Members@odata.nextLink pages followed per collection
MAX_SENSORS = 256  # sensors inspected per chassis during discovery
REDISCOVER_S = 3600.0

Getter = Callable[[str], dict[str, Any]]


class RedfishClient:
    """HTTP to one Redfish service: TLS, basic or session authentication, bounded time and body size.

    Session authentication (DSP0266 "Session management"): POST the credentials to the sessions
    collection, send the returned ``X-Auth-Token`` on every request, log in again once when a request
    answers 401 (the session timed out or the BMC restarted), DELETE the session (its ``Location``) at
    shutdown so a BMC's small session table does not fill up with ours.
    """

    def __init__(
        self,
        url: str,
        credentials: BmcCredentials,
        *,
        auth: str = "session",
        ca_file: str | None = None,
        insecure: bool = False,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.root_path = parts.path.rstrip("/") or "/redfish/v1"
        self.credentials = credentials
        self.auth = auth
        self.timeout_s = timeout_s
        self.clock = clock
        self.requests_total = 0
        self._http = requests.Session()
        self._http.trust_env = False  # no proxy from the environment between us and the BMC
        if insecure:
            self._http.verify = False
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        elif ca_file:
            self._http.verify = ca_file
        self._token: str | None = None
        self._session_uri: str | None = None
        self._sessions_path: str | None = None
        self.deadline = math.inf

    # --- requests ---
    def get(self, path: str) -> dict[str, Any]:
        """The JSON object at ``path``; SourceReadError with a kind on any failure."""
        response = self._send("GET", path)
        if response.status == 401 and self.auth == "session":
            self._token = None
            self._login()
            response = self._send("GET", path)
        return self._json(path, response)

    def _send(self, method: str, path: str, body: Any = None, with_auth: bool = True) -> _Response:
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            raise SourceReadError("timeout", f"no time left for {method} {path}")
        timeout = min(self.timeout_s, remaining)
        headers = {"Accept": "application/json", "OData-Version": "4.0"}
        auth: tuple[str, str] | None = None
        if with_auth and self.auth == "basic":
            auth = (self.credentials.username(), self.credentials.password())
        elif with_auth:
            if self._token is None and not path.rstrip("/").endswith(self.root_path):
                self._login()
            if self._token is not None:
                headers["X-Auth-Token"] = self._token
        url = path if path.startswith(("http://", "https://")) else self.origin + path
        if not url.startswith(self.origin + "/"):
            # A link to another host (a PDU outlet, say) is not ours to follow with our credentials.
            raise SourceReadError("malformed", f"link leaves the service: {path}")
        self.requests_total += 1
        try:
            with self._http.request(
                method,
                url,
                json=body,
                headers=headers,
                auth=auth,
                timeout=timeout,
                stream=True,
                allow_redirects=False,
            ) as resp:
                data = _read_body(resp, self.deadline, self.clock)
                return _Response(resp.status_code, dict(resp.headers), data)
        except requests.exceptions.SSLError as exc:
            raise SourceReadError("tls", f"TLS to the BMC failed: {_short(exc)}") from None
        except requests.exceptions.Timeout:
            raise SourceReadError("timeout", f"{method} {path} took longer than {timeout:.1f}s") from None
        except requests.exceptions.ConnectionError as exc:
            raise SourceReadError("connection", f"cannot reach the BMC: {_short(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise SourceReadError("connection", f"{method} {path} failed: {_short(exc)}") from None

    def _json(self, path: str, response: _Response) -> dict[str, Any]:
        status = response.status
        if status in (401, 403):
            raise SourceReadError("auth", f"GET {path} answered {status}")
        if status == 404:
            raise SourceReadError("http_4xx", f"GET {path} answered 404 (resource gone)")
        if 400 <= status < 500:
            raise SourceReadError("http_4xx", f"GET {path} answered {status}")
        if status >= 500:
            raise SourceReadError("http_5xx", f"GET {path} answered {status}", _retry_after(response.headers))
        if status != 200:
            raise SourceReadError("malformed", f"GET {path} answered {status}")
        try:
            data = json.loads(response.body)
        except (UnicodeDecodeError, ValueError):
            raise SourceReadError("malformed", f"GET {path} is not JSON") from None
        if not isinstance(data, dict):
            raise SourceReadError("malformed", f"GET {path} is not a JSON object")
        return data

    # --- sessions ---
    def _login(self) -> None:
        path = self._sessions_path or self._find_sessions_path()
        user, password = self.credentials.username(), self.credentials.password()
        response = self._send("POST", path, {"UserName": user, "Password": password}, with_auth=False)
        if response.status in (400, 401, 403):
            raise SourceReadError("auth", f"the BMC refused our login ({response.status})")
        if response.status not in (200, 201, 204):
            kind = "http_5xx" if response.status >= 500 else "http_4xx"
            raise SourceReadError(kind, f"login answered {response.status}")
        token = _header(response.headers, "X-Auth-Token")
        if not token:
            raise SourceReadError("auth", "login answered without an X-Auth-Token")
        self._token = token
        location = _header(response.headers, "Location")
        if location is None:
            try:
                body = json.loads(response.body)
                location = body.get("@odata.id") if isinstance(body, dict) else None
            except ValueError:
                location = None
        self._session_uri = urljoin(self.origin + path, location) if isinstance(location, str) else None
        log.info("redfish: logged in to %s", self.origin)

    def _find_sessions_path(self) -> str:
        # The service root is readable without authentication (DSP0266) and links the sessions
        # collection under Links.Sessions; the default path is the spec's fixed one.
        path = f"{self.root_path}/SessionService/Sessions"
        try:
            root = self._json(self.root_path, self._send("GET", self.root_path, with_auth=False))
            linked = _link(root.get("Links"), "Sessions")
            if linked:
                path = linked
        except SourceReadError as exc:
            if exc.kind in ("timeout", "connection", "tls"):
                raise
        self._sessions_path = path
        return path

    def close(self) -> None:
        """End our session on the BMC (best effort, bounded) and drop the connection pool."""
        if self._token is not None and self._session_uri is not None:
            self.deadline = self.clock() + min(self.timeout_s, 5.0)
            try:
                headers = {"X-Auth-Token": self._token, "OData-Version": "4.0"}
                self.requests_total += 1
                self._http.delete(self._session_uri, headers=headers, timeout=min(self.timeout_s, 5.0))
            except requests.exceptions.RequestException as exc:
                log.info("redfish: could not delete our session: %s", _short(exc))
        self._token = None
        self._http.close()


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: dict[str, str]
    body: bytes


def _read_body(resp: requests.Response, deadline: float, clock: Callable[[], float]) -> bytes:
    """The body, bounded in size and in total time (a read timeout alone lets a slow drip run on)."""
    chunks: list[bytes] = []
    size = 0
    # read1 (urllib3 2): whatever has arrived, at least a byte, so a slowly dripping body meets the
    # deadline check; urllib3 1.26 has no read1, and small reads come close.
    read1 = getattr(resp.raw, "read1", None)
    while True:
        chunk = (
            read1(65536, decode_content=True)
            if read1 is not None
            else resp.raw.read(1024, decode_content=True)
        )
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise SourceReadError("malformed", f"answer larger than {MAX_BODY_BYTES} bytes")
        if clock() > deadline:
            raise SourceReadError("timeout", "the answer arrived too slowly")
        chunks.append(chunk)
    return b"".join(chunks)


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _retry_after(headers: dict[str, str]) -> float | None:
    value = _header(headers, "Retry-After")
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


# --- JSON helpers ---
def _link(obj: Any, key: str) -> str | None:
    if not isinstance(obj, dict):
        return None
    value = obj.get(key)
    if isinstance(value, dict) and isinstance(value.get("@odata.id"), str):
        return str(value["@odata.id"])
    return None


def _links(obj: Any, key: str) -> list[str]:
    if not isinstance(obj, dict):
        return []
    value = obj.get(key)
    if isinstance(value, dict):  # ContainedBy is a single link; tolerate either form
        value = [value]
    if not isinstance(value, list):
        return []
    return [str(v["@odata.id"]) for v in value if isinstance(v, dict) and isinstance(v.get("@odata.id"), str)]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _reading(obj: Any, key: str) -> float | None:
    """``obj[key].Reading`` of a sensor excerpt (EnvironmentMetrics, PowerSupplyMetrics)."""
    if not isinstance(obj, dict):
        return None
    excerpt = obj.get(key)
    return _number(excerpt.get("Reading")) if isinstance(excerpt, dict) else None


def _absent(obj: Any) -> bool:
    status = obj.get("Status") if isinstance(obj, dict) else None
    return isinstance(status, dict) and status.get("State") in ("Absent", "Disabled")


def _norm(path: str) -> str:
    return path.rstrip("/")


def members(get: Getter, path: str) -> list[str]:
    """The member links of a collection, following ``Members@odata.nextLink`` pages."""
    found: list[str] = []
    pages = 0
    next_path: str | None = path
    while next_path is not None and pages < MAX_PAGES:
        page = get(next_path)
        pages += 1
        found.extend(_links(page, "Members"))
        nxt = page.get("Members@odata.nextLink")
        next_path = nxt if isinstance(nxt, str) and nxt else None
    return found


# --- plans: where each chassis's figures are read ---
@dataclass(frozen=True, slots=True)
class Figure:
    """One number of a chassis: how to read it (``kind``) from which resources, and its scale."""

    kind: str  # environment, sensor, power_control, psu_metrics, psu_legacy
    uris: tuple[str, ...]
    scale: float = 1.0  # to watts or joules
    field: str = ""  # EnvironmentMetrics / PowerSupplyMetrics property for energy (EnergykWh, EnergyJoules)

    def describe(self) -> str:
        names = {
            "environment": "EnvironmentMetrics",
            "sensor": "Sensor",
            "power_control": "Power/PowerControl",
            "psu_metrics": "PowerSubsystem/PowerSupplies",
            "psu_legacy": "Power/PowerSupplies",
        }
        return names[self.kind] + (f"/{self.field}" if self.field else "")


@dataclass(frozen=True, slots=True)
class ChassisPlan:
    chassis_id: str
    uri: str
    power: Figure | None
    energy: Figure | None

    def parts(self) -> tuple[str, ...]:
        out = []
        if self.power is not None:
            out.append(f"{self.chassis_id}:power:{self.power.describe()}")
        if self.energy is not None:
            out.append(f"{self.chassis_id}:energy:{self.energy.describe()}")
        return tuple(out)


def _optional(get: Getter, path: str | None) -> dict[str, Any] | None:
    """A linked resource that may be missing (404) or broken during discovery: None then."""
    if path is None:
        return None
    try:
        return get(path)
    except SourceReadError as exc:
        if exc.kind in ("timeout", "connection", "tls", "auth"):
            raise  # the BMC as a whole is failing: discovery fails and is tried again
        log.debug("redfish: skipping %s: %s", path, exc)
        return None


def _power_control_entry(power_doc: dict[str, Any]) -> dict[str, Any] | None:
    """The chassis-level PowerControl entry: the first one not scoped to a subsystem."""
    entries = power_doc.get("PowerControl")
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if isinstance(entry, dict) and entry.get("PhysicalContext") not in SUBSYSTEM_CONTEXTS:
            return entry
    return None


def _legacy_supplies(power_doc: dict[str, Any]) -> list[dict[str, Any]]:
    supplies = power_doc.get("PowerSupplies")
    if not isinstance(supplies, list):
        return []
    return [s for s in supplies if isinstance(s, dict) and not _absent(s)]


def _chassis_sensors(get: Getter, sensors_path: str | None) -> tuple[Figure | None, Figure | None]:
    """A chassis-level power sensor and energy sensor from the chassis's Sensors collection."""
    if sensors_path is None:
        return None, None
    try:
        links = members(get, sensors_path)[:MAX_SENSORS]
    except SourceReadError as exc:
        if exc.kind in ("timeout", "connection", "tls", "auth"):
            raise
        return None, None
    power: Figure | None = None
    energy: Figure | None = None
    for link in links:
        sensor = _optional(get, link)
        if sensor is None or _absent(sensor) or sensor.get("PhysicalContext") not in (None, "Chassis"):
            continue
        if sensor.get("ElectricalContext") not in (None, "Total"):
            continue  # one phase or one line of a multi-phase feed, not the total
        reading_type = sensor.get("ReadingType")
        if reading_type == "Power" and power is None and _number(sensor.get("Reading")) is not None:
            power = Figure("sensor", (link,))
        elif reading_type in ENERGY_READING_TYPES and energy is None:
            units = sensor.get("ReadingUnits")
            if units is not None and units != ENERGY_UNITS[str(reading_type)]:
                log.warning(
                    "redfish: sensor %s says %s in %r; skipping it (the schema fixes %s)",
                    link,
                    reading_type,
                    units,
                    ENERGY_UNITS[str(reading_type)],
                )
                continue
            if _number(sensor.get("Reading")) is not None:
                energy = Figure("sensor", (link,), ENERGY_READING_TYPES[str(reading_type)])
    return power, energy


def plan_chassis(get: Getter, uri: str, chassis: dict[str, Any]) -> ChassisPlan:
    """Where this chassis's power and energy are read, each from one place (see the module docstring)."""
    chassis_id = str(chassis.get("Id") or _norm(uri).rsplit("/", 1)[-1])
    power: Figure | None = None
    energy: Figure | None = None

    env_path = _link(chassis, "EnvironmentMetrics")
    env = _optional(get, env_path)
    if env is not None and env_path is not None:
        if _reading(env, "PowerWatts") is not None:
            power = Figure("environment", (env_path,))
        if _reading(env, "EnergyJoules") is not None:
            energy = Figure("environment", (env_path,), 1.0, "EnergyJoules")
        elif _reading(env, "EnergykWh") is not None:
            energy = Figure("environment", (env_path,), JOULES_PER_KWH, "EnergykWh")

    if power is None or energy is None:
        sensor_power, sensor_energy = _chassis_sensors(get, _link(chassis, "Sensors"))
        power = power or sensor_power
        energy = energy or sensor_energy

    power_path = _link(chassis, "Power")
    power_doc = _optional(get, power_path) if power is None else None
    if power is None and power_doc is not None and power_path is not None:
        entry = _power_control_entry(power_doc)
        if entry is not None and _number(entry.get("PowerConsumedWatts")) is not None:
            power = Figure("power_control", (power_path,))

    supply_metrics: list[str] = []
    all_supply_energy = False
    if power is None or energy is None:
        subsystem = _optional(get, _link(chassis, "PowerSubsystem"))
        supplies_path = _link(subsystem, "PowerSupplies")
        supply_links = members(get, supplies_path) if supplies_path else []
        all_supply_energy = bool(supply_links)
        for link in supply_links:
            supply = _optional(get, link)
            if supply is None or _absent(supply):
                continue
            metrics_path = _link(supply, "Metrics")
            metrics = _optional(get, metrics_path)
            if metrics is None or metrics_path is None or _reading(metrics, "InputPowerWatts") is None:
                # A present supply without an input reading: a sum without it would be too low.
                supply_metrics, all_supply_energy = [], False
                break
            supply_metrics.append(metrics_path)
            all_supply_energy = all_supply_energy and _reading(metrics, "EnergykWh") is not None
    if power is None and supply_metrics:
        power = Figure("psu_metrics", tuple(supply_metrics))
    if energy is None and supply_metrics and all_supply_energy:
        energy = Figure("psu_metrics", tuple(supply_metrics), JOULES_PER_KWH, "EnergykWh")

    if power is None and power_doc is not None and power_path is not None:
        supplies = _legacy_supplies(power_doc)
        if supplies and all(_number(s.get("PowerInputWatts")) is not None for s in supplies):
            power = Figure("psu_legacy", (power_path,))
    return ChassisPlan(chassis_id, uri, power, energy)


def discover(get: Getter, root_path: str, chassis_ids: tuple[str, ...] = ()) -> list[ChassisPlan]:
    """The chassis to read and how: the named ones, else every outermost chassis that has a figure."""
    root = get(root_path)
    collection = _link(root, "Chassis")
    if collection is None:
        raise SourceReadError("no_reading", "the service root links no Chassis collection")
    docs: dict[str, dict[str, Any]] = {}
    for link in members(get, collection):
        doc = _optional(get, link)
        if doc is not None:
            docs[_norm(link)] = doc
    if chassis_ids:
        by_id = {str(d.get("Id") or uri.rsplit("/", 1)[-1]): uri for uri, d in docs.items()}
        missing = [c for c in chassis_ids if c not in by_id]
        if missing:
            raise SourceReadError("no_reading", f"no chassis {', '.join(missing)} (have {', '.join(by_id)})")
        chosen = [by_id[c] for c in chassis_ids]
    else:
        contained: set[str] = set()
        for uri, doc in docs.items():
            links = doc.get("Links")
            if any(_norm(p) in docs and _norm(p) != uri for p in _links(links, "ContainedBy")):
                contained.add(uri)
            inside = (_norm(c) for c in _links(links, "Contains"))
            contained.update(c for c in inside if c in docs and c != uri)
        chosen = [uri for uri in docs if uri not in contained]
    plans = [plan_chassis(get, uri, docs[uri]) for uri in chosen]
    plans = [p for p in plans if p.power is not None or p.energy is not None]
    if not chassis_ids:
        plans = _without_gpu_baseboards(plans)
    if not plans:
        raise SourceReadError("no_reading", "no chassis reports input power or energy")
    if len(plans) > 1:
        log.warning(
            "redfish: adding the power of %d outermost chassis (%s); if one is inside another, name the "
            "node's chassis with --source.node.redfish.chassis",
            len(plans),
            ", ".join(p.chassis_id for p in plans),
        )
    return plans


def _without_gpu_baseboards(plans: list[ChassisPlan]) -> list[ChassisPlan]:
    # NVIDIA HGX systems expose the GPU baseboard as its own top-level chassis (HGX_Chassis_0, with the
    # baseboard's hot-swap controllers as "power supplies") beside the host's chassis, without a
    # ContainedBy link. Its power is already in the node's input power, so it is left out whenever
    # another chassis has a figure.
    host = [p for p in plans if not p.chassis_id.startswith("HGX_")]
    if host and len(host) < len(plans):
        log.info(
            "redfish: leaving out %s (an HGX GPU baseboard inside the node)",
            ", ".join(p.chassis_id for p in plans if p not in host),
        )
        return host
    return plans


def _figure_value(docs: dict[str, dict[str, Any]], figure: Figure, energy: bool) -> float:
    """The figure's current value in watts or joules from freshly read resources; raises no_reading."""

    def need(value: float | None, what: str) -> float:
        if value is None:
            raise SourceReadError("no_reading", f"{what} has no reading")
        return value

    uri = figure.uris[0]
    if figure.kind == "environment":
        key = figure.field if energy else "PowerWatts"
        return need(_reading(docs[uri], key), f"{uri} {key}") * figure.scale
    if figure.kind == "sensor":
        return need(_number(docs[uri].get("Reading")), uri) * figure.scale
    if figure.kind == "power_control":
        entry = _power_control_entry(docs[uri])
        value = _number(entry.get("PowerConsumedWatts")) if entry is not None else None
        return need(value, f"{uri} PowerControl")
    if figure.kind == "psu_metrics":
        key = figure.field if energy else "InputPowerWatts"
        return sum(need(_reading(docs[u], key), f"{u} {key}") for u in figure.uris) * figure.scale
    if figure.kind == "psu_legacy":
        supplies = _legacy_supplies(docs[uri])
        if not supplies:
            raise SourceReadError("no_reading", f"{uri} lists no present power supply")
        return sum(need(_number(s.get("PowerInputWatts")), f"{uri} PowerInputWatts") for s in supplies)
    raise AssertionError(figure.kind)


def read_plans(get: Getter, plans: list[ChassisPlan]) -> NodeReading:
    """One reading of the node: each needed resource fetched once, each chassis's figures added once."""
    uris: dict[str, None] = {}
    for plan in plans:
        for figure in (plan.power, plan.energy):
            if figure is not None:
                uris.update(dict.fromkeys(figure.uris))
    docs = {uri: get(uri) for uri in uris}
    powers = [_figure_value(docs, p.power, False) for p in plans if p.power is not None]
    energies = [_figure_value(docs, p.energy, True) for p in plans if p.energy is not None]
    parts = tuple(part for p in plans for part in p.parts())
    return NodeReading(
        power_w=sum(powers) if len(powers) == len(plans) else None,
        energy_j=sum(energies) if len(energies) == len(plans) else None,
        parts=parts,
    )


class RedfishNodeSource:
    """The node source for ``--source.node=redfish``; its ``read`` runs on the node poller's thread."""

    name = "redfish"

    def __init__(
        self,
        client: RedfishClient,
        chassis_ids: tuple[str, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        rediscover_s: float = REDISCOVER_S,
    ) -> None:
        self.client = client
        self.chassis_ids = chassis_ids
        self.clock = clock
        self.rediscover_s = rediscover_s
        self.plans: list[ChassisPlan] | None = None
        self._discovered_at = -math.inf

    def read(self) -> NodeReading:
        now = self.clock()
        if self.plans is None or now - self._discovered_at >= self.rediscover_s:
            # Discovery reads many resources once (every sensor of a chassis without EnvironmentMetrics
            # energy); give it many request timeouts.
            self.client.deadline = now + 12 * self.client.timeout_s
            self.plans = discover(self.client.get, self.client.root_path, self.chassis_ids)
            self._discovered_at = now
            log.info("redfish: reading %s", "; ".join(part for p in self.plans for part in p.parts()))
        self.client.deadline = self.clock() + self.client.timeout_s
        try:
            return read_plans(self.client.get, self.plans)
        except SourceReadError as exc:
            if exc.kind not in ("timeout", "connection", "tls", "auth"):
                self.plans = None  # a resource moved, vanished or changed shape: discover again next time
            raise

    def requests_total(self) -> int:
        return self.client.requests_total

    def close(self) -> None:
        self.client.close()
