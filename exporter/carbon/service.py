"""The carbon service: refreshes providers in the background and answers which intensity was in use when."""

from __future__ import annotations

import calendar
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from exporter import __version__
from exporter.carbon import embedded
from exporter.carbon.carbon_aware_sdk import CarbonAwareSdkProvider
from exporter.carbon.config import CarbonConfig, ProviderConfig
from exporter.carbon.electricitymaps import ElectricityMapsProvider
from exporter.carbon.embodied import UNKNOWN_GPU, EmbodiedFigure, grams_per_second, match_gpu
from exporter.carbon.fetch import Fetcher, ProviderError, host_of
from exporter.carbon.provider import ForecastPoint, Provider
from exporter.carbon.static import StaticProvider
from exporter.carbon.ukgrid import UkGridProvider
from exporter.carbon.watttime import WattTimeProvider
from exporter.model import ForecastState, IntensityState, ProviderState

log = logging.getLogger(__name__)

# How long changes of the intensity in use are remembered: far more than one sample interval, so a
# slow sampler tick still finds the values that were in use during its interval.
HISTORY_S = 3600.0
# After a failed refresh, try again after this long, doubling per consecutive failure up to the
# provider's own refresh period (a dead API is not hammered, a blip is recovered from quickly).
FIRST_RETRY_S = 10.0
# The refresh thread wakes at least this often, so stop() and expiry are noticed promptly.
MAX_SLEEP_S = 5.0
FORECAST_HORIZON_S = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class _Choice:
    """The intensity the chain selects for one signal at one moment."""

    grams_per_kwh: float
    provider: str
    zone: str
    fetched_at: float | None  # None: timeless (static value or embedded table)
    source: str = ""
    year: str = ""


@dataclass
class _Slot:
    """One configured provider and what the service knows about it."""

    config: ProviderConfig
    provider: Provider
    up: bool = False
    errors: dict[str, int] = field(default_factory=dict)
    last_success: float | None = None
    value: float | None = None
    fetched_at: float | None = None
    next_due: float = 0.0
    not_before: float = 0.0  # Retry-After of a 429: no request at all before this
    failures: int = 0
    forecast_points: tuple[ForecastPoint, ...] = ()
    forecast_next_due: float = 0.0
    forecast_failures: int = 0


def build_provider(config: ProviderConfig, session: requests.Session, clock: Callable[[], float]) -> Provider:
    """The provider object for one configured entry, with its own timeouts and retry policy."""
    if config.type == "static":
        return StaticProvider(config)
    fetcher = Fetcher(
        session, timeout=config.timeout, retries=config.retries, backoff=config.backoff, clock=clock
    )
    classes: dict[str, Callable[[ProviderConfig, Fetcher], Provider]] = {
        "electricitymaps": ElectricityMapsProvider,
        "watttime": WattTimeProvider,
        "ukgrid": UkGridProvider,
        "carbon_aware_sdk": CarbonAwareSdkProvider,
    }
    return classes[config.type](config, fetcher)


def _end_of_year(year: str) -> float | None:
    try:
        return float(calendar.timegm((int(year) + 1, 1, 1, 0, 0, 0, 0, 0, 0)))
    except ValueError:
        return None


class CarbonService:
    """Grid carbon intensity for the sampler: a provider chain refreshed off the sampling path.

    Providers are tried in configured order per signal; one whose last good value is older than
    ``max_age`` (or which never worked) is skipped; the embedded table answers "average" last.
    Every answer comes from memory under a short lock: no caller ever waits on the network.
    """

    def __init__(
        self,
        config: CarbonConfig,
        clock: Callable[[], float] = time.time,
        session: requests.Session | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = f"ai-footprint-exporter/{__version__}"
        self._session = session
        self.pue = config.pue
        self.wue_litres_per_kwh = config.wue
        self.has_marginal = any(p.signal == "marginal" for p in config.providers)
        row = embedded.lookup(config.zone)
        if row is None:  # parse_carbon_config refuses such zones; this guards hand-built configs
            raise ValueError(f"zone {config.zone!r} is not in the embedded table")
        self._embedded = _Choice(row.grams_per_kwh, embedded.PROVIDER, row.zone, None, row.source, row.year)
        self._embedded_since = _end_of_year(row.year)
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._slots: list[_Slot] = []
        for provider_config in config.providers:
            slot = _Slot(provider_config, build_provider(provider_config, session, clock))
            if provider_config.type == "static":
                assert provider_config.grams_per_kwh is not None
                slot.up, slot.value = True, provider_config.grams_per_kwh
            else:
                log.info(
                    "carbon provider %s at %s (%s signal, zone %s)",
                    provider_config.type,
                    host_of(provider_config.url),
                    provider_config.signal,
                    provider_config.zone,
                )
            self._slots.append(slot)
        self._history: dict[str, list[tuple[float, _Choice | None]]] = {"average": [], "marginal": []}
        self._embodied_cache: dict[str, float] = {}
        with self._lock:
            self._reselect(clock())

    # Background refresh

    def start(self) -> None:
        """Start the daemon refresh thread; returns at once (the first refresh happens on the thread)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="carbon-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=30.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_now()
            except Exception:  # a bug must not end the thread: the chain would freeze on stale values
                log.exception("carbon refresh pass failed")
            self._stop.wait(self._sleep_s())

    def _sleep_s(self) -> float:
        now = self._clock()
        with self._lock:
            due = [max(s.next_due, s.not_before) for s in self._slots if s.config.type != "static"]
            due += [max(s.forecast_next_due, s.not_before) for s in self._slots if s.config.forecast]
        return min([MAX_SLEEP_S, *(max(0.05, d - now) for d in due)])

    def refresh_now(self) -> None:
        """One synchronous pass: refresh every provider (and forecast) that is due, then reselect."""
        with self._refresh_lock:
            for slot in self._slots:
                if slot.config.type == "static":
                    continue
                now = self._clock()
                if now >= slot.next_due and now >= slot.not_before:
                    self._refresh_current(slot, now)
                now = self._clock()
                if slot.config.forecast and now >= slot.forecast_next_due and now >= slot.not_before:
                    self._refresh_forecast(slot, now)
            with self._lock:
                self._reselect(self._clock())

    def _refresh_current(self, slot: _Slot, now: float) -> None:
        try:
            reading = slot.provider.current()
        except ProviderError as exc:
            self._failed(slot, exc, now, forecast=False)
            return
        except Exception as exc:  # a provider bug counts as a bad answer, never a dead thread
            log.exception("carbon provider %s: unexpected error", slot.config.type)
            self._failed(slot, ProviderError("malformed", type(exc).__name__), now, forecast=False)
            return
        done = self._clock()
        with self._lock:
            if not slot.up:
                log.info(
                    "carbon provider %s (%s): up, %.1f g/kWh",
                    slot.config.type,
                    host_of(slot.config.url),
                    reading.grams_per_kwh,
                )
            slot.up, slot.failures = True, 0
            slot.value, slot.fetched_at, slot.last_success = reading.grams_per_kwh, done, done
            slot.next_due = now + slot.config.refresh

    def _refresh_forecast(self, slot: _Slot, now: float) -> None:
        try:
            points = slot.provider.forecast()
        except ProviderError as exc:
            self._failed(slot, exc, now, forecast=True)
            return
        except Exception as exc:
            log.exception("carbon provider %s: unexpected error in forecast", slot.config.type)
            self._failed(slot, ProviderError("malformed", type(exc).__name__), now, forecast=True)
            return
        with self._lock:
            slot.forecast_points = points or ()
            slot.forecast_failures = 0
            slot.forecast_next_due = now + slot.config.forecast_refresh

    def _failed(self, slot: _Slot, exc: ProviderError, now: float, forecast: bool) -> None:
        with self._lock:
            was_up = slot.up
            slot.errors[exc.kind] = slot.errors.get(exc.kind, 0) + 1
            if forecast:
                slot.forecast_failures += 1
                delay = min(slot.config.forecast_refresh, FIRST_RETRY_S * 2 ** (slot.forecast_failures - 1))
                slot.forecast_next_due = now + delay
            else:
                slot.up = False
                slot.failures += 1
                delay = min(slot.config.refresh, FIRST_RETRY_S * 2 ** (slot.failures - 1))
                slot.next_due = now + delay
            if exc.not_before is not None:
                slot.not_before = max(slot.not_before, exc.not_before)
        # The message names the host and the failure only: never a URL query, header or token.
        level = logging.WARNING if forecast or was_up or slot.failures == 1 else logging.DEBUG
        log.log(
            level,
            "carbon provider %s%s failed (%s): %s",
            slot.config.type,
            " forecast" if forecast else "",
            exc.kind,
            exc,
        )

    # Selection and history

    def _choose(self, signal: str, now: float) -> _Choice | None:
        for slot in self._slots:
            if slot.config.signal != signal or slot.value is None:
                continue
            if slot.fetched_at is not None and now - slot.fetched_at > self._config.max_age:
                continue
            return _Choice(slot.value, slot.config.type, slot.provider.zone, slot.fetched_at)
        return self._embedded if signal == "average" else None

    def _reselect(self, now: float) -> None:
        """Record a change of the intensity in use (caller holds the lock)."""
        for signal, history in self._history.items():
            choice = self._choose(signal, now)
            last = history[-1][1] if history else None
            changed = (
                not history
                or (choice is None) != (last is None)
                or (
                    choice is not None
                    and last is not None
                    and (choice.grams_per_kwh, choice.provider, choice.zone)
                    != (last.grams_per_kwh, last.provider, last.zone)
                )
            )
            if changed:
                if history and choice is not None and (last is None or choice.provider != last.provider):
                    log.info(
                        "carbon intensity (%s) now from %s, zone %s: %.1f g/kWh",
                        signal,
                        choice.provider,
                        choice.zone,
                        choice.grams_per_kwh,
                    )
                history.append((now, choice))
            while len(history) >= 2 and history[1][0] <= now - HISTORY_S:
                history.pop(0)

    def segments(self, signal: str, t0: float, t1: float) -> list[tuple[float, float]]:
        """``[(seconds, grams_per_kwh)]`` covering wall-clock ``[t0, t1]``, each part's intensity in use.

        Parts with no value (marginal, while no marginal provider works) are left out, so "marginal"
        gives ``[]`` when none worked. A zero-length interval gives one 0 s segment with the value at t1.
        """
        with self._lock:
            self._reselect(self._clock())
            history = list(self._history.get(signal, ()))
        if t1 <= t0:
            before = [choice for start, choice in history if start <= t1]
            current = before[-1] if before else (history[0][1] if history else None)
            return [(0.0, current.grams_per_kwh)] if current is not None else []
        result: list[tuple[float, float]] = []
        for index, (start, choice) in enumerate(history):
            # The first known value also covers any time before it (the service's own start-up).
            lo = max(t0, start if index else -math.inf)
            hi = min(t1, history[index + 1][0] if index + 1 < len(history) else math.inf)
            if hi <= lo or choice is None:
                continue
            if result and result[-1][1] == choice.grams_per_kwh:
                result[-1] = (result[-1][0] + hi - lo, choice.grams_per_kwh)
            else:
                result.append((hi - lo, choice.grams_per_kwh))
        return result

    # What the collectors export

    def intensities(self) -> tuple[IntensityState, ...]:
        now = self._clock()
        states = []
        with self._lock:
            self._reselect(now)
            choices = [(signal, history[-1][1]) for signal, history in self._history.items() if history]
        for signal, choice in choices:
            if choice is None:
                continue
            if choice.fetched_at is not None:
                age = now - choice.fetched_at
            elif choice.provider == embedded.PROVIDER and self._embedded_since is not None:
                # A yearly average is as old as the end of its year: an honest, large age.
                age = now - self._embedded_since
            else:
                age = 0.0
            states.append(
                IntensityState(
                    choice.zone,
                    choice.provider,
                    signal,
                    choice.grams_per_kwh,
                    max(0.0, age),
                    choice.source,
                    choice.year,
                )
            )
        return tuple(states)

    def providers(self) -> tuple[ProviderState, ...]:
        with self._lock:
            states = [ProviderState(s.config.type, s.up, dict(s.errors), s.last_success) for s in self._slots]
        return (*states, ProviderState(embedded.PROVIDER, True))

    def forecasts(self) -> tuple[ForecastState, ...]:
        now = self._clock()
        states = []
        with self._lock:
            slots = [(s.config, s.provider.zone, s.forecast_points) for s in self._slots if s.forecast_points]
        for config, zone, points in slots:
            ahead = [p for p in points if p.end > now and p.start < now + FORECAST_HORIZON_S]
            if not ahead:
                continue
            # min() keeps the first of equal values: the earliest time the lowest intensity begins.
            lowest = min(ahead, key=lambda p: p.grams_per_kwh)
            states.append(ForecastState(zone, config.type, config.signal, lowest.grams_per_kwh, lowest.start))
        return tuple(states)

    # Embodied carbon

    def gpu_embodied_figure(self, gpu_name: str) -> EmbodiedFigure:
        """The figure a GPU model is charged with: a configured or default entry, else the unknown default."""
        return match_gpu(gpu_name, self._config.embodied.gpu) or UNKNOWN_GPU

    def gpu_embodied_grams_per_second(self, gpu_name: str) -> float:
        if not self._config.embodied.enabled:
            return 0.0
        rate = self._embodied_cache.get(gpu_name)
        if rate is None:
            figure = self.gpu_embodied_figure(gpu_name)
            rate = grams_per_second(figure, self._config.embodied.default_life_years)
            self._embodied_cache[gpu_name] = rate
            log.info(
                "embodied carbon of %r: %.0f kg CO2e over %.1f years (%s)",
                gpu_name,
                figure.kg,
                figure.life_years or self._config.embodied.default_life_years,
                figure.basis or figure.key,
            )
        return rate

    def node_embodied_grams_per_second(self) -> float | None:
        node = self._config.embodied.node
        if not self._config.embodied.enabled or node is None:
            return None
        return grams_per_second(node, self._config.embodied.default_life_years)
