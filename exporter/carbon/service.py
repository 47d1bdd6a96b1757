"""The carbon service: refreshes providers in the background and answers which intensity was in use when."""

from __future__ import annotations

import datetime
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
from exporter.carbon.central import CentralProvider
from exporter.carbon.config import SIGNALS, CarbonConfig, ProviderConfig
from exporter.carbon.electricitymaps import ElectricityMapsProvider
from exporter.carbon.embodied import UNKNOWN_GPU, EmbodiedFigure, grams_per_second, match_gpu
from exporter.carbon.fetch import Fetcher, ProviderError, host_of, track_deadlines
from exporter.carbon.market import MarketMethod
from exporter.carbon.provider import ForecastPoint, Provider, Reading
from exporter.carbon.static import StaticProvider
from exporter.carbon.ukgrid import UkGridProvider
from exporter.carbon.watttime import WattTimeProvider
from exporter.model import EmissionFactor, ForecastState, IntensityState, ProviderState

log = logging.getLogger(__name__)

# How long changes of the intensity in use are remembered: far more than one sample interval, so a
# slow sampler tick still finds the values that were in use during its interval.
HISTORY_S = 3600.0
# After a failed refresh, try again after this long, doubling per consecutive failure up to the
# provider's own refresh period (a dead API is not hammered, a blip is recovered from quickly).
FIRST_RETRY_S = 10.0
# A refresh thread wakes at least this often, so stop() and expiry are noticed promptly.
MAX_SLEEP_S = 5.0
FORECAST_HORIZON_S = 24 * 3600.0
# A value dated this far ahead of our clock waits for its time (clock skew below this is ignored).
FUTURE_TOLERANCE_S = 60.0
# A request running this much past its deadline marks the provider down while it still hangs.
DEADLINE_GRACE_S = 0.5
# stop() waits at most this long, in all, for refresh threads to end (they are daemons; a request
# hanging in name resolution cannot be interrupted, and must not hold up the exporter's shutdown).
STOP_WAIT_S = 1.0
SOURCES = {
    "electricitymaps": "Electricity Maps API v3, carbon-intensity/latest",
    "watttime": "WattTime API v3, co2_moer",
    "ukgrid": "GB Carbon Intensity API (National Grid ESO)",
    "carbon_aware_sdk": "Green Software Foundation Carbon Aware SDK",
    "static": "configured figure (carbon.providers)",
}


@dataclass(frozen=True, slots=True)
class _Value:
    """An intensity a provider gave for one signal, with what its data says about itself."""

    grams_per_kwh: float
    signal: str
    basis: str
    provider: str  # where the value comes from (for a relay: the central instance's provider)
    zone: str
    observed_at: float | None  # the data's own time; its age counts from here
    confirmed_at: float | None  # data without a time: the last refresh confirming it; both None: timeless
    estimated: bool | None = None
    source: str = ""
    year: str = ""
    via: str = ""

    def age(self, now: float) -> float | None:
        anchor = self.observed_at if self.observed_at is not None else self.confirmed_at
        return None if anchor is None else max(0.0, now - anchor)

    def same_series(self, other: _Value | None) -> bool:
        """Whether two values make the same intensity in use (the history records only changes)."""
        return other is not None and (
            self.grams_per_kwh,
            self.provider,
            self.zone,
            self.basis,
            self.via,
        ) == (other.grams_per_kwh, other.provider, other.zone, other.basis, other.via)


@dataclass
class _Slot:
    """One configured provider and what the service knows about it."""

    config: ProviderConfig
    provider: Provider
    fetcher: Fetcher | None = None
    up: bool = False
    errors: dict[str, int] = field(default_factory=dict)
    last_success: float | None = None
    values: dict[str, _Value] = field(default_factory=dict)
    pending: dict[str, _Value] = field(default_factory=dict)  # dated in the future: wait for their time
    next_due: float = 0.0
    not_before: float = 0.0  # Retry-After of a 429: no request at all before this
    failures: int = 0
    forecast_points: tuple[ForecastPoint, ...] = ()
    forecast_next_due: float = 0.0
    forecast_failures: int = 0
    skipped: str = ""  # why the provider is never asked (its basis is not its chain's)
    overdue: bool = False  # a request is past its deadline right now
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def live(self) -> bool:
        return self.config.type != "static" and not self.skipped


def provider_for(config: ProviderConfig, fetcher: Fetcher | None) -> Provider:
    """The provider object for one configured entry, fetching through ``fetcher`` (None for static)."""
    if config.type == "static":
        return StaticProvider(config)
    assert fetcher is not None
    classes: dict[str, Callable[[ProviderConfig, Fetcher], Provider]] = {
        "electricitymaps": ElectricityMapsProvider,
        "watttime": WattTimeProvider,
        "ukgrid": UkGridProvider,
        "carbon_aware_sdk": CarbonAwareSdkProvider,
        "central": CentralProvider,
    }
    return classes[config.type](config, fetcher)


def build_provider(config: ProviderConfig, session: requests.Session, clock: Callable[[], float]) -> Provider:
    """A provider with its own deadline and retry policy on ``session``."""
    fetcher = Fetcher(
        session, timeout=config.timeout, retries=config.retries, backoff=config.backoff, clock=clock
    )
    return provider_for(config, None if config.type == "static" else fetcher)


def _year(epoch: float | None) -> str:
    return "" if epoch is None else str(datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).year)


class CarbonService:
    """Grid carbon intensity for the sampler: a provider chain refreshed off the sampling path.

    Per signal, providers are tried in configured order; one whose value is older than ``max_age``
    (by the data's own time), which never worked, or whose basis is not the chain's is skipped; the
    embedded table answers "average" last. Every provider refreshes on its own thread, so a slow one
    delays nobody else; every answer to the sampler comes from memory under a short lock.
    """

    def __init__(
        self,
        config: CarbonConfig,
        clock: Callable[[], float] = time.time,
        session: requests.Session | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._clock = clock
        self._monotonic = monotonic
        self.zone = config.zone
        self.pue = config.pue
        self.wue_litres_per_kwh = config.wue
        self.market = MarketMethod(config.market) if config.market is not None else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        row = embedded.lookup(config.zone, config.basis)
        # None only with basis direct for a zone without a direct row; config.py then requires a
        # static figure on that basis, which never fails, so the average signal always has a value.
        self._embedded = (
            None
            if row is None
            else _Value(
                row.grams_per_kwh,
                "average",
                row.basis,
                embedded.PROVIDER,
                row.zone,
                # A yearly average is as old as the end of its year: an honest, large age.
                row.end_of_year,
                None,
                # The current hour's intensity estimated by a yearly average.
                True,
                row.source,
                row.year,
            )
        )
        self._embedded_row = row
        self._slots: list[_Slot] = [self._slot(p, session) for p in config.providers]
        self.has_marginal = any(
            s.config.signal == "marginal" or s.config.type == "central" for s in self._slots if not s.skipped
        )
        self._history: dict[str, list[tuple[float, _Value | None]]] = {s: [] for s in SIGNALS}
        self._current: dict[str, _Value | None] = {}
        self._embodied_cache: dict[str, float] = {}
        self._embodied_figures: dict[str, EmbodiedFigure] = {}
        with self._lock:
            self._reselect(clock())

    def _slot(self, config: ProviderConfig, session: requests.Session | None) -> _Slot:
        fetcher = None
        if config.type != "static":
            if session is None:  # one session per provider: threads never share a connection pool
                session = track_deadlines(requests.Session())
                session.headers["User-Agent"] = f"ai-footprint-exporter/{__version__}"
            fetcher = Fetcher(
                session,
                timeout=config.timeout,
                retries=config.retries,
                backoff=config.backoff,
                clock=self._clock,
                # Backoff waits end at once when the exporter stops.
                sleep=self._stop.wait,
                monotonic=self._monotonic,
            )
        slot = _Slot(config, provider_for(config, fetcher), fetcher)
        wanted = self._config.chain_basis(config.signal)
        if config.basis and config.basis != wanted:
            # Never mixed into the chain: a fallback must not switch basis in the middle of a series.
            slot.skipped = f"serves {config.signal} factors on the {config.basis} basis, chain is {wanted}"
            slot.errors["basis"] = 1
            log.warning(
                "carbon provider %s skipped: it %s (set carbon.%s to use it)",
                config.type,
                slot.skipped,
                "marginal_basis" if config.signal == "marginal" else "basis",
            )
        elif config.type == "static":
            assert config.grams_per_kwh is not None
            slot.up = True
            reading = slot.provider.current()
            assert isinstance(reading, Reading)
            slot.values[config.signal] = self._value(slot, reading, self._clock())
        else:
            log.info(
                "carbon provider %s at %s (%s signal, %s basis, zone %s)",
                config.type,
                host_of(config.url),
                config.signal,
                config.basis or "as relayed",
                config.zone,
            )
        return slot

    # Background refresh

    def start(self) -> None:
        """Start one daemon refresh thread per live provider; returns at once."""
        if self._threads:
            return
        self._stop.clear()
        for slot in self._slots:
            if slot.live:
                thread = threading.Thread(
                    target=self._run, args=(slot,), name=f"carbon-{slot.config.type}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        """Stop the refresh threads, waiting at most STOP_WAIT_S in all for requests in flight."""
        self._stop.set()
        deadline = time.monotonic() + STOP_WAIT_S
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        hung = [t.name for t in self._threads if t.is_alive()]
        if hung:
            log.info("carbon refresh threads still in a request at shutdown, abandoned: %s", ", ".join(hung))
        self._threads = []

    def _run(self, slot: _Slot) -> None:
        while not self._stop.is_set():
            try:
                self._refresh_slot(slot)
            except Exception:  # a bug must not end the thread: the chain would freeze on stale values
                log.exception("carbon refresh of %s failed", slot.config.type)
            self._stop.wait(self._sleep_s(slot))

    def _sleep_s(self, slot: _Slot) -> float:
        now = self._clock()
        with self._lock:
            due = [max(slot.next_due, slot.not_before)]
            if slot.config.forecast:
                due.append(max(slot.forecast_next_due, slot.not_before))
        return min([MAX_SLEEP_S, *(max(0.05, d - now) for d in due)])

    def refresh_now(self) -> None:
        """One synchronous pass over every live provider that is due (the threads do this each)."""
        for slot in self._slots:
            if slot.live:
                self._refresh_slot(slot)
        with self._lock:
            self._reselect(self._clock())

    def _refresh_slot(self, slot: _Slot) -> None:
        with slot.lock:
            now = self._clock()
            if now >= slot.next_due and now >= slot.not_before and not self._stop.is_set():
                self._refresh_current(slot, now)
            now = self._clock()
            if (
                slot.config.forecast
                and now >= slot.forecast_next_due
                and now >= slot.not_before
                and not self._stop.is_set()
            ):
                self._refresh_forecast(slot, now)
        with self._lock:
            self._reselect(self._clock())

    def _value(self, slot: _Slot, reading: Reading, received: float) -> _Value:
        """A reading checked against its chain's basis and the plausible range; raises ProviderError."""
        provider = slot.provider
        signal = reading.signal or provider.signal
        basis = reading.basis or provider.basis
        wanted = self._config.chain_basis(signal)
        if basis != wanted:
            raise ProviderError(
                "basis", f"{signal} value on the {basis} basis refused: the chain is {wanted}"
            )
        low, high = self._config.plausible_min, self._config.plausible_max
        if not low <= reading.grams_per_kwh <= high:
            raise ProviderError(
                "implausible", f"{reading.grams_per_kwh:g} g/kWh is outside the plausible {low:g}-{high:g}"
            )
        relayed = reading.provider is not None
        confirmed_at = reading.confirmed_at
        if reading.observed_at is None and confirmed_at is None and not reading.timeless:
            confirmed_at = received  # no data time: this refresh confirms the value now
        return _Value(
            reading.grams_per_kwh,
            signal,
            basis,
            reading.provider or slot.config.type,
            reading.zone or provider.zone,
            reading.observed_at,
            confirmed_at,
            reading.estimated,
            reading.source if relayed else SOURCES.get(slot.config.type, slot.config.type),
            reading.year if relayed else _year(reading.observed_at),
            slot.config.type if relayed else "",
        )

    def _refresh_current(self, slot: _Slot, now: float) -> None:
        try:
            result = slot.provider.current()
        except ProviderError as exc:
            self._failed(slot, exc, now, forecast=False)
            return
        except Exception as exc:  # a provider bug counts as a bad answer, never a dead thread
            log.exception("carbon provider %s: unexpected error", slot.config.type)
            self._failed(slot, ProviderError("malformed", type(exc).__name__), now, forecast=False)
            return
        received = self._clock()
        accepted: list[_Value] = []
        refused: list[ProviderError] = []
        for reading in result if isinstance(result, tuple) else (result,):
            try:
                accepted.append(self._value(slot, reading, received))
            except ProviderError as exc:
                refused.append(exc)
        for error in refused:  # counted, and the previous good value (or the next provider) is used
            self._failed(slot, error, now, forecast=False, down=not accepted)
        if not accepted:
            return
        with self._lock:
            if not slot.up:
                log.info(
                    "carbon provider %s (%s): up, %s",
                    slot.config.type,
                    host_of(slot.config.url),
                    ", ".join(f"{v.signal} {v.grams_per_kwh:.1f} g/kWh" for v in accepted),
                )
            slot.up, slot.failures, slot.overdue = True, 0, False
            slot.last_success = received
            slot.next_due = now + slot.config.refresh
            for value in accepted:
                self._store(slot, value, received)

    def _store(self, slot: _Slot, value: _Value, received: float) -> None:
        """Keep a value as its provider's latest for its signal (caller holds the lock)."""
        held = slot.values.get(value.signal)
        if (
            held is not None
            and held.observed_at is not None
            and value.observed_at is not None
            and value.observed_at < held.observed_at
        ):
            # Older data than we hold (a cache or CDN answering late) never replaces newer data.
            log.debug(
                "carbon provider %s: answer older than the value held, kept the newer", slot.config.type
            )
            return
        if value.observed_at is not None and value.observed_at > received + FUTURE_TOLERANCE_S:
            slot.pending[value.signal] = value  # a value applies from its datetime, not before
            return
        slot.pending.pop(value.signal, None)
        slot.values[value.signal] = value

    def _refresh_forecast(self, slot: _Slot, now: float) -> None:
        try:
            points = slot.provider.forecast() or ()
            low, high = self._config.plausible_min, self._config.plausible_max
            bad = [p.grams_per_kwh for p in points if not low <= p.grams_per_kwh <= high]
            if bad:
                raise ProviderError(
                    "implausible", f"forecast value {bad[0]:g} g/kWh outside {low:g}-{high:g}"
                )
        except ProviderError as exc:
            self._failed(slot, exc, now, forecast=True)
            return
        except Exception as exc:
            log.exception("carbon provider %s: unexpected error in forecast", slot.config.type)
            self._failed(slot, ProviderError("malformed", type(exc).__name__), now, forecast=True)
            return
        with self._lock:
            slot.forecast_points = points
            slot.forecast_failures = 0
            slot.forecast_next_due = now + slot.config.forecast_refresh

    def _failed(self, slot: _Slot, exc: ProviderError, now: float, forecast: bool, down: bool = True) -> None:
        with self._lock:
            was_up = slot.up
            slot.errors[exc.kind] = slot.errors.get(exc.kind, 0) + 1
            if forecast:
                slot.forecast_failures += 1
                delay = min(slot.config.forecast_refresh, FIRST_RETRY_S * 2 ** (slot.forecast_failures - 1))
                slot.forecast_next_due = now + delay
            elif down:
                slot.up = False
                slot.failures += 1
                delay = min(slot.config.refresh, FIRST_RETRY_S * 2 ** (slot.failures - 1))
                slot.next_due = now + delay
            if exc.not_before is not None:
                slot.not_before = max(slot.not_before, exc.not_before)
        # The message names the host and the failure only: never a URL query, header or token.
        level = logging.WARNING if forecast or was_up or slot.failures <= 1 else logging.DEBUG
        log.log(
            level,
            "carbon provider %s%s failed (%s): %s",
            slot.config.type,
            " forecast" if forecast else "",
            exc.kind,
            exc,
        )

    # Selection and history

    def _choose(self, signal: str, now: float) -> _Value | None:
        for slot in self._slots:
            value = slot.values.get(signal)
            if value is None or slot.skipped:
                continue
            age = value.age(now)
            if age is not None and age > self._config.max_age:
                continue
            return value
        return self._embedded if signal == "average" else None

    def _promote(self, now: float) -> set[str]:
        """Move values whose time has come from pending to in use; returns the signals that changed."""
        promoted = set()
        for slot in self._slots:
            for signal, value in list(slot.pending.items()):
                if value.observed_at is not None and value.observed_at <= now:
                    slot.values[signal] = value
                    del slot.pending[signal]
                    promoted.add(signal)
        return promoted

    def _reselect(self, now: float) -> None:
        """Record a change of the intensity in use (caller holds the lock)."""
        promoted = self._promote(now)
        for signal, history in self._history.items():
            choice = self._choose(signal, now)
            self._current[signal] = choice
            last = history[-1][1] if history else None
            changed = not history or (choice is None) != (last is None)
            if choice is not None and last is not None:
                changed = not choice.same_series(last)
            if changed:
                start = now
                if signal in promoted and choice is not None and choice.observed_at is not None:
                    # A value dated ahead applies from its own time (at most one tick after it passed).
                    start = max(choice.observed_at, history[-1][0] if history else -math.inf)
                if history and choice is not None and (last is None or choice.provider != last.provider):
                    log.info(
                        "carbon intensity (%s) now from %s%s, zone %s: %.1f g/kWh",
                        signal,
                        choice.provider,
                        f" via {choice.via}" if choice.via else "",
                        choice.zone,
                        choice.grams_per_kwh,
                    )
                history.append((start, choice))
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
        with self._lock:
            self._reselect(now)
            choices = [(signal, self._current.get(signal)) for signal in self._history]
        states = []
        for signal, value in choices:
            if value is None:
                continue
            states.append(
                IntensityState(
                    value.zone,
                    value.provider,
                    signal,
                    value.grams_per_kwh,
                    value.age(now) or 0.0,
                    value.source,
                    value.year,
                    value.basis,
                    value.observed_at,
                    value.confirmed_at,
                    value.estimated,
                    value.via,
                )
            )
        return tuple(states)

    def providers(self) -> tuple[ProviderState, ...]:
        """Each provider's state; one whose request runs past its deadline is down while it hangs."""
        now = self._monotonic()
        states = []
        with self._lock:
            for s in self._slots:
                started = s.fetcher.in_flight_since if s.fetcher is not None else None
                if started is not None and now - started > s.config.timeout + DEADLINE_GRACE_S:
                    if not s.overdue:
                        log.warning(
                            "carbon provider %s: request past its %gs deadline, down until it answers",
                            s.config.type,
                            s.config.timeout,
                        )
                    s.overdue, s.up = True, False
                states.append(ProviderState(s.config.type, s.up, dict(s.errors), s.last_success))
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

    def emission_factors(self) -> tuple[EmissionFactor, ...]:
        """Every fixed factor the figures use, with its source and year (the grid's is in intensities)."""
        c = self._config
        factors = [EmissionFactor("pue", "pue", c.pue, "ratio", source="configured (carbon.pue)")]
        if c.wue is not None:
            factors.append(
                EmissionFactor("wue", "wue", c.wue, "litres_per_kwh", source="configured (carbon.wue)")
            )
        row = self._embedded_row
        if row is not None:
            factors.append(
                EmissionFactor(
                    "grid_fallback",
                    row.zone,
                    row.grams_per_kwh,
                    "grams_per_kwh",
                    row.basis,
                    row.source,
                    row.year,
                )
            )
        market = c.market
        if market is not None:
            for i in market.instruments:
                factors.append(
                    EmissionFactor(
                        "market_instrument",
                        i.name,
                        i.grams_per_kwh,
                        "grams_per_kwh",
                        market.basis,
                        i.source,
                        i.year,
                    )
                )
            if market.supplier_grams_per_kwh is not None:
                factors.append(
                    EmissionFactor(
                        "market_supplier",
                        "supplier",
                        market.supplier_grams_per_kwh,
                        "grams_per_kwh",
                        market.basis,
                        market.supplier_source,
                        market.supplier_year,
                    )
                )
            if market.residual_grams_per_kwh is not None:
                factors.append(
                    EmissionFactor(
                        "market_residual",
                        "residual",
                        market.residual_grams_per_kwh,
                        "grams_per_kwh",
                        market.basis,
                        market.residual_source,
                        market.residual_year,
                    )
                )
        if c.embodied.enabled:
            with self._lock:
                figures = sorted(self._embodied_figures.items())
            for name, figure in figures:
                factors.append(
                    EmissionFactor(
                        "embodied_gpu",
                        name,
                        figure.kg,
                        "kg",
                        "cradle_to_gate",
                        figure.basis or figure.key,
                        figure.year,
                    )
                )
            if c.embodied.node is not None:
                node = c.embodied.node
                factors.append(
                    EmissionFactor(
                        "embodied_node",
                        "node",
                        node.kg,
                        "kg",
                        "cradle_to_gate",
                        node.basis or node.key,
                        node.year,
                    )
                )
        return tuple(factors)

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
            with self._lock:
                self._embodied_figures[gpu_name] = figure
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
