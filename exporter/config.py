"""Configuration: flags, FOOTPRINT_* environment variables and the YAML file, merged and validated."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import yaml

from exporter.durations import format_duration, parse_duration
from exporter.errors import ConfigError

ENV_PREFIX = "FOOTPRINT_"
# Sections of the YAML file that are structured (lists, nested objects) rather than flags.
STRUCTURED_SECTIONS = ("carbon",)


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    kind: str  # str, int, float, duration, bool, choice
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None

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
    Flag("source.gpu.simulated.count", "int", 4, "Number of simulated GPUs.", minimum=1),
    Flag("source.gpu.simulated.seed", "int", 0, "Seed of the simulated workload (same seed, same fleet)."),
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
    ),
    Flag(
        "source.node",
        "choice",
        "none",
        "Whole-node input power from the BMC: redfish, ipmi (DCMI through ipmitool) or none.",
        ("redfish", "ipmi", "none"),
    ),
    Flag("source.node.interval", "duration", 10.0, "How often the BMC is read (its own thread).", minimum=1),
    Flag(
        "source.node.timeout",
        "duration",
        5.0,
        "Longest wait for one Redfish request or one ipmitool run.",
        minimum=0.1,
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
    Flag("sample.interval", "duration", 1.0, "How often the sampler reads the hardware.", minimum=0.01),
    Flag("state.file", "str", None, "File where energy and emission totals are saved and restored from."),
    Flag("state.interval", "duration", 60.0, "How often the state file is saved.", minimum=1),
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
    ),
    Flag(
        "attribution.retention",
        "duration",
        600.0,
        "How long a finished process's series are kept so Prometheus sees their final value.",
        minimum=0,
    ),
    Flag("attribution.cpu", "bool", True, "Attribute CPU energy to processes by their CPU time."),
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
        # One line, as for every other configuration error.
        raise ConfigError("command line", message)


def _convert(flag: Flag, raw: Any, key: str) -> Any:
    """Turn a raw value (a YAML scalar or a string from env/flags) into the flag's type, or raise."""
    if raw is None:
        return None
    try:
        if flag.kind == "str":
            if not isinstance(raw, str):
                raise ValueError(f"expected a string, got {type(raw).__name__}")
            return raw
        if flag.kind == "choice":
            if raw not in flag.choices:
                raise ValueError(f"{raw!r} is not one of {', '.join(flag.choices)}")
            return raw
        if flag.kind == "duration":
            value: Any = parse_duration(raw)
        elif flag.kind == "bool":
            if isinstance(raw, bool):
                return raw
            low = str(raw).strip().lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError(f"expected true or false, got {raw!r}")
        elif flag.kind == "int":
            if isinstance(raw, bool | float):
                raise ValueError(f"expected an integer, got {raw!r}")
            value = int(raw)
        elif flag.kind == "float":
            if isinstance(raw, bool):
                raise ValueError(f"expected a number, got {raw!r}")
            value = float(raw)
        else:  # pragma: no cover - a programming error in FLAGS
            raise AssertionError(flag.kind)
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, str(exc)) from None
    if flag.minimum is not None and value < flag.minimum:
        shown = format_duration(flag.minimum) if flag.kind == "duration" else f"{flag.minimum:g}"
        raise ConfigError(key, f"must be at least {shown}, got {raw!r}")
    return value


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
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError("config.file", f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError("config.file", f"{path} is not valid YAML{at}") from None
    if data is None:
        return {}, None
    if not isinstance(data, Mapping):
        raise ConfigError("config.file", f"{path} must hold a mapping of settings")
    structured = {k: data[k] for k in STRUCTURED_SECTIONS if k in data}
    rest = {k: v for k, v in data.items() if k not in STRUCTURED_SECTIONS}
    values: dict[str, Any] = {}
    for key, raw in _flatten(rest).items():
        flag = FLAGS_BY_NAME.get(key)
        if flag is None or key == "config.file":
            raise ConfigError(key, f"unknown setting in {path}")
        values[key] = _convert(flag, raw, key)
    return values, structured.get("carbon")


SUBCOMMANDS = (
    ("record", "write a replay trace from this node's GPUs (NVML)"),
    ("budgets", "render or check the carbon-budget rules (budgets render | budgets check)"),
    ("report", "a period's footprint from Prometheus as CSV, JSON, Markdown or HTML"),
    ("validate-gpu", "measure NVML and the exporter on a real GPU"),
)


def _help_text(flag: Flag) -> str:
    # A flag whose help already says what happens when it is unset ("default: from the CPU model") gets no
    # second, misleading "default none".
    if flag.default_text is None and "(default" in flag.help:
        return f"{flag.help} (env {flag.env})"
    return f"{flag.help} (default {flag.default_text or 'none'}; env {flag.env})"


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
    if not path.startswith("/") or path in ("/", "/healthz"):
        raise ConfigError(
            "web.telemetry-path", f"must be an absolute path other than / and /healthz, got {path!r}"
        )
    parse_listen_address(values["web.listen-address"])


def _check_node(values: Mapping[str, Any]) -> None:
    if values["source.node"] == "redfish":
        url = values["source.node.redfish.url"]
        if not url:
            raise ConfigError("source.node.redfish.url", "required when --source.node=redfish")
        if not url.startswith("https://") or len(url) <= len("https://"):
            raise ConfigError(
                "source.node.redfish.url", f"must be an https:// URL (credentials go with it), got {url!r}"
            )
        if "@" in url.split("/")[2]:
            # Never echo it: the part before @ is a user name and maybe a password.
            raise ConfigError(
                "source.node.redfish.url",
                "must not carry credentials; use FOOTPRINT_REDFISH_USERNAME/_PASSWORD or the files",
            )
        if values["source.node.redfish.insecure-skip-verify"] and values["source.node.redfish.ca-file"]:
            raise ConfigError(
                "source.node.redfish.insecure-skip-verify", "contradicts --source.node.redfish.ca-file"
            )


def parse_listen_address(address: str) -> tuple[str, int]:
    """``:9877`` -> ("", 9877); ``127.0.0.1:9877``; ``[::1]:9877``."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError("web.listen-address", f"expected [host]:port, got {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)
