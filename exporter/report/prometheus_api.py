"""A small client for Prometheus' HTTP query API (instant and range queries), basic auth, bearer, TLS."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests

from exporter import __version__

Labels = dict[str, str]


class PrometheusError(Exception):
    """Prometheus could not be asked or answered with an error; the message is one line, with no secret."""


@dataclass(frozen=True, slots=True)
class Sample:
    labels: Labels
    value: float


@dataclass(frozen=True, slots=True)
class Series:
    labels: Labels
    points: tuple[tuple[float, float], ...]  # (unix seconds, value)


def _float(text: Any) -> float:
    # Prometheus sends values as strings, "NaN" and "+Inf" included; the report treats those as absent.
    value = float(text)
    return value if math.isfinite(value) else math.nan


class PrometheusApi:
    """``/api/v1/query`` and ``/api/v1/query_range`` of one Prometheus (or a compatible store).

    Requests are POSTed as forms, as Prometheus' own UI does, so long PromQL is never cut by a URL length
    limit. Each request has its own timeout; the answer's ``status`` and ``error`` are checked.
    """

    def __init__(
        self,
        url: str,
        *,
        basic_auth: tuple[str, str] | None = None,
        bearer_token: str | None = None,
        ca_file: str | None = None,
        timeout_s: float = 120.0,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = f"footprint-exporter-report/{__version__}"
        if basic_auth is not None:
            self.session.auth = basic_auth
        if bearer_token is not None:
            self.session.headers["Authorization"] = f"Bearer {bearer_token}"
        # Passed with every request: a session-level verify loses to REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in
        # the environment (requests merges those over it), which would silently ignore --prometheus.ca-file.
        self.verify: str | bool = ca_file if ca_file is not None else True
        self.requests_made = 0

    def _post(self, path: str, form: Mapping[str, str]) -> Any:
        self.requests_made += 1
        try:
            resp = self.session.post(
                self.url + path, data=dict(form), timeout=self.timeout_s, verify=self.verify
            )
        except requests.exceptions.SSLError as exc:
            raise PrometheusError(f"TLS to {self.url} failed: {_reason(exc)}") from None
        except requests.Timeout:
            raise PrometheusError(f"{self.url} did not answer within {self.timeout_s:g}s") from None
        except requests.RequestException as exc:
            raise PrometheusError(f"cannot reach Prometheus at {self.url}: {_reason(exc)}") from None
        if resp.status_code in (401, 403):
            raise PrometheusError(
                f"Prometheus at {self.url} refused the credentials (HTTP {resp.status_code})"
            )
        try:
            body = resp.json()
        except ValueError:
            raise PrometheusError(
                f"{self.url}{path} answered HTTP {resp.status_code} without a Prometheus API body "
                "(is --prometheus.url the server's base URL?)"
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise PrometheusError(
                f"Prometheus at {self.url} answered HTTP {resp.status_code}: {error or 'no result'}"
            )
        data = body.get("data")
        if not isinstance(data, dict):
            raise PrometheusError(f"Prometheus at {self.url} answered without data")
        return data

    def query(self, promql: str, at: float) -> list[Sample]:
        """An instant query evaluated at ``at``; an instant vector (or a scalar, as one unlabelled sample)."""
        data = self._post("/api/v1/query", {"query": promql, "time": _ts(at)})
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            return [Sample({}, _float(result[1]))]
        if kind != "vector" or not isinstance(result, list):
            raise PrometheusError(f"query {promql!r} gave a {kind}, not an instant vector")
        return [Sample(dict(item["metric"]), _float(item["value"][1])) for item in result]

    def query_range(self, promql: str, start: float, end: float, step_s: float) -> list[Series]:
        """A range query: a point per step from ``start`` to ``end`` (inclusive) where there is a value."""
        data = self._post(
            "/api/v1/query_range",
            {"query": promql, "start": _ts(start), "end": _ts(end), "step": f"{step_s:g}"},
        )
        result = data.get("result")
        if data.get("resultType") != "matrix" or not isinstance(result, list):
            raise PrometheusError(f"range query {promql!r} did not give a matrix")
        return [
            Series(dict(item["metric"]), tuple((float(t), _float(v)) for t, v in item["values"]))
            for item in result
        ]


def _ts(t: float) -> str:
    return f"{t:.3f}"


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests error, short (requests nests urllib3 errors several deep)."""
    seen = exc
    while seen.__context__ is not None and seen.__context__ is not seen:
        seen = seen.__context__
    for candidate in (seen, exc):
        text = re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(candidate)).strip()
        if text:
            # urllib3 messages carry the object's repr first; the part after the last colon is the reason.
            short = text.rsplit(": ", 1)[-1].strip("()'\" ")
            return short or text
    return type(exc).__name__
