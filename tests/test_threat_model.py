"""docs/security.md's threat model holds: its NetworkPolicy selects the exporter, its limits are real."""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from exporter import connection_limit
from exporter.connection_limit import ConnectionLimiter
from exporter.web import _Server

ROOT = Path(__file__).resolve().parent.parent
SECURITY = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")


def network_policy() -> dict[str, object]:
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", SECURITY, re.S)]
    (policy,) = [b for b in blocks if isinstance(b, dict) and b.get("kind") == "NetworkPolicy"]
    return policy


def test_network_policy_is_valid_and_selects_the_exporter_port() -> None:
    policy = network_policy()
    kubernetes_validate.validate(policy, kubernetes_validate.latest_version(), strict=True)
    daemonset = yaml.safe_load((ROOT / "deploy/kubernetes/daemonset.yaml").read_text())
    pod = daemonset["spec"]["template"]
    spec = policy["spec"]
    assert isinstance(spec, dict)
    assert spec["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    ports = {p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", ())}
    assert [p["port"] for rule in spec["ingress"] for p in rule["ports"]] == [9877]
    assert 9877 in ports and policy["metadata"]["namespace"] == daemonset["metadata"]["namespace"]  # type: ignore[index]


def test_documented_limits_are_the_code_limits() -> None:
    table = {
        row.split("|")[1].strip(): row.split("|")[2].strip()
        for row in SECURITY.splitlines()
        if row.startswith("| ") and row.count("|") == 4
    }
    assert table["connections open at once"] == str(connection_limit.MAX_CONNECTIONS)
    assert (
        table["request headers (TLS handshake included)"]
        == f"{connection_limit.HEADER_TIMEOUT_S:g} s after connecting"
    )
    assert table["whole request"] == f"{connection_limit.REQUEST_TIMEOUT_S:g} s after connecting"
    assert table["pending connections in the kernel"] == f"{_Server.request_queue_size:,}"


def test_limit_warning_is_logged_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    limiter = ConnectionLimiter(max_connections=1, header_timeout_s=1000.0, clock=lambda: now[0])
    pairs = [socket.socketpair() for _ in range(5)]
    try:
        with caplog.at_level(logging.WARNING, logger="exporter.connection_limit"):
            for a, _ in pairs[:3]:
                assert limiter.admit(a)
            now[0] += 61
            for a, _ in pairs[3:]:
                assert limiter.admit(a)
        warnings = [r.getMessage() for r in caplog.records]
        assert len(warnings) == 2 and all("connection limit (1) reached" in w for w in warnings)
        assert limiter.evicted == 4 and limiter.open == 1
        # An evicted connection is shut down: its peer reads the end of the stream.
        pairs[0][1].settimeout(1)
        assert pairs[0][1].recv(1) == b""
    finally:
        for a, b in pairs:
            a.close()
            b.close()
