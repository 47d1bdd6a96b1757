"""HTTP serving: /metrics, a landing page, /healthz; TLS and basic auth in the exporter-toolkit format."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import socket
import ssl
import stat
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import bcrypt
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.connection_limit import ConnectionLimiter
from exporter.errors import ConfigError, shorten, shown
from exporter.exposition import render_text
from exporter.yaml_input import read_yaml

log = logging.getLogger(__name__)

TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
}
# Modular crypt format of bcrypt: $2a$, $2b$ or $2y$, a two-digit cost, then 22 characters of salt and
# 31 of hash in bcrypt's base64 alphabet.
_BCRYPT = re.compile(r"^\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{53}$")
BCRYPT_MAX_PASSWORD = 72  # bcrypt reads at most 72 bytes of a password
BCRYPT_SLOW_COST = 12  # above it a login takes over a second: warned at start


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash


def load_web_config(path: str | None) -> WebConfig:
    """Parse an exporter-toolkit web config file; ConfigError naming the key on any problem."""
    if not path:
        return WebConfig()
    key = "web.config.file"
    data = read_yaml(path, key)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(key, f"{shorten(path)} must hold a mapping")
    for k in data:
        if k not in ("tls_server_config", "basic_auth_users", "http_server_config"):
            raise ConfigError(f"{key}: {shorten(str(k), 60)}", "unknown setting")
    config = WebConfig()
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, Mapping):
        raise ConfigError(f"{key}: basic_auth_users", "must map user names to bcrypt hashes")
    for user, hashed in users.items():
        where = f"{key}: basic_auth_users.{shorten(str(user), 60)}"
        if not isinstance(user, str | int) or isinstance(user, bool) or ":" in str(user):
            raise ConfigError(
                where, "a user name is a string without ':' (basic auth splits at the first ':')"
            )
        config.users[str(user)] = _bcrypt_hash(hashed, where)
    costs = sorted({bcrypt_cost(h) for h in config.users.values()})
    if costs and costs[-1] > BCRYPT_SLOW_COST:
        # Each step doubles the work: cost 10 takes about 0.09 s on a 2-core machine (docs/security.md).
        seconds = 0.09 * 2 ** (costs[-1] - 10)
        log.warning(
            "basic_auth_users: bcrypt cost %d makes each first login and each failed one take about "
            "%s of CPU (cost 10: about 0.1 s); a cost of 10 to %d is enough",
            costs[-1],
            f"{seconds:.1f} s" if seconds < 3600 else f"{seconds / 3600:.0f} h",
            BCRYPT_SLOW_COST,
        )
    if len(costs) > 1:
        log.warning(
            "basic_auth_users use different bcrypt costs (%s): an unknown user name takes as long as "
            "the costliest, so names of cheaper users can be told apart by timing; use one cost",
            ", ".join(map(str, costs)),
        )
    _check_http_server_config(data.get("http_server_config"), key)
    tls = data.get("tls_server_config")
    if tls:
        config.ssl_context = _ssl_context(tls, key)
    return config


def bcrypt_cost(hashed: bytes) -> int:
    return int(hashed[4:6])


def _bcrypt_hash(hashed: Any, where: str) -> bytes:
    """The hash as bytes once it is known to be one bcrypt can check: at start, not at the first login."""
    if not isinstance(hashed, str) or not _BCRYPT.match(hashed):
        raise ConfigError(where, "must be a bcrypt hash ($2y$10$ then 53 characters)")
    cost = int(hashed[4:6])
    if not 4 <= cost <= 31:
        raise ConfigError(where, f"bcrypt cost {cost} is outside 4 to 31")
    # The same salt and hash at the lowest cost: bcrypt decodes them as it would at login, in a
    # millisecond whatever the configured cost.
    try:
        bcrypt.checkpw(b"", f"{hashed[:4]}04{hashed[6:]}".encode())
    except ValueError:
        raise ConfigError(where, "is not a valid bcrypt hash (its salt does not decode)") from None
    return hashed.encode()


def _check_http_server_config(raw: Any, key: str) -> None:
    """Accepted for compatibility with exporter-toolkit files; its settings do not apply to our server."""
    if raw is None:
        return
    where = f"{key}: http_server_config"
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "must be a mapping")
    for k, v in raw.items():
        if k == "http2":
            if not isinstance(v, bool):
                raise ConfigError(f"{where}.http2", f"must be true or false, got {shown(v)}")
        elif k == "headers":
            if v is not None and not isinstance(v, Mapping):
                raise ConfigError(f"{where}.headers", "must be a mapping")
        else:
            raise ConfigError(f"{where}.{shorten(str(k), 60)}", "unknown setting")


def _regular_file(tls: Mapping[str, Any], name: str, key: str) -> str:
    """A file name from tls_server_config that names a regular file (a FIFO or /dev/zero would hang)."""
    value = tls.get(name)
    where = f"{key}: tls_server_config.{name}"
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(where, f"must be a file name, got {shown(value)}")
    try:
        if not stat.S_ISREG(os.stat(value).st_mode):
            raise ConfigError(where, f"{shorten(value)} is not a regular file")
    except OSError as exc:
        raise ConfigError(where, f"cannot read {shorten(value)}: {exc.strerror or exc}") from None
    return value


def _no_password() -> bytes:
    # Without a callback OpenSSL asks for an encrypted key's passphrase on the terminal and waits.
    return b""


def _ssl_context(tls: Any, key: str) -> ssl.SSLContext:
    if not isinstance(tls, Mapping):
        raise ConfigError(f"{key}: tls_server_config", "must be a mapping")
    for k in tls:
        if k not in _TLS_KEYS:
            raise ConfigError(f"{key}: tls_server_config.{shorten(str(k), 60)}", "unknown setting")
    if not tls.get("cert_file") or not tls.get("key_file"):
        raise ConfigError(f"{key}: tls_server_config", "cert_file and key_file are both required")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for name, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if name in tls:
            version = tls[name]
            if not isinstance(version, str) or version not in _TLS_VERSIONS:
                raise ConfigError(f"{key}: tls_server_config.{name}", f"one of {', '.join(_TLS_VERSIONS)}")
            setattr(ctx, attr, _TLS_VERSIONS[version])
    if ctx.maximum_version != ssl.TLSVersion.MAXIMUM_SUPPORTED and ctx.maximum_version < ctx.minimum_version:
        raise ConfigError(f"{key}: tls_server_config.max_version", "is below min_version")
    cert_file = _regular_file(tls, "cert_file", key)
    key_file = _regular_file(tls, "key_file", key)
    try:
        ctx.load_cert_chain(cert_file, key_file, password=_no_password)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{key}: tls_server_config.cert_file",
            f"cannot load certificate and key: {shorten(str(exc), 120)}",
        ) from None
    auth_type = tls.get("client_auth_type", "NoClientCert")
    if not isinstance(auth_type, str) or auth_type not in _CLIENT_AUTH:
        raise ConfigError(f"{key}: tls_server_config.client_auth_type", f"one of {', '.join(_CLIENT_AUTH)}")
    if auth_type != "NoClientCert":
        if not tls.get("client_ca_file"):
            raise ConfigError(f"{key}: tls_server_config.client_ca_file", f"required with {auth_type}")
        ca = _regular_file(tls, "client_ca_file", key)
        try:
            ctx.load_verify_locations(ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{key}: tls_server_config.client_ca_file", f"cannot load: {shorten(str(exc), 120)}"
            ) from None
        ctx.verify_mode = _CLIENT_AUTH[auth_type]
    return ctx


class BasicAuth:
    """Checks credentials against bcrypt hashes, caching successes (bcrypt is slow by design)."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self.users = dict(users)
        self._ok: set[bytes] = set()
        self._lock = threading.Lock()
        self._cache_key = os.urandom(32)
        # An unknown user is checked against the costliest configured hash (and always refused), so it
        # takes as long as a known user with a wrong password: timing does not tell which names exist.
        self._dummy = max(self.users.values(), key=bcrypt_cost) if self.users else b""

    def check(self, header: str | None) -> bool:
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        # The cache key is a keyed digest of the whole credential: a cache hit proves the same pair passed.
        digest = hmac.new(self._cache_key, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            if hashed is not None and digest in self._ok:
                return True
        # bcrypt itself reads only the first 72 bytes; bcrypt 5 raises on longer passwords instead.
        secret = password.encode()[:BCRYPT_MAX_PASSWORD]
        try:
            ok = bcrypt.checkpw(secret, hashed if hashed is not None else self._dummy) and hashed is not None
        except ValueError:  # hashes are checked at start; this keeps a library surprise a plain 401
            ok = False
        if ok:
            with self._lock:
                self._ok.add(digest)
        return ok


_LANDING = """<!doctype html>
<html><head><meta charset="utf-8"><title>AI Footprint Exporter</title></head>
<body><h1>AI Footprint Exporter</h1><p>Version {version}.</p>
<ul><li><a href="{path}">Metrics</a></li><li><a href="/healthz">Health</a></li></ul>
<p>Energy and carbon footprint of AI workloads: GPU and CPU power, per-process attribution, grid carbon
intensity.</p></body></html>
"""


# An extra GET route: path -> a function giving (body, content type); built from memory, no I/O.
Route = Callable[[], tuple[bytes, str]]


def make_handler(
    registry: CollectorRegistry,
    telemetry_path: str,
    auth: BasicAuth,
    healthy: Callable[[], tuple[bool, str]],
    routes: Mapping[str, Route] | None = None,
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"footprint-exporter/{__version__}"
        sys_version = ""

        # Each read and write may wait this long for the client; ConnectionLimiter bounds the total.
        timeout = 10

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s %s", self.address_string(), format % args)

        def parse_request(self) -> bool:
            complete = super().parse_request()
            limiter = getattr(self.server, "limiter", None)
            if complete and limiter is not None:
                limiter.request_read(self.connection)
            return complete

        def _send(
            self,
            status: int,
            body: bytes,
            content_type: str = "text/plain; charset=utf-8",
            extra: Mapping[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                # Outside basic auth: the kubelet's probes and Docker's HEALTHCHECK cannot authenticate,
                # and the answer ("ok" or why not) reveals nothing about the node or its workloads.
                ok, reason = healthy()
                self._send(200 if ok else 503, (reason + "\n").encode())
                return
            if not auth.check(self.headers.get("Authorization")):
                self._send(
                    401, b"Unauthorized\n", extra={"WWW-Authenticate": 'Basic realm="footprint-exporter"'}
                )
                return
            if path == telemetry_path:
                # Always the text format, as node_exporter does by default: Prometheus accepts it,
                # and it is several times cheaper to produce than OpenMetrics through the generic encoder.
                self._send(200, render_text(registry), TEXT_FORMAT)
            elif path == "/":
                # The exporter gives its landing page (exporter.landing, from the snapshot) as the "/" route.
                body, content_type = (
                    routes["/"]()
                    if routes and "/" in routes
                    else (
                        _LANDING.format(version=__version__, path=telemetry_path).encode(),
                        "text/html; charset=utf-8",
                    )
                )
                self._send(200, body, content_type)
            elif routes and path in routes:
                body, content_type = routes[path]()
                self._send(200, body, content_type)
            else:
                self._send(404, b"Not Found\n")

    return Handler


class _Server(ThreadingHTTPServer):
    # Daemon threads: shutting down never waits for a client (a slow one would hold up the final save).
    daemon_threads = True
    # A burst of connections waits in the kernel rather than being dropped (a dropped SYN costs a client
    # a 1 s retransmit); ConnectionLimiter bounds what is accepted from it.
    request_queue_size = 1024

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        ssl_context: ssl.SSLContext | None,
        limiter: ConnectionLimiter,
    ) -> None:
        self.ssl_context = ssl_context
        self.limiter = limiter
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.limiter.admit(request):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.limiter.release(request)
            raise

    def shutdown_request(self, request: Any) -> None:
        self.limiter.release(request)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        # serve_forever calls this after every accept and at least twice a second.
        self.limiter.expire()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-response is routine; socketserver would print a traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("http: connection with %s failed: %s", client_address, exc)
        else:
            log.error("http: error serving %s: %s: %s", client_address, type(exc).__name__, exc)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            # The handshake runs in the request's own thread (see finish_request), not the accept loop,
            # so a slow or plain-HTTP client cannot stall other scrapes.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(10)
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake with %s failed: %s", client_address, exc)
                return
        super().finish_request(request, client_address)


def serve(
    host: str,
    port: int,
    registry: CollectorRegistry,
    web: WebConfig,
    telemetry_path: str = "/metrics",
    healthy: Callable[[], tuple[bool, str]] = lambda: (True, "ok"),
    limiter: ConnectionLimiter | None = None,
    routes: Mapping[str, Route] | None = None,
) -> ThreadingHTTPServer:
    """Bind and serve on a daemon thread; returns the server (``server_address`` has the real port)."""
    handler = make_handler(registry, telemetry_path, BasicAuth(web.users), healthy, routes)
    server = _Server((host or "0.0.0.0", port), handler, web.ssl_context, limiter or ConnectionLimiter())
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
