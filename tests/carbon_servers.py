"""Local fake carbon intensity APIs for tests: scripted answers in the real services' response shapes."""

from __future__ import annotations

import base64
import calendar
import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    """One scripted answer. ``body``: JSON-serialisable, or str/bytes sent as they are."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (timeouts)
    # A slow body: one byte every ``drip`` seconds; ``endless`` then keeps sending blanks (valid JSON
    # whitespace) until the client gives up, as a stuck proxy or overloaded API does.
    drip: float = 0.0
    endless: bool = False
    # Send the status line, then drip one header byte at a time forever (requests cannot bound this).
    drip_headers: bool = False


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        value = self.headers.get("Authorization", "")
        if not value.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        return user, password


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler still sleeping on a delay must not hold up close()


class FakeApi:
    """A ThreadingHTTPServer on 127.0.0.1 answering scripted replies per path.

    ``script(path, reply, ...)`` queues replies for a path (a path ending in ``*`` matches by prefix);
    each request takes the next one and the last repeats. Unscripted paths answer 404.
    """

    def __init__(self) -> None:
        self._routes: dict[str, deque[Reply]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.requests: list[Seen] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                seen = Seen(parts.path, parse_qs(parts.query), dict(self.headers.items()))
                reply = api._take(seen)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drip_headers:
                    self._drip_headers(reply.drip or 1.0)
                    return
                if isinstance(reply.body, bytes):
                    data = reply.body
                elif isinstance(reply.body, str):
                    data = reply.body.encode()
                elif reply.body is None:
                    data = b""
                else:
                    data = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    if not reply.endless:  # an endless body runs until the connection closes
                        self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    if not reply.drip:
                        self.wfile.write(data)
                        return
                    for byte in data:
                        self.wfile.write(bytes([byte]))
                        if api._closing.wait(reply.drip):
                            return
                    while reply.endless and not api._closing.wait(reply.drip):
                        self.wfile.write(b" ")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def _drip_headers(self, every: float) -> None:
                try:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                    while not api._closing.wait(every):
                        self.wfile.write(b"x")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()

    def _take(self, seen: Seen) -> Reply:
        with self._lock:
            self.requests.append(seen)
            queue = self._routes.get(seen.path)
            if queue is None:
                prefixes = [k for k in self._routes if k.endswith("*") and seen.path.startswith(k[:-1])]
                queue = self._routes[max(prefixes, key=len)] if prefixes else None
            if queue is None:
                return Reply(404, {"error": {"code": "404 Not Found", "message": seen.path}})
            return queue.popleft() if len(queue) > 1 else queue[0]

    def script(self, path: str, *replies: Reply) -> None:
        with self._lock:
            self._routes[path] = deque(replies)

    def hits(self, path: str) -> list[Seen]:
        with self._lock:
            return [
                s
                for s in self.requests
                if s.path == path or (path.endswith("*") and s.path.startswith(path[:-1]))
            ]

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve() -> Iterator[FakeApi]:
    """For a pytest fixture: ``yield from serve()`` gives a started server and always closes it."""
    server = FakeApi()
    try:
        yield server
    finally:
        server.close()


# Response bodies in the shapes of shared/reference/carbon-apis.md.


def iso(epoch: float) -> str:
    """An API-style UTC time with milliseconds, as Electricity Maps writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))


def em_latest(
    value: float = 322,
    zone: str = "DE",
    when: str | None = "2026-05-21T10:00:00.000Z",
    basis: str = "lifecycle",
    estimated: bool = False,
) -> dict[str, Any]:
    """``/carbon-intensity/latest``: ``datetime`` is the start of the hour the value describes, published
    some minutes later (``updatedAt``); ``when=None`` leaves the field out."""
    body = {
        "zone": zone,
        "carbonIntensity": value,
        "datetime": when,
        "updatedAt": "2026-05-21T10:12:21.002Z",
        "createdAt": "2026-05-18T06:20:31.772Z",
        "emissionFactorType": basis,
        "isEstimated": estimated,
        "estimationMethod": "TIME_SLICER_AVERAGE" if estimated else None,
    }
    if when is None:
        del body["datetime"]
    return body


def em_forecast(points: list[tuple[str, float]], zone: str = "DE") -> dict[str, Any]:
    return {
        "zone": zone,
        "forecast": [{"carbonIntensity": v, "datetime": t} for t, v in points],
        "updatedAt": "2026-05-21T10:00:00.000Z",
    }


def wt_forecast(values: list[tuple[str, float]], units: str = "lbs_co2_per_mwh") -> dict[str, Any]:
    return {
        "data": [{"point_time": t, "value": v} for t, v in values],
        "meta": {
            "region": "CAISO_NORTH",
            "signal_type": "co2_moer",
            "units": units,
            "data_point_period_seconds": 300,
            "generated_at": "2026-05-01T00:00:00+00:00",
            "warnings": [],
        },
    }


def uk_intensity(
    forecast: float | None = 266, actual: float | None = 263, start: float | None = None
) -> dict[str, Any]:
    """``/intensity``: the half hour running at ``start`` (epoch s; default the one at NOW)."""
    begin = (NOW if start is None else start) // 1800 * 1800
    return {
        "data": [
            {
                "from": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(begin)),
                "to": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(begin + 1800)),
                "intensity": {"forecast": forecast, "actual": actual, "index": "moderate"},
            }
        ]
    }


def uk_fw24h(points: list[tuple[str, str, float]]) -> dict[str, Any]:
    return {
        "data": [
            {"from": f, "to": t, "intensity": {"forecast": v, "actual": None, "index": "low"}}
            for f, t, v in points
        ]
    }


def uk_regional(value: float = 180, region_id: int = 13) -> dict[str, Any]:
    return {
        "data": [
            {
                "regionid": region_id,
                "dnoregion": "UKPN London",
                "shortname": "London",
                "data": [
                    {
                        "from": "2026-05-21T10:00Z",
                        "to": "2026-05-21T10:30Z",
                        "intensity": {"forecast": value, "index": "moderate"},
                        "generationmix": [{"fuel": "gas", "perc": 43.6}],
                    }
                ],
            }
        ]
    }


def uk_regional_fw24h(points: list[tuple[str, str, float]], region_id: int = 13) -> dict[str, Any]:
    return {
        "data": {
            "regionid": region_id,
            "shortname": "London",
            "data": [
                {"from": f, "to": t, "intensity": {"forecast": v, "index": "low"}} for f, t, v in points
            ],
        }
    }


def casdk_bylocation(rows: list[tuple[str, float]], location: str = "eastus") -> list[dict[str, Any]]:
    return [{"location": location, "time": t, "rating": r, "duration": "00:05:00"} for t, r in rows]


def casdk_forecast(points: list[tuple[str, float]], location: str = "eastus") -> list[dict[str, Any]]:
    data = [{"location": location, "timestamp": t, "duration": 5, "value": v} for t, v in points]
    best = min(data, key=lambda d: d["value"]) if data else None
    return [
        {
            "generatedAt": "2026-05-17T20:40:00+00:00",
            "requestedAt": "2026-05-17T20:45:00+00:00",
            "location": location,
            "dataStartAt": points[0][0] if points else None,
            "dataEndAt": points[-1][0] if points else None,
            "windowSize": 5,
            "optimalDataPoints": [best] if best else [],
            "forecastData": data,
        }
    ]


# The fixed wall clock the carbon tests run at: 2026-05-21T10:05:00Z, inside the fake APIs' periods.
NOW = float(calendar.timegm((2026, 5, 21, 10, 5, 0, 0, 0, 0)))


def wait_until(predicate: Any, timeout: float = 30.0, every: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


class Clock:
    """A wall clock that moves only when a test sets ``now``."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
