"""``footprint-exporter report``: arguments, credentials, output; exit 2 on bad arguments, 1 on failure."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from exporter.durations import parse_duration
from exporter.report.collect import ReportBuilder, ReportSpec
from exporter.report.formats import iso, to_csv, to_json, to_markdown
from exporter.report.html import to_html
from exporter.report.model import Report
from exporter.report.prometheus_api import PrometheusApi, PrometheusError
from exporter.secrets import SecretUnavailable, read_secret_file

PROG = "footprint-exporter report"
FORMATS = ("csv", "json", "markdown", "html")
ENV_URL = "FOOTPRINT_PROMETHEUS_URL"
ENV_USERNAME = "FOOTPRINT_PROMETHEUS_USERNAME"
ENV_PASSWORD = "FOOTPRINT_PROMETHEUS_PASSWORD"
ENV_TOKEN = "FOOTPRINT_PROMETHEUS_TOKEN"
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


class ArgumentError(Exception):
    """A bad argument: the message starts with the flag's name."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ArgumentError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="The footprint of a period from the counters Prometheus stored: IT and facility energy, "
        "location- and market-based emissions, embodied emissions, water, energy per token, data coverage "
        "and quality notes, per value of a label. Columns and formulas: docs/report.md.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--prometheus.url",
        dest="url",
        metavar="URL",
        help=f"Base URL of Prometheus or a compatible API, e.g. http://localhost:9090 (env {ENV_URL}).",
    )
    parser.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        required=True,
        help="Start: RFC 3339 (2025-03-01T00:00:00Z), a date (UTC midnight), Unix seconds, or now-DURATION "
        "(now-30d).",
    )
    parser.add_argument("--to", dest="end", metavar="TIME", help="End, in the same forms (default now).")
    parser.add_argument(
        "--by",
        default="instance",
        metavar="LABEL",
        help="Label to group by: a workload label (namespace, pod, user, slurm_job_id, container_id, "
        "comm) or a node label (instance, cluster, ...) (default instance).",
    )
    parser.add_argument("--format", default="csv", choices=FORMATS, help="Output format (default csv).")
    parser.add_argument("--output", metavar="FILE", help="Write here instead of standard output.")
    parser.add_argument(
        "--match",
        default="",
        metavar="MATCHERS",
        help="Only series matching these PromQL label matchers, e.g. 'cluster=\"eu-1\"' (default all).",
    )
    parser.add_argument(
        "--prometheus.username",
        dest="username",
        metavar="NAME",
        help=f"Basic auth user (env {ENV_USERNAME}); the password from {ENV_PASSWORD} or "
        "--prometheus.password-file.",
    )
    parser.add_argument(
        "--prometheus.password-file", dest="password_file", metavar="FILE", help="Basic auth password file."
    )
    parser.add_argument(
        "--prometheus.token-file",
        dest="token_file",
        metavar="FILE",
        help=f"Bearer token file (or env {ENV_TOKEN}).",
    )
    parser.add_argument(
        "--prometheus.ca-file", dest="ca_file", metavar="FILE", help="CA bundle to verify HTTPS with."
    )
    parser.add_argument(
        "--prometheus.timeout",
        dest="timeout",
        default="2m",
        metavar="DURATION",
        help="Longest wait for one query (default 2m).",
    )
    return parser


def parse_time(text: str, flag: str, now: float | None = None) -> float:
    """RFC 3339 (with a zone), a date (midnight UTC), Unix seconds, ``now`` or ``now-7d`` -> Unix seconds."""
    value = text.strip()
    relative = re.fullmatch(r"now(?:-(\S+))?", value)
    if relative:
        current = time.time() if now is None else now
        try:
            return current - (parse_duration(relative.group(1)) if relative.group(1) else 0.0)
        except ValueError as exc:
            raise ArgumentError(f"{flag}: {exc}") from None
    try:
        return float(value) if re.fullmatch(r"-?\d+(\.\d+)?", value) else _rfc3339(value, flag)
    except OverflowError:
        raise ArgumentError(f"{flag}: {text!r} is out of range") from None


def _rfc3339(value: str, flag: str) -> float:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        value += "T00:00:00Z"
    try:
        parsed = dt.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ArgumentError(
            f"{flag}: {value!r} is neither RFC 3339 (2025-03-01T00:00:00Z), a date (2025-03-01) "
            "nor Unix seconds"
        ) from None
    if parsed.tzinfo is None:
        raise ArgumentError(
            f"{flag}: {value!r} has no time zone (add Z for UTC, or an offset such as +01:00)"
        )
    return parsed.timestamp()


def parse_match(text: str) -> str:
    """``{a="x", b=~"y"}`` or ``a="x"`` -> the matchers without braces, checked; '' for none."""
    inner = text.strip()
    if inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1]
    if not inner.strip():
        return ""
    pos, found = 0, []
    while pos < len(inner):
        m = _MATCHER.match(inner, pos)
        if not m or m.end() == pos:
            raise ArgumentError(
                f'--match: cannot read {inner[pos:]!r}: expected label="value", label=~"regex", ...'
            )
        found.append(f'{m.group(1)}{m.group(2)}"{m.group(3)}"')
        pos = m.end()
    return ", ".join(found)


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ArgumentError(f"--prometheus.url: {url!r} is not an http(s) URL such as http://localhost:9090")
    if parts.username or parts.password:
        raise ArgumentError(
            f"--prometheus.url: carries credentials; give them in {ENV_USERNAME}/{ENV_PASSWORD}, "
            "--prometheus.password-file or --prometheus.token-file instead (URLs end up in logs and reports)"
        )
    if parts.query or parts.fragment:
        raise ArgumentError("--prometheus.url: must be the base URL, without ?query or #fragment")
    return url.rstrip("/")


def _read_secret_file(path: str, flag: str) -> str:
    try:
        return read_secret_file(path, "secret")
    except SecretUnavailable as exc:
        raise ArgumentError(f"{flag}: {exc.detail}") from None


@dataclass(frozen=True)
class Invocation:
    api: PrometheusApi
    spec: ReportSpec
    format: str
    output: Path | None


def parse_args(argv: Sequence[str], environ: Mapping[str, str]) -> Invocation:
    args = build_parser().parse_args(list(argv))
    url = check_url(args.url or environ.get(ENV_URL, "") or _missing_url())
    now = time.time()
    start = parse_time(args.start, "--from", now)
    end = parse_time(args.end, "--to", now) if args.end else now
    if end <= start:
        raise ArgumentError(f"--to: {iso(end)} is not after --from {iso(start)}")
    if not _LABEL.fullmatch(args.by) or args.by.startswith("__"):
        raise ArgumentError(
            f"--by: {args.by!r} is not a label name (letters, digits and _, not starting with __)"
        )
    try:
        timeout = parse_duration(args.timeout)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"--prometheus.timeout: {exc}") from None
    if timeout <= 0:
        raise ArgumentError("--prometheus.timeout: must be positive")
    username = args.username or environ.get(ENV_USERNAME, "")
    token = environ.get(ENV_TOKEN, "").strip()
    if args.token_file:
        token = _read_secret_file(args.token_file, "--prometheus.token-file")
    basic: tuple[str, str] | None = None
    if username:
        password = environ.get(ENV_PASSWORD, "")
        if args.password_file:
            password = _read_secret_file(args.password_file, "--prometheus.password-file")
        if not password:
            raise ArgumentError(
                f"--prometheus.username: no password: set {ENV_PASSWORD} or give --prometheus.password-file"
            )
        basic = (username, password)
    elif args.password_file:
        raise ArgumentError(
            "--prometheus.password-file: needs --prometheus.username (or env " + ENV_USERNAME + ")"
        )
    if basic and token:
        raise ArgumentError("--prometheus.token-file: give basic auth or a bearer token, not both")
    if args.ca_file and not os.access(args.ca_file, os.R_OK):
        raise ArgumentError(f"--prometheus.ca-file: cannot read {args.ca_file}")
    output = Path(args.output) if args.output else None
    if output is not None and not output.parent.resolve().is_dir():
        raise ArgumentError(f"--output: folder {output.parent} does not exist")
    if output is not None and output.is_dir():
        raise ArgumentError(f"--output: {output} is a folder")
    api = PrometheusApi(
        url, basic_auth=basic, bearer_token=token or None, ca_file=args.ca_file, timeout_s=timeout
    )
    spec = ReportSpec(by=args.by, start=start, end=end, match=parse_match(args.match))
    return Invocation(api, spec, args.format, output)


def _missing_url() -> NoReturn:
    raise ArgumentError(f"--prometheus.url: required (or set {ENV_URL})")


RENDERERS = {"csv": to_csv, "json": to_json, "markdown": to_markdown, "html": to_html}


def render(report: Report, fmt: str) -> str:
    return RENDERERS[fmt](report)


def _write(output: Path, text: str) -> None:
    # Through a temporary file in the same folder: a failed run never leaves half a report behind.
    # (open() rather than mkstemp: the report gets the usual permissions under the umask, not 0600.)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def main(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    try:
        invocation = parse_args(argv, env)
    except ArgumentError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code) if isinstance(exc.code, int) else 0
    spec = invocation.spec
    try:
        report = ReportBuilder(invocation.api, spec).build(invocation.api.url)
    except PrometheusError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    if not report.rows:
        print(
            f"{PROG}: error: no footprint energy series in Prometheus between {iso(spec.start)} "
            f"and {iso(report.end)}" + (f" matching {{{spec.match}}}" if spec.match else ""),
            file=sys.stderr,
        )
        return 1
    text = render(report, invocation.format)
    if invocation.output is None:
        sys.stdout.write(text)
        return 0
    try:
        _write(invocation.output, text)
    except OSError as exc:
        print(
            f"{PROG}: error: --output: cannot write {invocation.output}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    warnings = sum(1 for n in report.notes if n.severity == "warning")
    print(
        f"wrote {invocation.output}: {len(report.rows)} rows by {spec.by}, {warnings} data-quality warnings",
        file=sys.stderr,
    )
    return 0
