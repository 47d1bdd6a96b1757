"""HTTP serving: /metrics, a landing page, /healthz; TLS and basic auth in the exporter-toolkit format."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import bcrypt
import yaml
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.errors import ConfigError
from exporter.exposition import render_text

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


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash


def load_web_config(path: str | None) -> WebConfig:
    """Parse an exporter-toolkit web config file; ConfigError naming the key on any problem."""
    if not path:
        return WebConfig()
    key = "web.config.file"
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError:
        raise ConfigError(key, f"{path} is not valid YAML") from None
    if not isinstance(data, Mapping):
        raise ConfigError(key, f"{path} must hold a mapping")
    for k in data:
        if k not in ("tls_server_config", "basic_auth_users", "http_server_config"):
            raise ConfigError(f"{key}: {k}", "unknown setting")
    config = WebConfig()
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, Mapping):
        raise ConfigError(f"{key}: basic_auth_users", "must map user names to bcrypt hashes")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"{key}: basic_auth_users.{user}", "must be a bcrypt hash ($2y$..., $2b$...)")
        config.users[str(user)] = hashed.encode()
    tls = data.get("tls_server_config")
    if tls:
        config.ssl_context = _ssl_context(tls, key)
    return config


def _ssl_context(tls: Any, key: str) -> ssl.SSLContext:
    if not isinstance(tls, Mapping):
        raise ConfigError(f"{key}: tls_server_config", "must be a mapping")
    for k in tls:
        if k not in _TLS_KEYS:
            raise ConfigError(f"{key}: tls_server_config.{k}", "unknown setting")
    if not tls.get("cert_file") or not tls.get("key_file"):
        raise ConfigError(f"{key}: tls_server_config", "cert_file and key_file are both required")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for name, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if name in tls:
            if tls[name] not in _TLS_VERSIONS:
                raise ConfigError(f"{key}: tls_server_config.{name}", f"one of {', '.join(_TLS_VERSIONS)}")
            setattr(ctx, attr, _TLS_VERSIONS[tls[name]])
    try:
        ctx.load_cert_chain(tls["cert_file"], tls["key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"{key}: tls_server_config.cert_file", f"cannot load certificate and key: {exc}"
        ) from None
    auth_type = tls.get("client_auth_type", "NoClientCert")
    if auth_type not in _CLIENT_AUTH:
        raise ConfigError(f"{key}: tls_server_config.client_auth_type", f"one of {', '.join(_CLIENT_AUTH)}")
    if auth_type != "NoClientCert":
        ca = tls.get("client_ca_file")
        if not ca:
            raise ConfigError(f"{key}: tls_server_config.client_ca_file", f"required with {auth_type}")
        try:
            ctx.load_verify_locations(ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{key}: tls_server_config.client_ca_file", f"cannot load: {exc}") from None
        ctx.verify_mode = _CLIENT_AUTH[auth_type]
    return ctx


class BasicAuth:
    """Checks credentials against bcrypt hashes, caching successes (bcrypt is slow by design)."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self.users = dict(users)
        self._ok: set[bytes] = set()
        self._lock = threading.Lock()
        self._dummy = bcrypt.hashpw(b"x", bcrypt.gensalt(4))

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
        digest = hmac.new(self._dummy, f"{user}\0{password}".encode(), hashlib.sha256).digest()
        with self._lock:
            if hashed is not None and digest in self._ok:
                return True
        # Unknown users still pay for a bcrypt check so timing does not reveal which names exist.
        ok = (
            bcrypt.checkpw(password.encode(), hashed if hashed is not None else self._dummy)
            and hashed is not None
        )
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


def make_handler(
    registry: CollectorRegistry,
    telemetry_path: str,
    auth: BasicAuth,
    healthy: Callable[[], tuple[bool, str]],
    landing: Callable[[], bytes] | None = None,
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"footprint-exporter/{__version__}"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s %s", self.address_string(), format % args)

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
            if not auth.check(self.headers.get("Authorization")):
                self._send(
                    401, b"Unauthorized\n", extra={"WWW-Authenticate": 'Basic realm="footprint-exporter"'}
                )
                return
            path = self.path.split("?", 1)[0]
            if path == telemetry_path:
                # Always the text format, as node_exporter does by default: Prometheus accepts it,
                # and it is several times cheaper to produce than OpenMetrics through the generic encoder.
                self._send(200, render_text(registry), TEXT_FORMAT)
            elif path == "/":
                # The page is rendered from the latest snapshot (exporter.landing): no I/O, like a scrape.
                body = (
                    landing()
                    if landing
                    else _LANDING.format(version=__version__, path=telemetry_path).encode()
                )
                self._send(200, body, "text/html; charset=utf-8")
            elif path == "/healthz":
                ok, reason = healthy()
                self._send(200 if ok else 503, (reason + "\n").encode())
            else:
                self._send(404, b"Not Found\n")

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.ssl_context = ssl_context
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

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
    landing: Callable[[], bytes] | None = None,
) -> ThreadingHTTPServer:
    """Bind and serve on a daemon thread; returns the server (``server_address`` has the real port)."""
    handler = make_handler(registry, telemetry_path, BasicAuth(web.users), healthy, landing)
    server = _Server((host or "0.0.0.0", port), handler, web.ssl_context)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
