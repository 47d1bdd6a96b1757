"""footprint_http_connections_rejected_total: connections the HTTP bounds closed or refused, by reason,
counted exactly, in a server of its own and in the running exporter."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import requests
from prometheus_client import CollectorRegistry

from exporter.collector import ConnectionLimitCollector, SnapshotCollector
from exporter.connection_limit import ConnectionLimiter
from exporter.model import Snapshot
from exporter.web import load_web_config, serve
from tests.exporter_proc import start_exporter
from tests.metrics_text import parse, select

NAME = "footprint_http_connections_rejected_total"


def rejected(text: str) -> dict[str, float]:
    return {dict(labels)["reason"]: value for labels, value in select(parse(text), NAME).items()}


@contextmanager
def server(
    limiter: ConnectionLimiter, healthy: Callable[[], tuple[bool, str]] = lambda: (True, "ok")
) -> Iterator[str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: Snapshot(timestamp=0.0)))
    registry.register(ConnectionLimitCollector(limiter.rejected))
    httpd = serve("127.0.0.1", 0, registry, load_web_config(None), healthy=healthy, limiter=limiter)
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_every_reason_is_served_from_zero() -> None:
    with server(ConnectionLimiter()) as url:
        assert rejected(requests.get(url + "/metrics", timeout=5).text) == {
            "evicted": 0.0,
            "refused": 0.0,
            "timeout": 0.0,
        }


def test_evictions_are_counted_exactly() -> None:
    limiter = ConnectionLimiter(max_connections=8, header_timeout_s=300.0, request_timeout_s=300.0)
    with server(limiter) as url:
        port = int(url.rsplit(":", 1)[1])
        silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
        try:
            wait_for(lambda: limiter.evicted == 42)  # 50 admitted into 8 slots
            # The scrape's own connection finds the 8 slots taken by silent clients and evicts one more.
            assert rejected(requests.get(url + "/metrics", timeout=5).text) == {
                "evicted": 43.0,
                "refused": 0.0,
                "timeout": 0.0,
            }
        finally:
            for s in silent:
                s.close()


class HeldHealth:
    """A /healthz that holds every request until released: each one keeps its slot, busy answering."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(self) -> tuple[bool, str]:
        self.entered.release()
        self.release.wait(10)
        return True, "ok"


def test_refusals_and_timeouts_are_counted_exactly() -> None:
    held = HeldHealth()
    limiter = ConnectionLimiter(max_connections=2, header_timeout_s=1.0, request_timeout_s=10.0)
    with server(limiter, held) as url:
        get = {"url": url + "/healthz", "timeout": 10}
        busy = [threading.Thread(target=requests.get, kwargs=get) for _ in range(2)]
        for w in busy:
            w.start()
        try:
            assert all(held.entered.acquire(timeout=5) for _ in busy)
            for _ in range(3):  # both slots answer requests: three clients refused
                with pytest.raises(requests.exceptions.ConnectionError):
                    requests.get(url + "/metrics", timeout=5)
        finally:
            held.release.set()
            for w in busy:
                w.join(10)
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
            idle.settimeout(5)
            assert idle.recv(1) == b""  # closed after its 1 s header timeout
        assert rejected(requests.get(url + "/metrics", timeout=5).text) == {
            "evicted": 0.0,
            "refused": 3.0,
            "timeout": 1.0,
        }


def test_the_running_exporter_serves_its_connection_bounds() -> None:
    exporter = start_exporter(["--source.gpu=simulated", "--source.cpu=none"])
    silent: list[socket.socket] = []
    try:
        before = rejected(exporter.metrics())
        assert before == {"evicted": 0.0, "refused": 0.0, "timeout": 0.0}
        # 70 silent clients into the exporter's 64 slots: 6 evicted, and the scrape's own connection
        # evicts a seventh (the 10 s header timeout is far off).
        silent = [socket.create_connection(("127.0.0.1", exporter.port), timeout=5) for _ in range(70)]
        assert rejected(exporter.metrics())["evicted"] == 7.0
    finally:
        for s in silent:
            s.close()
        code, log = exporter.stop()
    assert code == 0 and "Traceback" not in log
