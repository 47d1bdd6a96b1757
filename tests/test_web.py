"""HTTP serving: paths, TLS and basic auth in the exporter-toolkit format, bad web configs."""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
import requests
import trustme
from prometheus_client import CollectorRegistry

from exporter.collector import SnapshotCollector
from exporter.connection_limit import ConnectionLimiter
from exporter.errors import ConfigError
from exporter.model import Snapshot
from exporter.web import BasicAuth, load_web_config, make_handler, serve

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


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("basic_auth_users:\n  u: $2y$10$short\n", "basic_auth_users.u", "bcrypt hash"),
        (f"basic_auth_users:\n  u: $2b$99${'a' * 53}\n", "basic_auth_users.u", "cost 99 is outside 4 to 31"),
        (f"basic_auth_users:\n  u: $2b$03${'a' * 53}\n", "basic_auth_users.u", "cost 3 is outside 4 to 31"),
        (
            f"basic_auth_users:\n  u: $2y$10${'a' * 21}/{'b' * 31}\n",
            "basic_auth_users.u",
            "salt does not decode",
        ),
        (f"basic_auth_users:\n  u: [$2y$10${'a' * 53}]\n", "basic_auth_users.u", "bcrypt hash"),
        ("basic_auth_users:\n  'a:b': x\n", "basic_auth_users.a:b", "without ':'"),
        ("basic_auth_users: [a]\n", "basic_auth_users", "must map"),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: [1]\n", "min_version", "TLS12"),
        ("tls_server_config:\n  cert_file: [1]\n  key_file: b\n", "tls_server_config.cert_file", "file name"),
        (
            "tls_server_config:\n  cert_file: /dev/zero\n  key_file: /dev/zero\n",
            "tls_server_config.cert_file",
            "not a regular file",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: {x: 1}\n",
            "tls_server_config.cert_file",
            "cannot read",
        ),
        ("http_server_config: 3\n", "http_server_config", "mapping"),
        ("http_server_config:\n  http2: maybe\n", "http_server_config.http2", "true or false"),
        ("http_server_config:\n  nope: 1\n", "http_server_config.nope", "unknown"),
        ("basic_auth_users: &a {}\n", "web.config.file", "anchors"),
        ("x: " + "[" * 5000 + "]" * 5000 + "\n", "web.config.file", "nested deeper"),
    ],
)
def test_bad_web_config_is_refused_at_start(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_web_config(str(path))
    assert info.value.key.endswith(key) and fragment in info.value.problem, info.value
    assert "\n" not in str(info.value)


def test_non_utf8_web_config_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_bytes(b"basic_auth_users:\n  \xffbob: x\n")
    with pytest.raises(ConfigError) as info:
        load_web_config(str(path))
    assert (
        info.value.key == "web.config.file" and "not UTF-8 text (byte 0xff at line 2)" in info.value.problem
    )


def test_encrypted_key_is_refused_without_asking_for_a_passphrase(
    tmp_path: Path, certs: tuple[trustme.CA, Path, Path, Path]
) -> None:
    from cryptography.hazmat.primitives import serialization

    _, cert_file, key_file, _ = certs
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config:\n  cert_file: {cert_file}\n  key_file: {locked}\n")
    with pytest.raises(ConfigError) as info:  # OpenSSL's default would prompt on the terminal and wait
        load_web_config(str(path))
    assert info.value.key.endswith("tls_server_config.cert_file")


def test_unknown_users_cost_what_a_wrong_password_costs(monkeypatch: pytest.MonkeyPatch) -> None:
    # Measured: unknown user 4 ms, known user with a wrong password 84 ms at cost 10 (dummy hash at cost 4).
    cost10 = bcrypt.hashpw(b"right", bcrypt.gensalt(10))
    cost12 = bcrypt.hashpw(b"other", bcrypt.gensalt(12))
    auth = BasicAuth({"prometheus": cost10, "ops": cost12})
    checked: list[bytes] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return hashed == cost10 and real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    assert not auth.check(basic("mallory", "x"))
    assert not auth.check(basic("ops", "x"))
    assert not auth.check(basic("prometheus", "wrong"))
    assert auth.check(basic("prometheus", "right"))
    # Unknown users run bcrypt against the costliest configured hash: as slow as any wrong password.
    assert checked[0] == cost12 and checked[1] == cost12 and checked[2] == cost10


def test_passwords_longer_than_72_bytes_are_a_401_not_a_traceback() -> None:
    long_password = "p" * 100
    hashed = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(4))
    auth = BasicAuth({"u": hashed})
    assert not auth.check(basic("u", "q" * 100))
    assert auth.check(basic("u", long_password))  # bcrypt's own rule: the first 72 bytes count
    server = serve("127.0.0.1", 0, registry(), load_web_config(None))
    server.RequestHandlerClass = make_handler(registry(), "/metrics", auth, lambda: (True, "ok"))
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        assert requests.get(url, auth=("u", "x" * 1000), timeout=5).status_code == 401
        assert requests.get(url, auth=("nobody", "x" * 1000), timeout=5).status_code == 401
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def limited() -> Iterator[tuple[str, ConnectionLimiter]]:
    limiter = ConnectionLimiter(max_connections=8, header_timeout_s=1.0, request_timeout_s=3.0)
    server = serve("127.0.0.1", 0, registry(), load_web_config(None), limiter=limiter)
    try:
        yield f"127.0.0.1:{server.server_address[1]}", limiter
    finally:
        server.shutdown()
        server.server_close()


def closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_idle_clients_holding_every_slot_do_not_stop_scrapes() -> None:
    # Header timeout far beyond the test's length: every silent client that goes, goes by eviction.
    limiter = ConnectionLimiter(max_connections=8, header_timeout_s=300.0, request_timeout_s=300.0)
    server = serve("127.0.0.1", 0, registry(), load_web_config(None), limiter=limiter)
    port = server.server_address[1]
    silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
    try:
        for _ in range(3):
            response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
            assert response.status_code == 200 and "footprint_build_info" in response.text
        # 53 admitted, 3 scrapes done and gone, at most 8 open: at least 42 silent ones were evicted.
        assert limiter.open <= 8 and limiter.evicted >= 42 and limiter.timed_out == 0
        assert closed_by_server(silent[0], 5)  # the oldest were closed to make room
        assert not closed_by_server(silent[-1], 0.2)  # the newest still wait for their request
    finally:
        for s in silent:
            s.close()
        server.shutdown()
        server.server_close()


def test_idle_and_slow_header_connections_time_out(limited: tuple[str, ConnectionLimiter]) -> None:
    address, limiter = limited
    host, port = address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as idle:
        assert closed_by_server(idle, 4)  # header timeout 1 s, checked twice a second
    with socket.create_connection((host, int(port)), timeout=5) as slow:
        # One byte every 0.3 s keeps every read short of the per-read timeout; the total still counts.
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 5 and not closed:
            try:
                slow.sendall(b"G")
            except OSError:
                closed = True
                break
            closed = closed_by_server(slow, 0.3)
        assert closed and time.monotonic() - started < 4
    assert limiter.timed_out >= 2 and limiter.open == 0


def test_busy_connections_are_never_evicted() -> None:
    release = threading.Event()
    entered = threading.Semaphore(0)

    def slow_health() -> tuple[bool, str]:
        entered.release()
        release.wait(10)
        return True, "ok"

    limiter = ConnectionLimiter(max_connections=2, header_timeout_s=5.0, request_timeout_s=10.0)
    server = serve("127.0.0.1", 0, registry(), load_web_config(None), healthy=slow_health, limiter=limiter)
    url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    results: list[int] = []
    workers = [
        threading.Thread(target=lambda: results.append(requests.get(url, timeout=10).status_code))
        for _ in range(2)
    ]
    try:
        for w in workers:
            w.start()
        assert entered.acquire(timeout=5) and entered.acquire(timeout=5)
        # Both slots answer requests: a third client is refused rather than one of them cut off.
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(url, timeout=5)
        assert limiter.refused == 1 and limiter.evicted == 0
        release.set()
        for w in workers:
            w.join(10)
        assert results == [200, 200]
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_server_close_does_not_wait_for_clients() -> None:
    # At SIGTERM the exporter closes its server before the final save: a client that sends nothing
    # must not hold that up until its header timeout.
    limiter = ConnectionLimiter(header_timeout_s=120.0, request_timeout_s=120.0)
    server = serve("127.0.0.1", 0, registry(), load_web_config(None), limiter=limiter)
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5):
        deadline = time.monotonic() + 5
        while limiter.open == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert limiter.open == 1
        closing = threading.Thread(target=lambda: (server.shutdown(), server.server_close()))
        closing.start()
        closing.join(5)  # the serving thread would wait 10 s (its read timeout) for us
        assert not closing.is_alive()


def _hash_at_cost(cost: int) -> str:
    """A valid bcrypt hash whose cost field says ``cost``, made at cost 4 (nothing here checks a password)."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    return f"{hashed[:4]}{cost:02d}{hashed[6:]}"


@pytest.mark.parametrize(
    ("costs", "warned"),
    [
        ((10,), []),
        ((12, 12), []),
        ((31,), ["bcrypt cost 31", "about 52 h"]),
        ((13,), ["bcrypt cost 13", "about 0.7 s"]),
        ((10, 11), ["different bcrypt costs (10, 11)"]),
    ],
)
def test_slow_or_mixed_bcrypt_costs_are_warned_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, costs: tuple[int, ...], warned: list[str]
) -> None:
    users = "".join(f"    user{i}: {_hash_at_cost(cost)}\n" for i, cost in enumerate(costs))
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users:\n" + users)
    with caplog.at_level("WARNING", logger="exporter.web"):
        config = load_web_config(str(path))
    assert len(config.users) == len(costs)  # accepted: a warning, not a refusal
    text = " ".join(r.getMessage() for r in caplog.records)
    assert all(fragment in text for fragment in warned), text
    if not warned:
        assert not caplog.records
