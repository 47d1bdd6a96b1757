"""Configuration: flags, FOOTPRINT_* environment variables and the YAML file, merged and validated."""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from exporter.attribution import MAX_NVML_SAMPLE_PERIOD_S
from exporter.durations import format_duration, parse_duration
from exporter.errors import ConfigError, shorten, shown
from exporter.yaml_input import read_yaml

ENV_PREFIX = "FOOTPRINT_"
# Sections of the YAML file that are structured (lists, nested objects) rather than flags.
STRUCTURED_SECTIONS = ("carbon",)
# Ceilings for any setting without bounds of its own: every number stays a finite float or an int
# that fits 64 bits, every text fits a path.
MAX_INT = 2**63 - 1
MAX_STR = 4096


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    kind: str  # str, int, float, duration, bool, choice
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    @property
    def default_text(self) -> str | None:
        """The default as a user would type it (``1s``, ``false``), or None when there is none."""
        if self.default is None:
            return None
        if self.kind == "duration":
            return format_duration(self.default)
        if self.kind == "bool":
            return str(self.default).lower()
        return str(self.default)

    def shown_bound(self, bound: float) -> str:
        return format_duration(bound) if self.kind == "duration" else f"{bound:g}"

    @property
    def bounds_text(self) -> str | None:
        """The accepted range as --help and the flag table give it (``10ms to 10m``), or None."""
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            return f"{self.shown_bound(low)} to {self.shown_bound(high)}"
        if low is not None:
            return f"at least {self.shown_bound(low)}"
        if high is not None:
            return f"at most {self.shown_bound(high)}"
        return None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.replace(".", "_").replace("-", "_").upper()


FLAGS: tuple[Flag, ...] = (
    Flag("config.file", "str", None, "YAML configuration file; every flag can also be set there."),
    Flag("web.listen-address", "str", ":9877", "Address to listen on for /metrics, / and /healthz."),
    Flag(
        "web.config.file",
        "str",
        None,
        "Web configuration (TLS, basic auth) in the Prometheus exporter-toolkit format.",
    ),
    Flag("web.telemetry-path", "str", "/metrics", "Path under which to serve metrics."),
    Flag(
        "source.gpu",
        "choice",
        "auto",
        "GPU source: auto (NVML if it loads, else none), nvml, simulated, replay, none.",
        ("auto", "nvml", "simulated", "replay", "none"),
    ),
    Flag("source.gpu.simulated.count", "int", 4, "Number of simulated GPUs.", minimum=1, maximum=1024),
    Flag(
        "source.gpu.simulated.seed",
        "int",
        0,
        "Seed of the simulated workload (same seed, same fleet).",
        minimum=0,
        maximum=MAX_INT,
    ),
    Flag("source.gpu.replay.file", "str", None, "Replay trace (JSON Lines) played by --source.gpu=replay."),
    Flag("source.gpu.replay.loop", "bool", False, "Loop the replay trace instead of stopping at its end."),
    Flag(
        "source.cpu",
        "choice",
        "auto",
        "CPU source: auto (RAPL if readable, else estimated), rapl, estimated, none.",
        ("auto", "rapl", "estimated", "none"),
    ),
    Flag(
        "source.cpu.tdp-watts",
        "float",
        None,
        "TDP per CPU socket in watts for the estimated CPU power (default: from the CPU model).",
        minimum=1,
        maximum=2000,
    ),
    Flag(
        "source.node",
        "choice",
        "none",
        "Whole-node input power from the BMC: redfish, ipmi (DCMI through ipmitool) or none.",
        ("redfish", "ipmi", "none"),
    ),
    Flag(
        "source.node.interval",
        "duration",
        10.0,
        "How often the BMC is read (its own thread).",
        minimum=1,
        maximum=3600.0,
    ),
    Flag(
        "source.node.timeout",
        "duration",
        5.0,
        "Longest wait for one Redfish request or one ipmitool run.",
        minimum=0.1,
        maximum=300.0,
    ),
    Flag(
        "source.node.redfish.url",
        "str",
        None,
        "Redfish service root, e.g. https://bmc.example/redfish/v1 (credentials from "
        "FOOTPRINT_REDFISH_USERNAME and FOOTPRINT_REDFISH_PASSWORD or the two files below).",
    ),
    Flag(
        "source.node.redfish.auth",
        "choice",
        "session",
        "Redfish authentication: session (X-Auth-Token, logged out at shutdown) or basic.",
        ("session", "basic"),
    ),
    Flag("source.node.redfish.username-file", "str", None, "File holding the Redfish user name."),
    Flag("source.node.redfish.password-file", "str", None, "File holding the Redfish password."),
    Flag("source.node.redfish.ca-file", "str", None, "CA bundle that signed the BMC's certificate."),
    Flag(
        "source.node.redfish.insecure-skip-verify",
        "bool",
        False,
        "Do not verify the BMC's certificate (self-signed BMC certificates; says so in the log).",
    ),
    Flag(
        "source.node.redfish.chassis",
        "str",
        None,
        "Comma-separated chassis Ids to read (default: every outermost chassis that reports power).",
    ),
    Flag("source.node.ipmi.path", "str", "ipmitool", "The ipmitool executable."),
    Flag(
        "source.node.ipmi.host",
        "str",
        None,
        "BMC address for IPMI over LAN (default: the local interface, /dev/ipmi0); user name from "
        "FOOTPRINT_IPMI_USERNAME or the file below, password from FOOTPRINT_IPMI_PASSWORD or the file below.",
    ),
    Flag("source.node.ipmi.interface", "choice", "lanplus", "ipmitool LAN interface.", ("lanplus", "lan")),
    Flag(
        "source.node.ipmi.privilege",
        "choice",
        "ADMINISTRATOR",
        "Session privilege ipmitool asks for over LAN (-L); ipmitool's default is ADMINISTRATOR, an "
        "account with less needs its own level here.",
        ("USER", "OPERATOR", "ADMINISTRATOR"),
    ),
    Flag("source.node.ipmi.username-file", "str", None, "File holding the IPMI user name."),
    Flag("source.node.ipmi.password-file", "str", None, "File holding the IPMI password (ipmitool -f)."),
    Flag("path.procfs", "str", "/proc", "procfs mount point (containers: the host's /proc mounted here)."),
    Flag("path.sysfs", "str", "/sys", "sysfs mount point (containers: the host's /sys mounted here)."),
    Flag(
        "sample.interval",
        "duration",
        1.0,
        "How often the sampler reads the hardware.",
        minimum=0.01,
        maximum=600.0,
    ),
    Flag(
        "state.file",
        "str",
        None,
        "File where totals are saved at shutdown and continued from at the next start (after a clean "
        "shutdown only).",
    ),
    Flag(
        "state.interval",
        "duration",
        60.0,
        "How often a checkpoint of the state file is written (never continued from: it shows early that "
        "the path stays writable).",
        minimum=1,
        maximum=86400.0,
    ),
    Flag(
        "attribution.policy",
        "choice",
        "proportional",
        "How GPU energy is split among processes: proportional (by SM utilisation) or idle-baseline "
        "(idle power kept apart as unattributed, the rest split).",
        ("proportional", "idle-baseline"),
    ),
    Flag(
        "attribution.idle-watts",
        "float",
        None,
        "Idle power per GPU for the idle-baseline policy (default: learned from idle periods).",
        minimum=0,
        maximum=2000,
    ),
    Flag(
        "attribution.group-by",
        "choice",
        "pid",
        "Level of the per-process series.",
        ("pid", "container", "pod", "slurm_job", "user"),
    ),
    Flag(
        "attribution.max-series",
        "int",
        500,
        'Most attributed series per GPU (and for CPU); the rest fold into comm="other".',
        minimum=1,
        maximum=100_000,
    ),
    Flag(
        "attribution.retention",
        "duration",
        600.0,
        "How long a finished process's series are kept so Prometheus sees their final value.",
        minimum=0,
        maximum=7 * 86400.0,
    ),
    Flag("attribution.cpu", "bool", True, "Attribute CPU energy to processes by their CPU time."),
    Flag(
        "attribution.cpu-idle",
        "choice",
        "unattributed",
        "CPU idle power (per package and DRAM domain): unattributed (kept at node level; only the "
        "active power above it is split by CPU time) or spread (split by CPU time too).",
        ("unattributed", "spread"),
    ),
    Flag(
        "attribution.cpu-package-idle-watts",
        "float",
        None,
        "Idle power of each CPU package (RAPL package domain) in watts (default: learned per package).",
        minimum=0,
        maximum=2000,
    ),
    Flag(
        "attribution.cpu-dram-idle-watts",
        "float",
        None,
        "Idle power of each DRAM domain in watts (default: learned per domain).",
        minimum=0,
        maximum=2000,
    ),
    Flag(
        "attribution.node-unmetered",
        "choice",
        "node",
        "The unmetered node energy (--source.node): node (kept at node level) or spread (also shared out "
        "to processes by their share of the GPU + CPU energy of each node interval, into separate "
        "footprint_process_node_unmetered_* counters).",
        ("node", "spread"),
    ),
    Flag(
        "attribution.nvml-sample-period",
        "duration",
        None,
        "NVML's per-process utilisation sampling period: the spacing of the driver's sampling moments, "
        "which tells GPU attribution which moments passed without a sample, i.e. idle (default: learned "
        "from NVML's sample timestamps, 1s until then).",
        minimum=0.01,
        maximum=MAX_NVML_SAMPLE_PERIOD_S,
    ),
    Flag(
        "kubernetes.node-name",
        "str",
        None,
        "This node's name; enables pod name and namespace lookup from the kubelet.",
    ),
    Flag(
        "kubernetes.kubelet-url",
        "str",
        None,
        "Kubelet API base URL (default https://<node-name>:10250 when --kubernetes.node-name is set).",
    ),
    Flag(
        "kubernetes.token-file",
        "str",
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "Bearer token file for the kubelet API.",
    ),
    Flag(
        "kubernetes.ca-file",
        "str",
        "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
        "CA bundle for the kubelet API.",
    ),
    Flag("log.level", "choice", "info", "Log level.", ("debug", "info", "warn", "error")),
    Flag("log.format", "choice", "logfmt", "Log format.", ("logfmt", "json")),
)
FLAGS_BY_NAME = {f.name: f for f in FLAGS}


@dataclass(frozen=True)
class Config:
    values: Mapping[str, Any]
    carbon_raw: Any  # the YAML `carbon:` section, parsed by exporter.carbon.config
    sources: Mapping[str, str]  # flag name -> where its value came from: default, file, env, flag

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as for every other configuration error; argparse quotes the bad argument whole.
        raise ConfigError("command line", shorten(message))


def _convert(flag: Flag, raw: Any, key: str) -> Any:
    """Turn a raw value (a YAML scalar or a string from env/flags) into the flag's type, or raise.

    Every value is checked against the flag's bounds and the general ceilings, so no setting can
    carry a number that overflows later (a 400-digit count, a NaN, a duration of a billion years).
    """
    if raw is None:
        return None
    try:
        if flag.kind == "str":
            if not isinstance(raw, str):
                raise ValueError(f"expected a string, got {type(raw).__name__}")
            if len(raw) > MAX_STR or "\0" in raw:
                raise ValueError(f"must be at most {MAX_STR} characters without NUL, got {shown(raw)}")
            return raw
        if flag.kind == "choice":
            if not isinstance(raw, str) or raw not in flag.choices:
                raise ValueError(f"{shown(raw)} is not one of {', '.join(flag.choices)}")
            return raw
        if flag.kind == "duration":
            value: Any = parse_duration(raw)
        elif flag.kind == "bool":
            if isinstance(raw, bool):
                return raw
            word = raw.strip().lower() if isinstance(raw, str) else None
            if word in ("true", "1", "yes"):
                return True
            if word in ("false", "0", "no"):
                return False
            raise ValueError(f"expected true or false, got {shown(raw)}")
        elif flag.kind == "int":
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise ValueError(f"expected an integer, got {shown(raw)}")
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"expected an integer, got {shown(raw)}") from None
        elif flag.kind == "float":
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise ValueError(f"expected a number, got {shown(raw)}")
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(f"expected a finite number, got {shown(raw)}")
        else:  # pragma: no cover - a programming error in FLAGS
            raise AssertionError(flag.kind)
    except (TypeError, ValueError, OverflowError) as exc:
        # OverflowError: float() of an integer with hundreds of digits.
        raise ConfigError(key, shorten(str(exc))) from None
    low, high = flag.minimum, flag.maximum
    if flag.kind == "int" and abs(value) > MAX_INT and high is None:
        raise ConfigError(key, f"expected an integer of at most 19 digits, got {shown(raw)}")
    if low is not None and value < low:
        raise ConfigError(
            key, f"must be at least {flag.shown_bound(low)} ({flag.bounds_text}), got {shown(raw)}"
        )
    if high is not None and value > high:
        raise ConfigError(
            key, f"must be at most {flag.shown_bound(high)} ({flag.bounds_text}), got {shown(raw)}"
        )
    return value


def convert_flag(name: str, raw: Any) -> Any:
    """A command-line value of flag ``name`` checked as the exporter checks it (for subcommands)."""
    return _convert(FLAGS_BY_NAME[name], raw, f"--{name}")


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{prefix}{key}", "keys must be strings")
        full = prefix + key
        if isinstance(value, Mapping) and full not in FLAGS_BY_NAME:
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


def load_file(path: str) -> tuple[dict[str, Any], Any]:
    """Flag values and the raw carbon section from a YAML file; ConfigError on any problem."""
    data = read_yaml(path, "config.file")
    if data is None:
        return {}, None
    if not isinstance(data, Mapping):
        raise ConfigError("config.file", f"{shorten(path)} must hold a mapping of settings")
    structured = {k: data[k] for k in STRUCTURED_SECTIONS if k in data}
    rest = {k: v for k, v in data.items() if k not in STRUCTURED_SECTIONS}
    values: dict[str, Any] = {}
    for key, raw in _flatten(rest).items():
        flag = FLAGS_BY_NAME.get(key)
        if flag is None or key == "config.file":
            raise ConfigError(key, f"unknown setting in {shorten(path)}")
        if raw is not None:  # "interval:" with no value leaves the setting at its default
            values[key] = _convert(flag, raw, key)
    return values, structured.get("carbon")


SUBCOMMANDS = (
    ("record", "write a replay trace from this node's GPUs (NVML)"),
    ("budgets", "render or check the carbon-budget rules (budgets render | budgets check)"),
    ("report", "a period's footprint from Prometheus as CSV, JSON, Markdown or HTML"),
    ("validate-gpu", "measure NVML and the exporter on a real GPU"),
)


def _help_text(flag: Flag) -> str:
    bounds = f"{flag.bounds_text}; " if flag.bounds_text else ""
    # A flag whose help already says what happens when it is unset ("default: from the CPU model") gets no
    # second, misleading "default none".
    if flag.default_text is None and "(default" in flag.help:
        return f"{flag.help} ({bounds}env {flag.env})"
    return f"{flag.help} ({bounds}default {flag.default_text or 'none'}; env {flag.env})"


def build_parser(prog: str = "footprint-exporter") -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Energy and carbon footprint of AI workloads, for Prometheus. "
        "Every flag can also be set in the --config.file YAML and as an environment variable "
        f"{ENV_PREFIX}<FLAG>.",
        epilog="subcommands (each has its own --help):\n"
        + "".join(f"  {prog} {name:<13} {text}\n" for name, text in SUBCOMMANDS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    for flag in FLAGS:
        help_text = _help_text(flag)
        if flag.kind == "bool":
            parser.add_argument(
                f"--{flag.name}",
                dest=flag.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                f"--{flag.name}",
                dest=flag.name,
                default=None,
                metavar="{" + ",".join(flag.choices) + "}" if flag.choices else flag.kind.upper(),
                help=help_text,
            )
    parser.add_argument("--version", action="store_true", help="Print the version and exit.")
    return parser


def load_config(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Config:
    """Defaults < file < environment < flags. Raises ConfigError on the first problem."""
    env = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(list(argv)))
    if args.pop("version", False):
        from exporter import __version__

        print(f"footprint-exporter {__version__} (python {sys.version.split()[0]})")
        raise SystemExit(0)
    from_flags = {
        name: _convert(FLAGS_BY_NAME[name], raw, f"--{name}") if not isinstance(raw, bool) else raw
        for name, raw in args.items()
        if raw is not None
    }
    from_env = {f.name: _convert(f, env[f.env], f.env) for f in FLAGS if f.env in env}
    config_path = str(from_flags.get("config.file") or from_env.get("config.file") or "")
    from_file: dict[str, Any] = {}
    carbon_raw: Any = None
    if config_path:
        from_file, carbon_raw = load_file(config_path)

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for flag in FLAGS:
        for origin, layer in (("flag", from_flags), ("env", from_env), ("file", from_file)):
            if flag.name in layer:
                values[flag.name], sources[flag.name] = layer[flag.name], origin
                break
        else:
            values[flag.name], sources[flag.name] = flag.default, "default"
    _check_combinations(values)
    return Config(values=values, carbon_raw=carbon_raw, sources=sources)


def _check_combinations(values: Mapping[str, Any]) -> None:
    if values["source.gpu"] == "replay" and not values["source.gpu.replay.file"]:
        raise ConfigError("source.gpu.replay.file", "required when --source.gpu=replay")
    _check_node(values)
    path = values["web.telemetry-path"]
    if not _URL_PATH.match(path) or path in ("/", "/healthz"):
        raise ConfigError(
            "web.telemetry-path",
            f"must be an absolute URL path (no spaces, ? or #) other than / and /healthz, got {shown(path)}",
        )
    parse_listen_address(values["web.listen-address"])


def _check_node(values: Mapping[str, Any]) -> None:
    if values["source.node"] == "redfish":
        url = values["source.node.redfish.url"]
        if not url:
            raise ConfigError("source.node.redfish.url", "required when --source.node=redfish")
        if "@" in url.split("://", 1)[-1].split("/")[0]:  # with or without a scheme
            # Never echo it: the part before @ is a user name and maybe a password.
            raise ConfigError(
                "source.node.redfish.url",
                "must not carry credentials; use FOOTPRINT_REDFISH_USERNAME/_PASSWORD or the files",
            )
        # Checked after the credentials, so that a URL with a user and password is never echoed.
        if not url.startswith("https://") or len(url) <= len("https://"):
            raise ConfigError(
                "source.node.redfish.url",
                f"must be an https:// URL (credentials go with it), got {shown(url)}",
            )
        if values["source.node.redfish.insecure-skip-verify"] and values["source.node.redfish.ca-file"]:
            raise ConfigError(
                "source.node.redfish.insecure-skip-verify", "contradicts --source.node.redfish.ca-file"
            )


_URL_PATH = re.compile(r"^/[!$-'*-.0-9;=@-Z_a-z~/]*$")  # RFC 3986 path characters, no ? or #
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def parse_listen_address(address: str) -> tuple[str, int]:
    """``:9877`` -> ("", 9877); ``127.0.0.1:9877``; ``[::1]:9877``; ``localhost:9877``."""
    host, sep, port_text = address.rpartition(":")
    # isascii: str.isdigit() also accepts superscripts and other scripts' digits, which int() refuses.
    if not sep or not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ConfigError("web.listen-address", f"expected [host]:port, got {shown(address)}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host and not _valid_host(host):
        raise ConfigError("web.listen-address", f"{shown(host)} is neither an IP address nor a host name")
    return host, int(port_text)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return len(host) <= 253 and all(_HOST_LABEL.match(label) for label in host.rstrip(".").split("."))
