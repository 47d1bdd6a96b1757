"""The ``footprint-exporter`` command: configuration, start-up in a safe order, serving, graceful shutdown."""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from exporter.carbon.config import CarbonConfig, parse_carbon_config
from exporter.collector import ConnectionLimitCollector, SnapshotCollector
from exporter.config import Config, load_config, parse_listen_address
from exporter.connection_limit import ConnectionLimiter
from exporter.errors import ConfigError
from exporter.landing import render_landing
from exporter.podidentity import PodIdentity, build_pod_identity
from exporter.sampler import PROCESS_STATE_KEYS, Attribution, Sampler
from exporter.sources import CpuSource, GpuSource, NodeSource, SourceUnavailable
from exporter.sources.pci import count_nvidia_gpus
from exporter.state import StateFile, continue_totals, save_fitting
from exporter.web import WebConfig, load_web_config, serve

if TYPE_CHECKING:
    from exporter.carbon.service import CarbonService
    from exporter.node_power import NodePoller

log = logging.getLogger("footprint")
PROG = "footprint-exporter"


def _logfmt_value(text: str) -> str:
    """A quoted logfmt value: backslashes, quotes and line breaks escaped, so one record is one line."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _exception_text(record: logging.LogRecord) -> str | None:
    """``Type: message`` of the exception a record carries, or None."""
    if not record.exc_info or record.exc_info[1] is None:
        return None
    exc = record.exc_info[1]
    return f"{type(exc).__name__}: {exc}"


class _LogfmtFormatter(logging.Formatter):
    """``ts=... level=... logger=... msg="..."``, plus ``err="Type: message"`` when the record carries an
    exception and, with ``traceback`` (log level debug), ``stack="..."``: every failure keeps its cause."""

    def __init__(self, traceback: bool = False) -> None:
        super().__init__()
        self.traceback = traceback

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        level = record.levelname.lower()
        line = (
            f"ts={ts}.{int(record.msecs):03d}Z level={level} logger={record.name} "
            f"msg={_logfmt_value(record.getMessage())}"
        )
        err = _exception_text(record)
        if err is not None:
            line += f" err={_logfmt_value(err)}"
            if self.traceback and record.exc_info:
                line += f" stack={_logfmt_value(self.formatException(record.exc_info))}"
        return line


class _JsonFormatter(logging.Formatter):
    """One JSON object per record; a record with an exception adds ``err`` and ``traceback``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        err = _exception_text(record)
        if err is not None and record.exc_info:
            entry["err"] = err
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    numeric = {"warn": logging.WARNING}.get(level, getattr(logging, level.upper(), logging.INFO))
    debug = numeric <= logging.DEBUG
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _LogfmtFormatter(traceback=debug))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # urllib3 logs full URLs at debug level; keep it quiet so no query parameter ever reaches the log.
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def build_gpu_source(cfg: Config) -> GpuSource | None:
    mode = cfg["source.gpu"]
    if mode == "none":
        return None
    if mode == "simulated":
        from exporter.sources.simulated import SimulatedGpuSource

        return SimulatedGpuSource(cfg["source.gpu.simulated.count"], cfg["source.gpu.simulated.seed"])
    if mode == "replay":
        from exporter.sources.replay import ReplayGpuSource

        return ReplayGpuSource(cfg["source.gpu.replay.file"], cfg["source.gpu.replay.loop"])
    from exporter.sources.nvml import NvmlGpuSource

    try:
        return NvmlGpuSource(
            procfs_root=cfg["path.procfs"], nvml_sample_period_s=cfg["attribution.nvml-sample-period"]
        )
    except SourceUnavailable as exc:
        if mode == "nvml":
            raise SourceUnavailable(exc.kind, f"source.gpu: {exc}") from None
        log.info("no GPU source: NVML is not usable (%s); serving CPU metrics only", exc)
        return None


def build_cpu_source(cfg: Config) -> CpuSource | None:
    from exporter.sources.cpu import select_cpu_source

    try:
        source, reason = select_cpu_source(
            cfg["source.cpu"], cfg["path.sysfs"], cfg["path.procfs"], cfg["source.cpu.tdp-watts"]
        )
    except SourceUnavailable as exc:
        raise SourceUnavailable(exc.kind, f"source.cpu: {exc}") from None
    log.info("CPU source: %s", reason)
    return source


def build_node_poller(cfg: Config) -> NodePoller | None:
    """The BMC poller for --source.node, or None. ConfigError for missing credentials or files."""
    mode = cfg["source.node"]
    if mode == "none":
        return None
    from exporter.node_power import NodePoller
    from exporter.sources.bmc_credentials import BmcCredentials

    timeout = cfg["source.node.timeout"]
    source: NodeSource
    if mode == "redfish":
        from exporter.sources.redfish import RedfishClient, RedfishNodeSource

        creds = BmcCredentials(
            "FOOTPRINT_REDFISH_USERNAME",
            "FOOTPRINT_REDFISH_PASSWORD",
            cfg["source.node.redfish.username-file"],
            cfg["source.node.redfish.password-file"],
        )
        problem = creds.problem()
        if problem:
            raise ConfigError("source.node.redfish", problem)
        ca_file = cfg["source.node.redfish.ca-file"]
        if ca_file and not os.access(ca_file, os.R_OK):
            raise ConfigError("source.node.redfish.ca-file", f"cannot read {ca_file}")
        insecure = cfg["source.node.redfish.insecure-skip-verify"]
        if insecure:
            log.warning(
                "redfish: the BMC's certificate is not verified (--source.node.redfish.insecure-skip-verify)"
            )
        chassis = tuple(c.strip() for c in (cfg["source.node.redfish.chassis"] or "").split(",") if c.strip())
        client = RedfishClient(
            cfg["source.node.redfish.url"],
            creds,
            auth=cfg["source.node.redfish.auth"],
            ca_file=ca_file,
            insecure=insecure,
            timeout_s=timeout,
        )
        source = RedfishNodeSource(client, chassis)
    else:
        from exporter.sources.ipmi import IpmitoolDcmiSource

        ipmitool = shutil.which(cfg["source.node.ipmi.path"])
        if ipmitool is None:
            raise SourceUnavailable(
                "not_found", f"source.node: {cfg['source.node.ipmi.path']} not found (install ipmitool)"
            )
        host = cfg["source.node.ipmi.host"]
        ipmi_creds = None
        if host:
            ipmi_creds = BmcCredentials(
                "FOOTPRINT_IPMI_USERNAME",
                "FOOTPRINT_IPMI_PASSWORD",
                cfg["source.node.ipmi.username-file"],
                cfg["source.node.ipmi.password-file"],
            )
            problem = ipmi_creds.problem()
            if problem:
                raise ConfigError("source.node.ipmi", problem)
        source = IpmitoolDcmiSource(
            ipmitool,
            host,
            ipmi_creds,
            cfg["source.node.ipmi.interface"],
            timeout,
            privilege=cfg["source.node.ipmi.privilege"],
        )
    return NodePoller(source, interval_s=cfg["source.node.interval"])


def build_attribution(cfg: Config, gpu_source: GpuSource | None, identity: PodIdentity) -> Attribution:
    from exporter.attribution import AttributionPolicy, CpuIdlePolicy
    from exporter.ledger import ProcessLedger
    from exporter.sources.processes import ProcessCpuTimes

    policy = AttributionPolicy(kind=cfg["attribution.policy"], idle_watts=cfg["attribution.idle-watts"])
    max_series, retention = cfg["attribution.max-series"], cfg["attribution.retention"]

    spread = cfg["attribution.node-unmetered"] == "spread"
    if spread and cfg["source.node"] == "none":
        log.warning("--attribution.node-unmetered=spread has nothing to spread without --source.node")

    return Attribution(
        policy=policy,
        resolver=identity.resolver(cfg["path.procfs"]),
        gpu_ledger=ProcessLedger(cfg["attribution.group-by"], max_series, retention),
        cpu_ledger=ProcessLedger(cfg["attribution.cpu-group-by"], max_series, retention, system_series=True),
        cpu_times=ProcessCpuTimes(cfg["path.procfs"]) if cfg["attribution.cpu"] else None,
        gpu_owner=identity.allocations.owner if identity.allocations is not None else None,
        mig_owner=identity.allocations.mig_owner if identity.allocations is not None else None,
        cpu_idle=CpuIdlePolicy(
            cfg["attribution.cpu-idle"],
            cfg["attribution.cpu-package-idle-watts"],
            cfg["attribution.cpu-dram-idle-watts"],
        ),
        node_ledger=ProcessLedger(cfg["attribution.group-by"], max_series, retention) if spread else None,
    )


def _hold_log() -> tuple[logging.Handler, logging.handlers.MemoryHandler]:
    """Hold log records back until start-up is known to succeed.

    A start that fails prints exactly one line; a start that succeeds logs what it found, in order.
    """
    root = logging.getLogger()
    target = root.handlers[0]
    held = logging.handlers.MemoryHandler(
        capacity=10_000, flushLevel=logging.CRITICAL + 1, target=target, flushOnClose=False
    )
    root.handlers[:] = [held]
    return target, held


def _release_log(target: logging.Handler, held: logging.handlers.MemoryHandler, keep: bool) -> None:
    logging.getLogger().handlers[:] = [target]
    if keep:
        held.flush()
    held.buffer.clear()
    held.close()


def sampler_health(
    sampler: Sampler,
    thread: threading.Thread,
    stop: threading.Event,
    interval: float,
    clock: Callable[[], float] = time.time,
) -> Callable[[], tuple[bool, str]]:
    """/healthz: unhealthy at once when the sampler thread has died, within 3 intervals (+5 s) when stuck."""

    def healthy() -> tuple[bool, str]:
        if thread.ident is not None and not thread.is_alive() and not stop.is_set():
            return False, "sampler thread has stopped"
        age = clock() - sampler.snapshot.timestamp
        if age >= 3 * interval + 5:
            return False, f"sampler stalled: last snapshot {age:.0f}s old"
        return True, "ok"

    return healthy


def check_settings(cfg: Config) -> tuple[CarbonConfig, WebConfig, str, int]:
    """Everything start-up reads besides the sources, checked: ConfigError naming the key otherwise."""
    carbon_cfg = parse_carbon_config(cfg.carbon_raw)
    web = load_web_config(cfg["web.config.file"])
    host, port = parse_listen_address(cfg["web.listen-address"])
    return carbon_cfg, web, host, port


def run_exporter(argv: Sequence[str]) -> int:
    gpu_source: GpuSource | None = None
    try:
        cfg = load_config(argv)
        setup_logging(cfg["log.level"], cfg["log.format"])
        target, held = _hold_log()
        try:
            carbon_cfg, web, host, port = check_settings(cfg)
            node = build_node_poller(cfg)  # first: its credential errors must be the only line printed
            gpu_source = build_gpu_source(cfg)
            cpu_source = build_cpu_source(cfg)
        except BaseException:
            _release_log(target, held, keep=False)
            raise
        _release_log(target, held, keep=True)
    except (ConfigError, SourceUnavailable) as exc:
        # Nothing half-started: a source that did open is closed again.
        if gpu_source is not None:
            gpu_source.close()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1

    from exporter.carbon.service import CarbonService

    carbon: CarbonService = CarbonService(carbon_cfg)
    sysfs = cfg["path.sysfs"]
    # The simulated fleet lists its own pods, as a kubelet would.
    identity = build_pod_identity(cfg, getattr(gpu_source, "pods", None))
    attribution = build_attribution(cfg, gpu_source, identity)
    sampler = Sampler(
        gpu_source,
        cpu_source,
        carbon,
        attribution,
        interval_s=cfg["sample.interval"],
        pci_gpus=lambda: count_nvidia_gpus(sysfs),
        node=node,
    )
    state = StateFile(cfg["state.file"]) if cfg["state.file"] else None
    if state is not None:
        # Before the sampler runs and before anything is served (see exporter.state).
        sampler.state_restore_result = continue_totals(state, sampler)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: sampler.snapshot))
    registry.register(identity.collector(attribution.resolver))
    limiter = ConnectionLimiter()
    registry.register(ConnectionLimitCollector(limiter.rejected))
    interval = cfg["sample.interval"]
    stop = threading.Event()
    # Created now so that /healthz can ask it; started once everything else is up. on_tick is
    # looked up when the thread starts.
    sampler_thread = threading.Thread(target=lambda: sampler.run(stop, on_tick), name="sampler", daemon=True)

    healthy = sampler_health(sampler, sampler_thread, stop, interval)

    from exporter.carbon import central

    def carbon_json() -> tuple[bytes, str]:
        # Read from the sampler's snapshot, like /metrics: the values this exporter accounts with.
        doc = central.payload(carbon.zone, sampler.snapshot.intensities, time.time())
        return json.dumps(doc).encode(), "application/json"

    started_at = time.time()

    def landing() -> tuple[bytes, str]:
        return render_landing(
            sampler.snapshot, cfg["web.telemetry-path"], started_at
        ), "text/html; charset=utf-8"

    try:
        server = serve(
            host,
            port,
            registry,
            web,
            cfg["web.telemetry-path"],
            healthy,
            limiter=limiter,
            routes={central.PATH: carbon_json, "/": landing},
        )
    except OSError as exc:
        for source in (gpu_source, cpu_source):
            if source is not None:
                source.close()
        print(
            f"{PROG}: error: web.listen-address: cannot listen on {cfg['web.listen-address']}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def save_state(clean: bool) -> None:
        if state is None:
            return
        try:
            # Per-process series start afresh after a restart if they would not fit the file.
            save_fitting(state, sampler.dump_state(), clean, PROCESS_STATE_KEYS)
            sampler.state_saves += 1
            sampler.last_state_save = time.time()
        except (OSError, ValueError, TypeError) as exc:
            sampler.state_save_errors += 1
            log.error("cannot save state to %s: %s", state.path, exc)

    last_save = [time.monotonic()]

    def on_tick(_snapshot: Any) -> None:
        if state is not None and time.monotonic() - last_save[0] >= cfg["state.interval"]:
            last_save[0] = time.monotonic()
            save_state(clean=False)  # a checkpoint: proves the path is writable, never continued from

    carbon.start()
    identity.start()
    if node is not None:
        node.start()  # the BMC is slow: read on its own thread, never from a tick or a scrape
    sampler_thread.start()
    from exporter.carbon.status import startup_summary

    for level, message in startup_summary(carbon_cfg, carbon.intensities()):
        log.log(level, "%s", message)
    bound_host, bound_port = server.server_address[:2]
    log.info(
        "listening on %s:%s (gpu source %s, cpu source %s, node source %s, TLS %s, basic auth %s)",
        bound_host,
        bound_port,
        gpu_source.name if gpu_source else "none",
        cpu_source.name if cpu_source else "none",
        node.method if node else "none",
        "on" if web.ssl_context else "off",
        "on" if web.users else "off",
    )
    stop.wait()
    # A tick under way finishes first (at most a slow read); the wait is bounded so that a hung
    # source cannot keep the exporter past its stop grace period (systemd, Kubernetes: 30 s).
    sampler_thread.join(timeout=min(max(5.0, 3 * interval), 20.0))
    # Clean only when the sampler has stopped: then the file holds at least every value ever served,
    # and the next start may continue from it.
    stopped = not sampler_thread.is_alive()
    if not stopped:
        log.warning(
            "the sampler did not stop in time; the state is saved as not clean, so the next start "
            "begins from zero"
        )
    failed = False
    steps: tuple[tuple[str, Callable[[], object]], ...] = (
        ("save the state", lambda: save_state(clean=stopped)),
        *((("end the node source's BMC session", node.stop),) if node is not None else ()),
        ("stop the carbon service", carbon.stop),
        ("stop the pod lookups", identity.stop),
        ("stop the HTTP server", server.shutdown),
        ("close the HTTP socket", server.server_close),
        *((f"close the {s.name} source", s.close) for s in (gpu_source, cpu_source) if s is not None),
    )
    for what, step in steps:
        # Every step runs whatever an earlier one did: a failure is one log line, never a traceback.
        try:
            step()
        except Exception as exc:
            failed = True
            log.error("shutdown: cannot %s: %s: %s", what, type(exc).__name__, exc)
    log.info("stopped")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "record":
        from exporter.record import main as record_main

        return record_main(args[1:])
    if args and args[0] == "budgets":
        from exporter.budgets import main as budgets_main

        return budgets_main(args[1:])
    if args and args[0] == "report":
        from exporter.report.main import main as report_main

        return report_main(args[1:])
    if args and args[0] == "validate-gpu":
        from exporter.validate_gpu.main import main as validate_main

        return validate_main(args[1:])
    try:
        return run_exporter(args)
    except KeyboardInterrupt:
        # Ctrl-C before the signal handlers are in place (while a large trace loads): no traceback.
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
