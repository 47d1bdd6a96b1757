"""A fake BMC Redfish service on loopback (HTTPS, test CA) serving the real resource shapes.

Shapes, from public sources:
- Service root, Chassis, PowerSubsystem, PowerSupplies, PowerSupplyMetrics, EnvironmentMetrics, Sensors
  and the deprecated Power resource: DMTF's public mockup ``public-rackmount1`` (DMTF/Redfish-Mockup-Server:
  Chassis/1U has both PowerSubsystem and the deprecated Power, EnvironmentMetrics.PowerWatts with a
  DataSourceUri, a Sensors collection with TotalPower, TotalEnergy (ReadingType EnergykWh, ReadingUnits
  "kW.h", PhysicalContext Chassis) and per-supply PS1Energy/PS2Energy (PhysicalContext PowerSupply)).
- EnvironmentMetrics.EnergykWh with Reading and LifetimeReading on the outermost chassis: the OCP
  Sustainability profile (opencomputeproject/HWMgmt-OCP-Profiles,
  Sustainability/OCP-Sustainability-Profile.md).
- Dell iDRAC: Chassis System.Embedded.1 with Power.PowerControl[0] "System Power Control" (MemberId,
  PowerConsumedWatts, PowerMetrics with IntervalInMin) and PowerSupplies[] with PowerInputWatts, and
  the internal storage enclosure Enclosure.Internal.0-1 as a chassis contained in it.
- HPE iLO: Chassis "1" whose links end in "/" (``/redfish/v1/Chassis/1/Power/``) and Oem.Hpe members;
  401 answers carry a Base.NoValidSession message (servermanagementportal.ext.hpe.com, "Redfish
  authentication and sessions").
- NVIDIA HGX: the GPU baseboard as its own top-level chassis HGX_Chassis_0 (its "power supplies" are the
  baseboard's hot-swap controllers HSC_n) beside the host chassis, and per-GPU chassis HGX_GPU_SXM_n
  contained in it with EnvironmentMetrics PowerWatts and EnergyJoules (NVIDIA DPS Redfish guide:
  Systems/HGX_Baseboard_0, Chassis/HGX_ProcessorModule_0/EnvironmentMetrics).
- Sessions (DSP0266 "Session management"): POST UserName/Password to the sessions collection (linked
  from the service root's Links.Sessions) answers 201 with X-Auth-Token and Location; requests without
  a valid token answer 401; DELETE on the Location ends the session. The service root is readable
  without authentication. Supermicro documents at most 16 sessions per BMC.

The node's true input power is a ``Profile`` of the fake's clock; readings are the BMC's view of it:
power rounded to whole watts, energy counters in kWh with three decimals (1 Wh steps) unless asked
otherwise, the counter starting from a large lifetime value.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

Resource = Callable[[], dict[str, Any]]


@dataclass
class Profile:
    """True input power of the node: base + amp*sin(2*pi*t/period) + steps, with its exact integral."""

    base_w: float = 1800.0
    amp_w: float = 0.0
    period_s: float = 600.0
    steps: list[tuple[float, float]] = field(default_factory=list)  # (at t seconds, +watts from then on)

    def power(self, t: float) -> float:
        value = self.base_w + self.amp_w * math.sin(2 * math.pi * t / self.period_s)
        return value + sum(dw for at, dw in self.steps if t >= at)

    def energy(self, t: float) -> float:
        """Joules from 0 to t (t >= 0)."""
        w = 2 * math.pi / self.period_s
        value = self.base_w * t + self.amp_w / w * (1 - math.cos(w * t))
        return value + sum(dw * (t - at) for at, dw in self.steps if t >= at)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Fault:
    """Something wrong with the next answers for a path: status, delay, malformed body, slow drip."""

    status: int = 0
    delay_s: float = 0.0
    body: bytes | None = None
    drip_s: float = 0.0  # seconds between bytes of the body
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1_000_000  # how many requests it applies to


class FakeBmc:
    """The fake service. ``resources`` maps a path to a function building its JSON at request time."""

    def __init__(
        self,
        tmp: Path,
        profile: Profile | None = None,
        clock: Callable[[], float] = time.monotonic,
        username: str = "monitor",
        password: str = "s3cret-Pw",
        basic_auth: bool = True,
        max_sessions: int = 16,
    ) -> None:
        self.profile = profile or Profile()
        self.clock = clock
        self.t0 = clock()
        self.username, self.password = username, password
        self.basic_auth = basic_auth
        self.max_sessions = max_sessions
        self.resources: dict[str, Resource] = {}
        self.sessions: dict[str, str] = {}  # token -> session path
        self.faults: dict[str, list[Fault]] = {}
        self.requests: list[Seen] = []
        self.logins = 0
        self._lock = threading.Lock()
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = str(tmp / "bmc-ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        self._add_root()
        bmc = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body in one write (flushed after each request): separate small writes meet the
            # client's delayed ACK and every answer would take 40 ms, which no BMC's network adds.
            wbufsize = -1

            def do_GET(self) -> None:
                bmc._handle(self, "GET")

            def do_POST(self) -> None:
                bmc._handle(self, "POST")

            def do_DELETE(self) -> None:
                bmc._handle(self, "DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def get_request(self) -> tuple[Any, Any]:
                sock, addr = super().get_request()
                sock.settimeout(10)
                return context.wrap_socket(sock, server_side=True), addr

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that went away (a timeout test) is not our error

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"https://127.0.0.1:{self._server.server_address[1]}/redfish/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()

    # --- the BMC's view of the truth ---
    def elapsed(self) -> float:
        return self.clock() - self.t0

    def watts(self, share: float = 1.0) -> float:
        return float(round(self.profile.power(self.elapsed()) * share))

    def kwh(self, share: float = 1.0, decimals: int = 3, lifetime_kwh: float = 4321.0) -> float:
        value = lifetime_kwh * share + self.profile.energy(self.elapsed()) * share / 3.6e6
        return math.floor(value * 10**decimals) / 10**decimals  # a meter shows what it has counted

    def true_energy_between(self, t0: float, t1: float) -> float:
        """Exact joules between two times of the fake's clock."""
        return self.profile.energy(t1 - self.t0) - self.profile.energy(t0 - self.t0)

    # --- building the service ---
    def add(self, path: str, build: Resource | dict[str, Any]) -> None:
        if isinstance(build, dict):
            frozen = build
            self.resources[path] = lambda: frozen
        else:
            self.resources[path] = build

    def _add_root(self) -> None:
        self.add(
            "/redfish/v1",
            {
                "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
                "@odata.id": "/redfish/v1",
                "Id": "RootService",
                "Name": "Root Service",
                "RedfishVersion": "1.17.0",
                "Chassis": {"@odata.id": "/redfish/v1/Chassis"},
                "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
                "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}},
            },
        )

    def chassis_collection(self, *ids: str, page_size: int = 0, trailing_slash: bool = False) -> None:
        """The Chassis collection; ``page_size`` splits it into Members@odata.nextLink pages."""
        slash = "/" if trailing_slash else ""
        links = [{"@odata.id": f"/redfish/v1/Chassis/{i}{slash}"} for i in ids]
        pages = (
            [links] if not page_size else [links[i : i + page_size] for i in range(0, len(links), page_size)]
        )
        for n, page in enumerate(pages):
            body: dict[str, Any] = {
                "@odata.type": "#ChassisCollection.ChassisCollection",
                "@odata.id": "/redfish/v1/Chassis",
                "Name": "Chassis Collection",
                "Members@odata.count": len(links),
                "Members": page,
            }
            if n + 1 < len(pages):
                body["Members@odata.nextLink"] = f"/redfish/v1/Chassis?$skip={(n + 1) * page_size}"
            self.add("/redfish/v1/Chassis" + (f"?$skip={n * page_size}" if n else ""), body)
            if n == 0 and trailing_slash:
                self.add("/redfish/v1/Chassis/", body)

    def fault(self, path: str, fault: Fault) -> None:
        with self._lock:
            self.faults.setdefault(path, []).append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    def expire_sessions(self) -> None:
        """The BMC forgets every session (session timeout, BMC reboot)."""
        with self._lock:
            self.sessions.clear()

    def hits(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [
                s
                for s in self.requests
                if (method is None or s.method == method) and (path is None or s.path == path)
            ]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- serving ---
    def _authorised(self, handler: BaseHTTPRequestHandler) -> bool:
        token = handler.headers.get("X-Auth-Token")
        if token is not None:
            return token in self.sessions
        auth = handler.headers.get("Authorization", "")
        if self.basic_auth and auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            return (user, password) == (self.username, self.password)
        return False

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path
        length = int(handler.headers.get("Content-Length") or 0)
        body_in = handler.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append(Seen(method, path, dict(handler.headers.items())))
            queue = self.faults.get(path) or self.faults.get("*")
            fault = None
            if queue:
                fault = queue[0]
                fault.times -= 1
                if fault.times <= 0:
                    queue.pop(0)
        if fault is not None and fault.delay_s:
            time.sleep(fault.delay_s)
        if fault is not None and fault.status:
            self._send(
                handler,
                fault.status,
                fault.body or _error("Base.1.8.ServiceTemporarilyUnavailable"),
                fault.headers,
            )
            return
        status, payload, headers = self._answer(method, path, body_in, handler)
        if fault is not None and fault.body is not None:
            payload = fault.body
        self._send(handler, status, payload, headers, fault.drip_s if fault is not None else 0.0)

    def _answer(
        self, method: str, path: str, body: bytes, handler: BaseHTTPRequestHandler
    ) -> tuple[int, bytes, dict[str, str]]:
        sessions = "/redfish/v1/SessionService/Sessions"
        if method == "POST" and path == sessions:
            try:
                creds = json.loads(body)
            except ValueError:
                return 400, _error("Base.1.8.MalformedJSON"), {}
            if not isinstance(creds, dict) or (creds.get("UserName"), creds.get("Password")) != (
                self.username,
                self.password,
            ):
                return 401, _error("Base.1.8.NoValidSession"), {}
            with self._lock:
                if len(self.sessions) >= self.max_sessions:
                    return 503, _error("Base.1.8.SessionLimitExceeded"), {}
                token = secrets.token_hex(16)
                session_path = f"{sessions}/{secrets.token_hex(4)}"
                self.sessions[token] = session_path
                self.logins += 1
            doc = {
                "@odata.id": session_path,
                "@odata.type": "#Session.v1_4_0.Session",
                "UserName": self.username,
            }
            return 201, json.dumps(doc).encode(), {"X-Auth-Token": token, "Location": session_path}
        if method == "DELETE":
            with self._lock:
                for token, session_path in list(self.sessions.items()):
                    if session_path == path and handler.headers.get("X-Auth-Token") == token:
                        del self.sessions[token]
                        return 204, b"", {}
            return 401, _error("Base.1.8.NoValidSession"), {}
        if method != "GET":
            return 405, _error("Base.1.8.OperationNotAllowed"), {}
        if path != "/redfish/v1" and path != "/redfish/v1/" and not self._authorised(handler):
            return 401, _error("Base.1.8.NoValidSession"), {"WWW-Authenticate": 'Basic realm="Redfish"'}
        build = self.resources.get(path)
        if build is None:
            return 404, _error("Base.1.8.ResourceMissingAtURI"), {}
        return 200, json.dumps(build()).encode(), {"OData-Version": "4.0"}

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        payload: bytes,
        headers: dict[str, str],
        drip_s: float = 0.0,
    ) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json;charset=utf-8")
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            if drip_s:
                for i in range(len(payload)):
                    handler.wfile.write(payload[i : i + 1])
                    handler.wfile.flush()
                    time.sleep(drip_s)
            else:
                handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass


def _error(message_id: str) -> bytes:
    return json.dumps(
        {
            "error": {
                "code": message_id,
                "message": "See @Message.ExtendedInfo for more information.",
                "@Message.ExtendedInfo": [{"MessageId": message_id}],
            }
        }
    ).encode()


# --- vendor shapes ---
def dell_legacy(bmc: FakeBmc) -> None:
    """Dell iDRAC shape: System.Embedded.1 with the deprecated Power resource (PowerControl + 2 supplies)
    and the storage enclosure as a contained chassis (it has its own Power resource here, a part of the
    node's total, to prove a contained chassis is not added)."""
    bmc.chassis_collection("System.Embedded.1", "Enclosure.Internal.0-1")
    base = "/redfish/v1/Chassis/System.Embedded.1"
    bmc.add(
        base,
        {
            "@odata.id": base,
            "@odata.type": "#Chassis.v1_14_0.Chassis",
            "Id": "System.Embedded.1",
            "Name": "Computer System Chassis",
            "ChassisType": "RackMount",
            "Manufacturer": "Dell Inc.",
            "Model": "PowerEdge XE9680",
            "Power": {"@odata.id": f"{base}/Power"},
            "Thermal": {"@odata.id": f"{base}/Thermal"},
            "Links": {
                "ComputerSystems": [{"@odata.id": "/redfish/v1/Systems/System.Embedded.1"}],
                "Contains": [{"@odata.id": "/redfish/v1/Chassis/Enclosure.Internal.0-1"}],
            },
        },
    )

    def power() -> dict[str, Any]:
        total = bmc.watts()
        return {
            "@odata.id": f"{base}/Power",
            "@odata.type": "#Power.v1_6_0.Power",
            "Id": "Power",
            "Name": "Power",
            "PowerControl": [
                {
                    "@odata.id": f"{base}/Power#/PowerControl/0",
                    "MemberId": "PowerControl",
                    "Name": "System Power Control",
                    "PowerConsumedWatts": total,
                    "PowerCapacityWatts": 6000,
                    "PowerMetrics": {
                        "IntervalInMin": 1,
                        "AverageConsumedWatts": total,
                        "MaxConsumedWatts": total,
                    },
                }
            ],
            "PowerSupplies": [
                {
                    "@odata.id": f"{base}/Power#/PowerSupplies/{i}",
                    "MemberId": f"PSU.Slot.{i + 1}",
                    "Name": f"PS{i + 1} Status",
                    "PowerInputWatts": bmc.watts(0.5),
                    "LastPowerOutputWatts": bmc.watts(0.47),
                    "PowerCapacityWatts": 3000,
                    "Status": {"State": "Enabled", "Health": "OK"},
                }
                for i in range(2)
            ],
        }

    bmc.add(f"{base}/Power", power)
    enclosure = "/redfish/v1/Chassis/Enclosure.Internal.0-1"
    bmc.add(
        enclosure,
        {
            "@odata.id": enclosure,
            "Id": "Enclosure.Internal.0-1",
            "Name": "BP_PSU_BASE (0)",
            "ChassisType": "Enclosure",
            "Power": {"@odata.id": f"{enclosure}/Power"},
            "Links": {"ContainedBy": {"@odata.id": base}},
        },
    )
    bmc.add(
        f"{enclosure}/Power",
        lambda: {
            "@odata.id": f"{enclosure}/Power",
            "PowerControl": [{"MemberId": "0", "PowerConsumedWatts": bmc.watts(0.02)}],
        },
    )


def dmtf_modern(bmc: FakeBmc, energy_in_environment: bool = False, kwh_decimals: int = 3) -> None:
    """DMTF public-rackmount1 shape: Chassis 1U with PowerSubsystem (2 supplies with Metrics),
    EnvironmentMetrics.PowerWatts, a Sensors collection with a chassis energy sensor, and the deprecated
    Power resource too (served side by side, as the mockup does)."""
    bmc.chassis_collection("1U")
    base = "/redfish/v1/Chassis/1U"
    bmc.add(
        base,
        {
            "@odata.id": base,
            "@odata.type": "#Chassis.v1_22_0.Chassis",
            "Id": "1U",
            "Name": "Computer System Chassis",
            "ChassisType": "RackMount",
            "PowerSubsystem": {"@odata.id": f"{base}/PowerSubsystem"},
            "EnvironmentMetrics": {"@odata.id": f"{base}/EnvironmentMetrics"},
            "Sensors": {"@odata.id": f"{base}/Sensors"},
            "Power@Redfish.Deprecated": f"Please migrate to use {base}/PowerSubsystem",
            "Power": {"@odata.id": f"{base}/Power"},
            "Links": {"ComputerSystems": [{"@odata.id": "/redfish/v1/Systems/437XR1138R2"}]},
        },
    )

    def environment() -> dict[str, Any]:
        doc: dict[str, Any] = {
            "@odata.id": f"{base}/EnvironmentMetrics",
            "@odata.type": "#EnvironmentMetrics.v1_3_0.EnvironmentMetrics",
            "Name": "Chassis Environment Metrics",
            "TemperatureCelsius": {"Reading": 39, "DataSourceUri": f"{base}/Sensors/CPU1Temp"},
            "PowerWatts": {"Reading": bmc.watts(), "DataSourceUri": f"{base}/Sensors/TotalPower"},
        }
        if energy_in_environment:
            doc["EnergykWh"] = {
                "DataSourceUri": f"{base}/Sensors/TotalEnergy",
                "Reading": bmc.kwh(decimals=kwh_decimals),
                "LifetimeReading": bmc.kwh(decimals=kwh_decimals, lifetime_kwh=6491.0),
            }
        return doc

    bmc.add(f"{base}/EnvironmentMetrics", environment)
    bmc.add(
        f"{base}/PowerSubsystem",
        {
            "@odata.id": f"{base}/PowerSubsystem",
            "@odata.type": "#PowerSubsystem.v1_1_0.PowerSubsystem",
            "CapacityWatts": 4000,
            "PowerSupplies": {"@odata.id": f"{base}/PowerSubsystem/PowerSupplies"},
        },
    )
    _supplies(bmc, base, ("Bay1", "Bay2"), (0.55, 0.45))
    sensors = {
        "TotalPower": lambda: _sensor(base, "TotalPower", "Power", "W", bmc.watts(), "Chassis"),
        "TotalEnergy": lambda: _sensor(
            base, "TotalEnergy", "EnergykWh", "kW.h", bmc.kwh(decimals=kwh_decimals), "Chassis"
        ),
        "PS1Energy": lambda: _sensor(base, "PS1Energy", "EnergykWh", "kW.h", bmc.kwh(0.55), "PowerSupply"),
        "PS2Energy": lambda: _sensor(base, "PS2Energy", "EnergykWh", "kW.h", bmc.kwh(0.45), "PowerSupply"),
        "PS1InputPower": lambda: _sensor(base, "PS1InputPower", "Power", "W", bmc.watts(0.55), "PowerSupply"),
        "CPU1Temp": lambda: _sensor(base, "CPU1Temp", "Temperature", "Cel", 39, "CPU"),
        "CPU1Power": lambda: _sensor(base, "CPU1Power", "Power", "W", bmc.watts(0.1), "CPU"),
    }
    bmc.add(
        f"{base}/Sensors",
        {
            "@odata.id": f"{base}/Sensors",
            "@odata.type": "#SensorCollection.SensorCollection",
            "Members@odata.count": len(sensors),
            "Members": [{"@odata.id": f"{base}/Sensors/{name}"} for name in sensors],
        },
    )
    for name, build in sensors.items():
        bmc.add(f"{base}/Sensors/{name}", build)
    bmc.add(
        f"{base}/Power",
        lambda: {
            "@odata.id": f"{base}/Power",
            "@odata.type": "#Power.v1_7_1.Power",
            "PowerControl": [
                {"MemberId": "0", "Name": "System Input Power", "PowerConsumedWatts": bmc.watts()}
            ],
        },
    )


def psu_only(bmc: FakeBmc) -> None:
    """A chassis whose only figures are its two supplies' input power (PowerSubsystem)."""
    bmc.chassis_collection("1")
    base = "/redfish/v1/Chassis/1"
    bmc.add(
        base,
        {
            "@odata.id": base,
            "Id": "1",
            "ChassisType": "RackMount",
            "PowerSubsystem": {"@odata.id": f"{base}/PowerSubsystem"},
        },
    )
    bmc.add(
        f"{base}/PowerSubsystem", {"PowerSupplies": {"@odata.id": f"{base}/PowerSubsystem/PowerSupplies"}}
    )
    _supplies(bmc, base, ("0", "1", "2"), (0.6, 0.4, 0.0), absent=("2",))


def hpe_trailing_slash(bmc: FakeBmc) -> None:
    """HPE iLO shape: links end in "/", one chassis with the deprecated Power resource."""
    bmc.chassis_collection("1", trailing_slash=True)
    base = "/redfish/v1/Chassis/1/"
    bmc.add(
        base,
        {"@odata.id": base, "Id": "1", "ChassisType": "RackMount", "Power": {"@odata.id": f"{base}Power/"}},
    )
    bmc.add(
        f"{base}Power/",
        lambda: {
            "@odata.id": f"{base}Power/",
            "Id": "Power",
            "Name": "PowerMetrics",
            "Oem": {"Hpe": {"@odata.type": "#HpeServerPowerSupply.v2_0_0.HpeServerPowerSupply"}},
            "PowerControl": [
                {
                    "@odata.id": f"{base}Power/#PowerControl/0",
                    "MemberId": "0",
                    "PowerConsumedWatts": bmc.watts(),
                    "PowerCapacityWatts": 1600,
                    "PowerMetrics": {"AverageConsumedWatts": bmc.watts(), "IntervalInMin": 20},
                }
            ],
        },
    )


def hgx(bmc: FakeBmc) -> None:
    """NVIDIA HGX shape: host chassis (deprecated Power) + top-level HGX_Chassis_0 (hot-swap controllers)
    + HGX_GPU_SXM_1 contained in it with EnvironmentMetrics PowerWatts and EnergyJoules."""
    bmc.chassis_collection("BMC_0", "HGX_Chassis_0", "HGX_GPU_SXM_1", page_size=2)
    host = "/redfish/v1/Chassis/BMC_0"
    bmc.add(
        host,
        {
            "@odata.id": host,
            "Id": "BMC_0",
            "ChassisType": "RackMount",
            "Power": {"@odata.id": f"{host}/Power"},
        },
    )
    bmc.add(
        f"{host}/Power",
        lambda: {
            "@odata.id": f"{host}/Power",
            "PowerControl": [{"MemberId": "0", "PowerConsumedWatts": bmc.watts()}],
        },
    )
    hgx_base = "/redfish/v1/Chassis/HGX_Chassis_0"
    bmc.add(
        hgx_base,
        {
            "@odata.id": hgx_base,
            "Id": "HGX_Chassis_0",
            "ChassisType": "RackMount",
            "PowerSubsystem": {"@odata.id": f"{hgx_base}/PowerSubsystem"},
            "Links": {"Contains": [{"@odata.id": "/redfish/v1/Chassis/HGX_GPU_SXM_1"}]},
        },
    )
    bmc.add(
        f"{hgx_base}/PowerSubsystem",
        {"PowerSupplies": {"@odata.id": f"{hgx_base}/PowerSubsystem/PowerSupplies"}},
    )
    _supplies(bmc, hgx_base, ("HSC_0",), (0.7,))
    gpu = "/redfish/v1/Chassis/HGX_GPU_SXM_1"
    bmc.add(
        gpu,
        {
            "@odata.id": gpu,
            "Id": "HGX_GPU_SXM_1",
            "ChassisType": "Component",
            "EnvironmentMetrics": {"@odata.id": f"{gpu}/EnvironmentMetrics"},
            "Links": {"ContainedBy": {"@odata.id": hgx_base}},
        },
    )
    bmc.add(
        f"{gpu}/EnvironmentMetrics",
        lambda: {
            "PowerWatts": {"Reading": bmc.watts(0.09)},
            "EnergyJoules": {"Reading": bmc.profile.energy(bmc.elapsed()) * 0.09},
        },
    )


def _supplies(
    bmc: FakeBmc, base: str, bays: tuple[str, ...], shares: tuple[float, ...], absent: tuple[str, ...] = ()
) -> None:
    collection = f"{base}/PowerSubsystem/PowerSupplies"
    bmc.add(
        collection,
        {
            "@odata.id": collection,
            "@odata.type": "#PowerSupplyCollection.PowerSupplyCollection",
            "Members@odata.count": len(bays),
            "Members": [{"@odata.id": f"{collection}/{bay}"} for bay in bays],
        },
    )
    for bay, share in zip(bays, shares, strict=True):
        path = f"{collection}/{bay}"
        state = "Absent" if bay in absent else "Enabled"
        supply: dict[str, Any] = {
            "@odata.id": path,
            "@odata.type": "#PowerSupply.v1_5_0.PowerSupply",
            "Id": bay,
            "Name": f"Power Supply {bay}",
            "Status": {"State": state, "Health": "OK"},
            "PowerCapacityWatts": 3000,
        }
        if state != "Absent":
            supply["Metrics"] = {"@odata.id": f"{path}/Metrics"}
            bmc.add(
                f"{path}/Metrics",
                lambda share=share, path=path: {
                    "@odata.id": f"{path}/Metrics",
                    "@odata.type": "#PowerSupplyMetrics.v1_0_1.PowerSupplyMetrics",
                    "InputVoltage": {"Reading": 230.2},
                    "InputPowerWatts": {"Reading": bmc.watts(share)},
                    "OutputPowerWatts": {"Reading": bmc.watts(share * 0.94)},
                },
            )
        bmc.add(path, supply)


def _sensor(
    base: str, name: str, reading_type: str, units: str, reading: float, context: str
) -> dict[str, Any]:
    return {
        "@odata.id": f"{base}/Sensors/{name}",
        "@odata.type": "#Sensor.v1_6_0.Sensor",
        "Id": name,
        "Name": name,
        "ReadingType": reading_type,
        "ReadingUnits": units,
        "Reading": reading,
        "PhysicalContext": context,
        "Status": {"State": "Enabled", "Health": "OK"},
    }
