"""HTTP serving: paths, TLS and basic auth in the exporter-toolkit format, bad web configs."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
import trustme
from prometheus_client import CollectorRegistry

from exporter.collector import SnapshotCollector
from exporter.errors import ConfigError
from exporter.model import Snapshot
from exporter.web import BasicAuth, load_web_config, serve

PASSWORD = "s3cret-pass"


def registry() -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: Snapshot(timestamp=0.0)))
    return reg


@pytest.fixture
def certs(tmp_path: Path) -> tuple[trustme.CA, Path, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, cert_file, key_file, ca_file


@pytest.fixture
def tls_server(tmp_path: Path, certs: tuple[trustme.CA, Path, Path, Path]) -> Iterator[tuple[str, Path]]:
    _, cert_file, key_file, ca_file = certs
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)
    web_file = tmp_path / "web.yml"
    web_file.write_text(
        f"tls_server_config:\n  cert_file: {cert_file}\n  key_file: {key_file}\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    server = serve("127.0.0.1", 0, registry(), load_web_config(str(web_file)))
    try:
        yield f"127.0.0.1:{server.server_address[1]}", ca_file
    finally:
        server.shutdown()
        server.server_close()


def test_paths_without_tls_or_auth() -> None:
    server = serve("127.0.0.1", 0, registry(), load_web_config(None))
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        metrics = requests.get(base + "/metrics", timeout=5)
        assert metrics.status_code == 200
        assert "footprint_build_info{" in metrics.text
        assert metrics.headers["Content-Type"].startswith("text/plain")
        assert "Metrics" in requests.get(base + "/", timeout=5).text
        assert requests.get(base + "/healthz", timeout=5).text == "ok\n"
        assert requests.get(base + "/nope", timeout=5).status_code == 404
        # Prometheus asks for OpenMetrics first; like node_exporter we answer in the text format.
        om = requests.get(base + "/metrics", headers={"Accept": "application/openmetrics-text"}, timeout=5)
        assert om.headers["Content-Type"].startswith("text/plain; version=0.0.4") and "# EOF" not in om.text
    finally:
        server.shutdown()
        server.server_close()


def test_tls_and_basic_auth(tls_server: tuple[str, Path]) -> None:
    address, ca_file = tls_server
    url = f"https://{address}/metrics"
    ok = requests.get(url, auth=("prometheus", PASSWORD), verify=str(ca_file), timeout=5)
    assert ok.status_code == 200 and "footprint_build_info" in ok.text
    wrong = requests.get(url, auth=("prometheus", "nope"), verify=str(ca_file), timeout=5)
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(url, auth=("mallory", PASSWORD), verify=str(ca_file), timeout=5).status_code == 401
    assert requests.get(url, verify=str(ca_file), timeout=5).status_code == 401
    # Every path is behind auth except the health check, which the kubelet's probes and Docker's
    # HEALTHCHECK ask without credentials; it answers with a status and nothing else.
    for path in ("/", "/metrics", "/metrics/", "/healthz/../metrics", "/nope"):
        assert requests.get(f"https://{address}{path}", verify=str(ca_file), timeout=5).status_code == 401
    health = requests.get(f"https://{address}/healthz", verify=str(ca_file), timeout=5)
    assert (health.status_code, health.text) == (200, "ok\n")
    assert "footprint_" not in health.text


def test_plain_http_to_tls_port_is_refused(tls_server: tuple[str, Path]) -> None:
    address, _ = tls_server
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://{address}/metrics", auth=("prometheus", PASSWORD), timeout=5)
    # The server survives it and still serves TLS clients.
    host, port = address.split(":")
    ctx = ssl.create_default_context(cafile=str(tls_server[1]))
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_client_certificates_required(tmp_path: Path, certs: tuple[trustme.CA, Path, Path, Path]) -> None:
    ca, cert_file, key_file, ca_file = certs
    web_file = tmp_path / "web.yml"
    web_file.write_text(
        f"tls_server_config:\n  cert_file: {cert_file}\n  key_file: {key_file}\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {ca_file}\n"
    )
    server = serve("127.0.0.1", 0, registry(), load_web_config(str(web_file)))
    url = f"https://127.0.0.1:{server.server_address[1]}/metrics"
    client = ca.issue_cert("client@example")
    client_pem = tmp_path / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(client_pem))
    try:
        assert requests.get(url, verify=str(ca_file), cert=str(client_pem), timeout=5).status_code == 200
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(url, verify=str(ca_file), timeout=5)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("basic_auth_users:\n  bob: plaintext\n", "basic_auth_users.bob"),
        (
            "tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n",
            "tls_server_config.cert_file",
        ),
        ("tls_server_config:\n  cert_file: a\n", "tls_server_config"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS99\n",
            "tls_server_config.min_version",
        ),
        ("tls_config:\n  x: 1\n", "tls_config"),
    ],
)
def test_bad_web_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_web_config(str(path))
    assert info.value.key.endswith(key)


def test_basic_auth_caches_only_successes() -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4))
    auth = BasicAuth({"u": hashed})
    import base64

    def header(user: str, pw: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()

    assert auth.check(header("u", "pw")) and auth.check(header("u", "pw"))
    assert not auth.check(header("u", "PW")) and not auth.check(header("u", "pw "))
    assert not auth.check("Basic !!notbase64") and not auth.check("Bearer x") and not auth.check(None)


def test_container_healthcheck_follows_the_env_port_over_http_and_tls(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from exporter import healthcheck

    address, _ = tls_server
    # TLS and basic auth on: the check still gets "ok" (HTTPS, /healthz needs no credentials).
    monkeypatch.setenv("FOOTPRINT_WEB_LISTEN_ADDRESS", address)
    assert healthcheck.main() == 0
    plain = serve("127.0.0.1", 0, registry(), load_web_config(None), healthy=lambda: (False, "stalled"))
    try:
        port = plain.server_address[1]
        monkeypatch.setenv("FOOTPRINT_WEB_LISTEN_ADDRESS", f":{port}")  # all addresses: asks 127.0.0.1
        assert healthcheck.main() == 1  # 503 from a stalled sampler
    finally:
        plain.shutdown()
        plain.server_close()
    monkeypatch.setenv("FOOTPRINT_WEB_LISTEN_ADDRESS", f"127.0.0.1:{port}")  # nothing listens now
    assert healthcheck.main() == 1
