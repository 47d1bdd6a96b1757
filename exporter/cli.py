"""The ``footprint-exporter`` command: configuration, start-up in a safe order, serving, graceful shutdown."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from exporter.collector import SnapshotCollector
from exporter.config import Config, load_config, parse_listen_address
from exporter.errors import ConfigError
from exporter.landing import render_landing
from exporter.sampler import Attribution, Sampler
from exporter.sources import CpuSource, GpuSource, NodeSource, SourceUnavailable
from exporter.state import StateFile
from exporter.web import load_web_config, serve

if TYPE_CHECKING:
    from exporter.carbon.service import CarbonService
    from exporter.node_power import NodePoller

log = logging.getLogger("footprint")
PROG = "footprint-exporter"


class _LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage().replace('"', "'")
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        level = record.levelname.lower()
        return f'ts={ts}.{int(record.msecs):03d}Z level={level} logger={record.name} msg="{msg}"'


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": record.created,
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"warn": logging.WARNING}.get(level, getattr(logging, level.upper(), logging.INFO)))
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
        return NvmlGpuSource(procfs_root=cfg["path.procfs"])
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


def build_attribution(cfg: Config, gpu_source: GpuSource | None) -> Attribution:
    from exporter.attribution import AttributionPolicy
    from exporter.ledger import ProcessLedger
    from exporter.sources.processes import ProcessCpuTimes
    from exporter.workload import WorkloadResolver, kubelet_pod_lister

    pods = getattr(gpu_source, "pods", None)  # the simulated fleet lists its own pods, as a kubelet would
    if pods is None and cfg["kubernetes.node-name"]:
        url = cfg["kubernetes.kubelet-url"] or f"https://{cfg['kubernetes.node-name']}:10250"
        pods = kubelet_pod_lister(url, cfg["kubernetes.token-file"], cfg["kubernetes.ca-file"])
    policy = AttributionPolicy(kind=cfg["attribution.policy"], idle_watts=cfg["attribution.idle-watts"])

    def ledger() -> ProcessLedger:
        return ProcessLedger(
            cfg["attribution.group-by"], cfg["attribution.max-series"], cfg["attribution.retention"]
        )

    return Attribution(
        policy=policy,
        resolver=WorkloadResolver(cfg["path.procfs"], pods),
        gpu_ledger=ledger(),
        cpu_ledger=ledger(),
        cpu_times=ProcessCpuTimes(cfg["path.procfs"]) if cfg["attribution.cpu"] else None,
    )


def run_exporter(argv: Sequence[str]) -> int:
    try:
        cfg = load_config(argv)
        setup_logging(cfg["log.level"], cfg["log.format"])
        from exporter.carbon.config import parse_carbon_config

        carbon_cfg = parse_carbon_config(cfg.carbon_raw)
        web = load_web_config(cfg["web.config.file"])
        host, port = parse_listen_address(cfg["web.listen-address"])
        node = build_node_poller(cfg)  # first: its credential errors must be the only line printed
        gpu_source = build_gpu_source(cfg)
        cpu_source = build_cpu_source(cfg)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except SourceUnavailable as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1

    from exporter.carbon.service import CarbonService

    carbon: CarbonService = CarbonService(carbon_cfg)
    sampler = Sampler(
        gpu_source,
        cpu_source,
        carbon,
        build_attribution(cfg, gpu_source),
        interval_s=cfg["sample.interval"],
        node=node,
    )
    state = StateFile(cfg["state.file"]) if cfg["state.file"] else None
    if state is not None:
        saved = state.load()
        if saved is not None:
            try:
                sampler.restore_state(saved)
                log.info("restored totals from %s", state.path)
            except (ValueError, TypeError, AttributeError) as exc:
                state.set_aside(f"bad totals: {exc}")

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: sampler.snapshot))
    interval = cfg["sample.interval"]

    def healthy() -> tuple[bool, str]:
        age = time.time() - sampler.snapshot.timestamp
        return (
            (True, "ok")
            if age < 3 * interval + 5
            else (False, f"sampler stalled: last snapshot {age:.0f}s old")
        )

    started_at = time.time()

    def landing() -> bytes:
        return render_landing(sampler.snapshot, cfg["web.telemetry-path"], started_at)

    try:
        server = serve(host, port, registry, web, cfg["web.telemetry-path"], healthy, landing)
    except OSError as exc:
        print(
            f"{PROG}: error: web.listen-address: cannot listen on {cfg['web.listen-address']}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def save_state() -> None:
        if state is None:
            return
        try:
            state.save(sampler.dump_state())
            sampler.state_saves += 1
            sampler.last_state_save = time.time()
        except OSError as exc:
            sampler.state_save_errors += 1
            log.error("cannot save state to %s: %s", state.path, exc)

    last_save = [time.monotonic()]

    def on_tick(_snapshot: Any) -> None:
        if state is not None and time.monotonic() - last_save[0] >= cfg["state.interval"]:
            last_save[0] = time.monotonic()
            save_state()

    carbon.start()
    if node is not None:
        node.start()  # the BMC is slow: read on its own thread, never from a tick or a scrape
    sampler_thread = threading.Thread(target=sampler.run, args=(stop, on_tick), name="sampler", daemon=True)
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
    sampler_thread.join(timeout=max(5.0, 3 * interval))
    save_state()  # after the sampler stopped, so the file holds the final totals
    if node is not None:
        node.stop()  # ends our Redfish session on the BMC
    carbon.stop()
    server.shutdown()
    server.server_close()
    for source in (gpu_source, cpu_source):
        if source is not None:
            source.close()
    log.info("stopped")
    return 0


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
    return run_exporter(args)


if __name__ == "__main__":
    raise SystemExit(main())
