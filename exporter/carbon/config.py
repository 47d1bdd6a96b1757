"""The ``carbon:`` configuration section: parsed, validated and defaulted, every error naming its key."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from exporter.carbon import embedded
from exporter.carbon.embodied import (
    DEFAULT_GPU_FIGURES,
    DEFAULT_LIFE_YEARS,
    DEFAULT_NODE,
    EmbodiedFigure,
)
from exporter.durations import parse_duration
from exporter.errors import ConfigError, shown

SIGNALS = ("average", "marginal")
DEFAULT_URLS = {
    "electricitymaps": "https://api.electricitymaps.com/v3",
    "watttime": "https://api.watttime.org",
    "ukgrid": "https://api.carbonintensity.org.uk",
}
_NETWORK_KEYS = frozenset(
    {"type", "url", "refresh", "timeout", "retries", "backoff", "forecast", "forecast_refresh"}
)
PROVIDER_KEYS: dict[str, frozenset[str]] = {
    "electricitymaps": _NETWORK_KEYS | {"token_env", "token_file", "zone", "emission_factor_type"},
    "watttime": _NETWORK_KEYS
    | {"username_env", "username_file", "password_env", "password_file", "region", "login_url"},
    "ukgrid": _NETWORK_KEYS | {"region_id"},
    "carbon_aware_sdk": _NETWORK_KEYS | {"location"},
    "static": frozenset({"type", "grams_per_kwh", "signal", "zone"}),
}
PROVIDER_SIGNAL = {
    "electricitymaps": "average",
    "watttime": "marginal",
    "ukgrid": "average",
    "carbon_aware_sdk": "average",
}
# Electricity Maps' forecast is a paid endpoint: off unless asked for, so a free token does not
# count an auth error every refresh.
FORECAST_DEFAULT = {"electricitymaps": False, "watttime": True, "ukgrid": True, "carbon_aware_sdk": True}


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One entry of ``carbon.providers``; fields that do not apply to its type keep their defaults."""

    type: str
    key: str  # "carbon.providers[N]", for messages
    zone: str  # the zone, region or location label its values are exported under
    signal: str = "average"
    url: str = ""
    refresh: float = 300.0
    timeout: float = 10.0
    retries: int = 2
    backoff: float = 1.0
    forecast: bool = False
    forecast_refresh: float = 1800.0
    token_env: str | None = None
    token_file: str | None = None
    username_env: str | None = None
    username_file: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    login_url: str = ""
    region: str = ""
    region_id: int | None = None
    location: str = ""
    emission_factor_type: str = "lifecycle"
    grams_per_kwh: float | None = None


@dataclass(frozen=True, slots=True)
class EmbodiedConfig:
    enabled: bool = True
    # Configured figures first, then the defaults; matching takes the longest key over both.
    gpu: tuple[EmbodiedFigure, ...] = DEFAULT_GPU_FIGURES
    node: EmbodiedFigure | None = DEFAULT_NODE
    default_life_years: float = DEFAULT_LIFE_YEARS


@dataclass(frozen=True, slots=True)
class CarbonConfig:
    zone: str = embedded.DEFAULT_ZONE
    pue: float = 1.0
    wue: float | None = None  # site litres per IT kWh; None: no water metric
    max_age: float = 3600.0
    providers: tuple[ProviderConfig, ...] = ()
    embodied: EmbodiedConfig = field(default_factory=EmbodiedConfig)


T = TypeVar("T")


def _mapping(raw: object, key: str) -> Mapping[str, object]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) for k in raw):
        raise ConfigError(key, f"must be a mapping, got {type(raw).__name__}")
    return raw


def _check_keys(raw: Mapping[str, object], allowed: frozenset[str], key: str) -> None:
    for name in raw:
        if name not in allowed:
            raise ConfigError(f"{key}.{name}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


# No figure in this section comes near it (grams, kilograms, years); the ceiling keeps every number a
# float that sums and products cannot overflow.
MAX_NUMBER = 1e9
MAX_DURATION = 365 * 86400.0


def _number(
    value: object,
    key: str,
    minimum: float | None = None,
    strict_min: bool = False,
    maximum: float = MAX_NUMBER,
) -> float:
    # Compared before any float(): an integer of 400 digits has no float (OverflowError).
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise ConfigError(key, f"must be a number, got {shown(value)}")
    if minimum is not None and (value <= minimum if strict_min else value < minimum):
        raise ConfigError(key, f"must be {'>' if strict_min else '>='} {minimum:g}, got {shown(value)}")
    if value > maximum:
        raise ConfigError(key, f"must be <= {maximum:g}, got {shown(value)}")
    return float(value)


def _string(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(key, f"must be a non-empty string, got {shown(value)}")
    return value.strip()


def _boolean(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {shown(value)}")
    return value


def _duration(value: object, key: str, positive: bool = True) -> float:
    try:
        seconds = parse_duration(value)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None
    if positive and seconds <= 0:
        raise ConfigError(key, "must be longer than 0s")
    if seconds > MAX_DURATION:
        raise ConfigError(key, f"must be at most 1y, got {shown(value)}")
    return seconds


def _url(value: object, key: str) -> str:
    text = _string(value, key)
    if not text.startswith(("http://", "https://")):
        raise ConfigError(key, f"must be an http:// or https:// URL, got {shown(text)}")
    return text.rstrip("/")


def _opt(raw: Mapping[str, object], name: str, key: str, parse: Callable[[object, str], T], default: T) -> T:
    return parse(raw[name], f"{key}.{name}") if name in raw and raw[name] is not None else default


def _provider(raw: object, key: str, zone: str) -> ProviderConfig:
    entry = _mapping(raw, key)
    if "type" not in entry:
        raise ConfigError(f"{key}.type", f"missing (one of: {', '.join(PROVIDER_KEYS)})")
    kind = _string(entry["type"], f"{key}.type")
    if kind not in PROVIDER_KEYS:
        raise ConfigError(
            f"{key}.type", f"unknown provider type {shown(kind)} (one of: {', '.join(PROVIDER_KEYS)})"
        )
    _check_keys(entry, PROVIDER_KEYS[kind], key)

    if kind == "static":
        if "grams_per_kwh" not in entry:
            raise ConfigError(f"{key}.grams_per_kwh", "missing: a static provider needs a value")
        signal = _opt(entry, "signal", key, _string, "average")
        if signal not in SIGNALS:
            raise ConfigError(f"{key}.signal", f"must be average or marginal, got {shown(signal)}")
        return ProviderConfig(
            type=kind,
            key=key,
            signal=signal,
            zone=_opt(entry, "zone", key, _string, zone),
            grams_per_kwh=_number(entry["grams_per_kwh"], f"{key}.grams_per_kwh", minimum=0.0),
        )

    if kind == "carbon_aware_sdk" and "url" not in entry:
        raise ConfigError(f"{key}.url", "missing: the Carbon Aware SDK is self-hosted, give its base URL")
    url = _opt(entry, "url", key, _url, DEFAULT_URLS.get(kind, ""))

    def secret_pair(name: str) -> tuple[str | None, str | None]:
        env = _opt(entry, f"{name}_env", key, _string, None)
        path = _opt(entry, f"{name}_file", key, _string, None)
        if env is None and path is None:
            raise ConfigError(
                f"{key}.{name}_env", f"missing: set {name}_env or {name}_file (secrets never go in YAML)"
            )
        return env, path

    common = ProviderConfig(
        type=kind,
        key=key,
        zone=zone,
        url=url,
        signal=PROVIDER_SIGNAL[kind],
        refresh=_opt(entry, "refresh", key, _duration, 300.0),
        timeout=_opt(entry, "timeout", key, _duration, 10.0),
        retries=_opt(entry, "retries", key, lambda v, k: _integer(v, k, 0, 10), 2),
        backoff=_opt(entry, "backoff", key, _duration, 1.0),
        forecast=_opt(entry, "forecast", key, _boolean, FORECAST_DEFAULT[kind]),
        forecast_refresh=_opt(entry, "forecast_refresh", key, _duration, 1800.0),
    )
    if kind == "electricitymaps":
        token_env, token_file = secret_pair("token")
        factor = _opt(entry, "emission_factor_type", key, _string, "lifecycle")
        if factor not in ("lifecycle", "direct"):
            raise ConfigError(
                f"{key}.emission_factor_type", f"must be lifecycle or direct, got {shown(factor)}"
            )
        return replace(
            common,
            zone=_opt(entry, "zone", key, _string, zone).upper(),
            token_env=token_env,
            token_file=token_file,
            emission_factor_type=factor,
        )
    if kind == "watttime":
        if "region" not in entry:
            raise ConfigError(f"{key}.region", "missing: WattTime needs a region, e.g. CAISO_NORTH")
        region = _string(entry["region"], f"{key}.region")
        username_env, username_file = secret_pair("username")
        password_env, password_file = secret_pair("password")
        return replace(
            common,
            zone=region,
            region=region,
            username_env=username_env,
            username_file=username_file,
            password_env=password_env,
            password_file=password_file,
            login_url=_opt(entry, "login_url", key, _url, f"{url}/login"),
        )
    if kind == "ukgrid":
        region_id = _opt(entry, "region_id", key, lambda v, k: _integer(v, k, 1, 17), None)
        label = "GB" if region_id is None else f"GB-region-{region_id}"
        return replace(common, zone=label, region_id=region_id)
    if "location" not in entry:
        raise ConfigError(f"{key}.location", "missing: the Carbon Aware SDK needs a location, e.g. eastus")
    location = _string(entry["location"], f"{key}.location")
    return replace(common, zone=location, location=location)


def _integer(value: object, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(key, f"must be a whole number from {low} to {high}, got {shown(value)}")
    return value


def _figure(raw: object, key: str, name: str, default_kg: float | None = None) -> EmbodiedFigure:
    entry = _mapping(raw, key)
    _check_keys(entry, frozenset({"kg", "life_years"}), key)
    if "kg" not in entry and default_kg is None:
        raise ConfigError(f"{key}.kg", "missing: the manufacturing footprint in kg CO2e")
    kg = _opt(entry, "kg", key, lambda v, k: _number(v, k, minimum=0.0), default_kg or 0.0)
    life = _opt(entry, "life_years", key, lambda v, k: _number(v, k, minimum=0.0, strict_min=True), None)
    return EmbodiedFigure(name, kg, life, basis="configured")


def _embodied(raw: object, key: str) -> EmbodiedConfig:
    entry = _mapping(raw, key)
    _check_keys(entry, frozenset({"enabled", "gpu", "node", "default_life_years"}), key)
    enabled = _opt(entry, "enabled", key, _boolean, True)
    life = _opt(
        entry, "default_life_years", key, lambda v, k: _number(v, k, 0.0, strict_min=True), DEFAULT_LIFE_YEARS
    )
    gpus = _mapping(entry.get("gpu"), f"{key}.gpu")
    configured = tuple(
        _figure(value, f"{key}.gpu.{name}", _string(name, f"{key}.gpu")) for name, value in gpus.items()
    )
    node: EmbodiedFigure | None = DEFAULT_NODE
    if "node" in entry:
        node = (
            None if entry["node"] is None else _figure(entry["node"], f"{key}.node", "node", DEFAULT_NODE.kg)
        )
    # A configured key replaces the default of the same name; both stay matchable otherwise.
    names = {f.key.upper() for f in configured}
    figures = configured + tuple(f for f in DEFAULT_GPU_FIGURES if f.key.upper() not in names)
    return EmbodiedConfig(enabled=enabled, gpu=figures, node=node, default_life_years=life)


def parse_carbon_config(raw: object) -> CarbonConfig:
    """A validated ``CarbonConfig`` from the YAML ``carbon:`` mapping (None: every default)."""
    section = _mapping(raw, "carbon")
    _check_keys(section, frozenset({"zone", "pue", "wue", "max_age", "providers", "embodied"}), "carbon")
    zone = _opt(section, "zone", "carbon", _string, embedded.DEFAULT_ZONE).upper()
    if embedded.lookup(zone) is None:
        raise ConfigError(
            "carbon.zone",
            f"unknown zone {shown(zone)}: the embedded table has no row for it "
            "(use an ISO 3166 country code such as DE, WORLD, or a grid region such as US-CAL-CISO)",
        )
    # PUE above 5 or WUE above 20 L/kWh describe no data centre on record: a typo, not a site.
    pue = _opt(section, "pue", "carbon", lambda v, k: _number(v, k, minimum=1.0, maximum=5.0), 1.0)
    wue = _opt(section, "wue", "carbon", lambda v, k: _number(v, k, minimum=0.0, maximum=20.0), None)
    max_age = _opt(section, "max_age", "carbon", _duration, 3600.0)
    raw_providers = section.get("providers")
    if raw_providers is None:
        raw_providers = []
    if not isinstance(raw_providers, list):
        raise ConfigError("carbon.providers", f"must be a list, got {type(raw_providers).__name__}")
    providers: list[ProviderConfig] = []
    for index, item in enumerate(raw_providers):
        provider = _provider(item, f"carbon.providers[{index}]", zone)
        # Metrics label providers by type, so two of one type would collide in one series.
        if any(p.type == provider.type for p in providers):
            raise ConfigError(
                f"carbon.providers[{index}].type", f"provider type {provider.type!r} appears twice"
            )
        providers.append(provider)
    return CarbonConfig(
        zone=zone,
        pue=pue,
        wue=wue,
        max_age=max_age,
        providers=tuple(providers),
        embodied=_embodied(section.get("embodied"), "carbon.embodied"),
    )
