"""HTTP GETs for carbon providers: a total deadline per request, bounded retries with backoff, error kinds."""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
from requests.adapters import HTTPAdapter

log = logging.getLogger(__name__)

ERROR_KINDS = (
    "timeout",
    "connection",
    "http_4xx",
    "http_429",
    "http_5xx",
    "malformed",
    "auth",
    "implausible",
    "basis",
)
# Never wait longer than this between two retries of one refresh, whatever the backoff setting.
MAX_BACKOFF_S = 30.0
# No provider answer is anywhere near this large; a bigger body is refused instead of filling memory.
MAX_BODY_BYTES = 4 * 1024 * 1024
_READ_CHUNK = 65536


class ProviderError(Exception):
    """A refresh failed. ``kind`` is one of ERROR_KINDS; ``not_before`` is a 429's Retry-After (epoch s)."""

    def __init__(self, kind: str, message: str, status: int | None = None, not_before: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.not_before = not_before


# The connection each thread's request runs on, so a request past its deadline can be cut off from
# another thread: requests bounds each socket read, not a server dripping its headers byte by byte.
_ACTIVE: dict[int, urllib3.connection.HTTPConnection] = {}
_ACTIVE_LOCK = threading.Lock()
# A request this far past its deadline has its socket shut down (the body loop normally ends it first).
ABORT_GRACE_S = 0.25


class _TrackedHTTPConnection(urllib3.connection.HTTPConnection):
    # urllib3's own signature, which already differs from http.client's (hence the ignore, as urllib3 has).
    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        chunked: bool = False,
        preload_content: bool = True,
        decode_content: bool = True,
        enforce_content_length: bool = True,
    ) -> None:
        with _ACTIVE_LOCK:
            _ACTIVE[threading.get_ident()] = self
        super().request(
            method,
            url,
            body,
            headers,
            chunked=chunked,
            preload_content=preload_content,
            decode_content=decode_content,
            enforce_content_length=enforce_content_length,
        )


class _TrackedHTTPSConnection(urllib3.connection.HTTPSConnection, _TrackedHTTPConnection):
    pass


class _TrackedPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


def track_deadlines(session: requests.Session) -> requests.Session:
    """Mount adapters whose connections a Fetcher can cut off at its deadline (headers included)."""
    adapter = HTTPAdapter()
    adapter.poolmanager.pool_classes_by_scheme = {"http": _TrackedPool, "https": _TrackedHTTPSPool}
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _abort(thread_id: int) -> None:
    """Shut down the socket of the request running on ``thread_id``: its blocked read returns at once."""
    with _ACTIVE_LOCK:
        connection = _ACTIVE.get(thread_id)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed: the request ended as the timer fired
            sock.shutdown(socket.SHUT_RDWR)


def host_of(url: str) -> str:
    """The host part of a URL: the only part of an address the exporter logs."""
    return urlsplit(url).hostname or "?"


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Epoch seconds before which no request may be made, from a Retry-After header (seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return now + float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


@dataclass
class Fetcher:
    """GETs JSON with one provider's deadline and retry policy; raises ProviderError, never anything else.

    ``timeout`` is a total deadline per request: connecting, the headers and the whole body must be
    done within it, so a server that drips its body byte by byte is cut off at the deadline (a per-read
    timeout alone would wait forever, as every byte resets it). ``in_flight_since`` (monotonic seconds)
    is set while a request runs, so the service can tell a request that has run past its deadline (in
    name resolution, or a server dripping its headers, which requests cannot bound) and call the
    provider down meanwhile.
    """

    session: requests.Session
    timeout: float
    retries: int = 2
    backoff: float = 1.0
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], object] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    monotonic: Callable[[], float] = time.monotonic
    in_flight_since: float | None = field(default=None, init=False)

    def get_json(
        self,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Any:
        """The decoded JSON body, or None for an empty 2xx answer (204)."""
        attempt = 0
        while True:
            try:
                return self._once(url, params, headers, auth)
            except ProviderError as exc:
                # Only transient failures are retried; a 4xx, a 429 or a bad body would fail again.
                if exc.kind not in ("timeout", "connection", "http_5xx") or attempt >= self.retries:
                    raise
                delay = min(MAX_BACKOFF_S, self.backoff * 2**attempt) * (0.5 + self.rng.random() / 2)
                log.debug("retrying %s after %s in %.2fs", host_of(url), exc.kind, delay)
                # ``sleep`` may be a stop event's wait, which returns True when the exporter stops.
                if self.sleep(delay) is True:
                    raise
                attempt += 1

    def _once(
        self,
        url: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        auth: tuple[str, str] | None,
    ) -> Any:
        started = self.monotonic()
        self.in_flight_since = started
        thread_id = threading.get_ident()
        timer = threading.Timer(self.timeout + ABORT_GRACE_S, _abort, args=(thread_id,))
        timer.daemon = True
        timer.start()
        try:
            return self._request(url, params, headers, auth, started + self.timeout)
        except ProviderError as exc:
            if exc.kind == "connection" and self.monotonic() - started >= self.timeout:
                # Cut off at the deadline (our own shutdown of the socket): a timeout, not a refusal.
                raise ProviderError(
                    "timeout", f"{host_of(url)}: no complete answer within {self.timeout:g}s"
                ) from None
            raise
        finally:
            timer.cancel()
            self.in_flight_since = None
            with _ACTIVE_LOCK:
                _ACTIVE.pop(thread_id, None)

    def _request(
        self,
        url: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        auth: tuple[str, str] | None,
        deadline: float,
    ) -> Any:
        host = host_of(url)
        try:
            response = self.session.get(
                url,
                params=dict(params or {}),
                headers={"Accept": "application/json", **(headers or {})},
                auth=auth,
                timeout=(self.timeout, self.timeout),
                # Credentials travel in headers; a redirect to another host must not carry them away.
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout:
            raise ProviderError("timeout", f"{host}: no answer within {self.timeout:g}s") from None
        except requests.RequestException as exc:
            raise ProviderError("connection", f"{host}: {type(exc).__name__}") from None
        with response:
            status = response.status_code
            if status in (401, 403):
                raise ProviderError("auth", f"{host}: HTTP {status}", status)
            if status == 429:
                not_before = parse_retry_after(response.headers.get("Retry-After"), self.clock())
                raise ProviderError("http_429", f"{host}: HTTP 429 (throttled)", status, not_before)
            if 300 <= status < 400:
                raise ProviderError("http_4xx", f"{host}: HTTP {status} redirect not followed", status)
            if 400 <= status < 500:
                raise ProviderError("http_4xx", f"{host}: HTTP {status}", status)
            if status >= 500:
                raise ProviderError("http_5xx", f"{host}: HTTP {status}", status)
            body = self._body(response, deadline, host)
            if status == 204 or not body.strip():
                return None
            try:
                return json.loads(body)
            except ValueError:
                raise ProviderError("malformed", f"{host}: body is not JSON", status) from None

    def _body(self, response: requests.Response, deadline: float, host: str) -> bytes:
        """The whole body, read in pieces with each socket wait bounded by the time left to the deadline."""
        raw = response.raw
        chunks: list[bytes] = []
        size = 0
        while True:
            left = deadline - self.monotonic()
            if left <= 0:
                raise ProviderError("timeout", f"{host}: body not complete within {self.timeout:g}s")
            sock = getattr(getattr(raw, "connection", None), "sock", None)
            if sock is not None:
                sock.settimeout(left)
            try:
                chunk = raw.read1(_READ_CHUNK)
            except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
                timed_out = isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError)
                kind = "timeout" if timed_out or self.monotonic() >= deadline else "connection"
                raise ProviderError(kind, f"{host}: body not read ({type(exc).__name__})") from None
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ProviderError("malformed", f"{host}: body larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
