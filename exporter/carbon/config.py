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
from exporter.carbon.market import HOURS_PER_DAY, Instrument, MarketConfig
from exporter.durations import parse_duration
from exporter.errors import ConfigError, shown

SIGNALS = ("average", "marginal")
BASES = embedded.BASES
# The plausible range of grid intensity: the dirtiest generation (lignite, oil) emits about 1,000-1,300
# g/kWh, so 2,000 leaves room for any real grid and still refuses a unit error (1e12, or lbs/MWh taken
# as g/kWh for a coal-heavy grid, would still pass: that check is the provider's).
PLAUSIBLE_MAX_DEFAULT = 2000.0
# A value read from data with its own time may be this old before the chain falls through: an hourly
# value (Electricity Maps) is published some minutes after its hour starts and then serves the hour.
MAX_AGE_DEFAULT = 3 * 3600.0
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
    "carbon_aware_sdk": _NETWORK_KEYS | {"location", "signal", "basis"},
    "static": frozenset({"type", "grams_per_kwh", "signal", "zone", "basis"}),
    # Another exporter relaying its intensity (one fetch per zone for a fleet); no forecast of its own.
    "central": frozenset({"type", "url", "refresh", "timeout", "retries", "backoff", "zone"})
    | {"username_env", "username_file", "password_env", "password_file"},
}
PROVIDER_SIGNAL = {
    "electricitymaps": "average",
    "watttime": "marginal",
    "ukgrid": "average",
    "carbon_aware_sdk": "average",
    "central": "average",
}
# The emission-factor basis each API serves. WattTime's MOER and the GB Carbon Intensity API count
# the CO2 of generation only (their documentation); Electricity Maps serves either, as asked.
PROVIDER_BASIS = {"watttime": "direct", "ukgrid": "direct"}
# Electricity Maps' forecast is a paid endpoint: off unless asked for, so a free token does not
# count an auth error every refresh.
FORECAST_DEFAULT = {
    "electricitymaps": False,
    "watttime": True,
    "ukgrid": True,
    "carbon_aware_sdk": True,
    "central": False,
}


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
    # The emission-factor basis of its values; "" for a central exporter, whose answers carry theirs.
    basis: str = "lifecycle"
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
    max_age: float = MAX_AGE_DEFAULT
    providers: tuple[ProviderConfig, ...] = ()
    embodied: EmbodiedConfig = field(default_factory=EmbodiedConfig)
    # The emission-factor basis of each signal's chain; a provider on another basis is never used.
    basis: str = "lifecycle"
    marginal_basis: str = "direct"
    plausible_min: float = 0.0
    plausible_max: float = PLAUSIBLE_MAX_DEFAULT
    market: MarketConfig | None = None

    def chain_basis(self, signal: str) -> str:
        return self.marginal_basis if signal == "marginal" else self.basis


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


def _choice(value: object, key: str, allowed: tuple[str, ...]) -> str:
    text = _string(value, key)
    if text not in allowed:
        raise ConfigError(key, f"must be {' or '.join(allowed)}, got {shown(text)}")
    return text


def _provider(
    raw: object, key: str, zone: str, bases: Mapping[str, str], plausible: tuple[float, float]
) -> ProviderConfig:
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
        signal = _opt(entry, "signal", key, lambda v, k: _choice(v, k, SIGNALS), "average")
        value = _number(entry["grams_per_kwh"], f"{key}.grams_per_kwh", minimum=0.0)
        if not plausible[0] <= value <= plausible[1]:
            raise ConfigError(
                f"{key}.grams_per_kwh",
                f"{value:g} is outside the plausible range {plausible[0]:g}-{plausible[1]:g} g/kWh "
                "(carbon.plausible)",
            )
        return ProviderConfig(
            type=kind,
            key=key,
            signal=signal,
            zone=_opt(entry, "zone", key, _string, zone),
            # A figure of unstated basis is taken as the chain's: the user chose it for this chain.
            basis=_opt(entry, "basis", key, lambda v, k: _choice(v, k, BASES), bases[signal]),
            grams_per_kwh=value,
        )

    if kind in ("carbon_aware_sdk", "central") and "url" not in entry:
        what = "the Carbon Aware SDK is self-hosted" if kind == "carbon_aware_sdk" else "a central exporter"
        raise ConfigError(f"{key}.url", f"missing: {what}, give its base URL")
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
        basis=PROVIDER_BASIS.get(kind, bases["average"]),
        refresh=_opt(entry, "refresh", key, _duration, 300.0),
        timeout=_opt(entry, "timeout", key, _duration, 10.0),
        retries=_opt(entry, "retries", key, lambda v, k: _integer(v, k, 0, 10), 2),
        backoff=_opt(entry, "backoff", key, _duration, 1.0),
        forecast=_opt(entry, "forecast", key, _boolean, FORECAST_DEFAULT[kind]) and kind != "central",
        forecast_refresh=_opt(entry, "forecast_refresh", key, _duration, 1800.0),
    )
    if kind == "electricitymaps":
        token_env, token_file = secret_pair("token")
        # Asked for on the chain's basis unless configured otherwise (then it is skipped, and said).
        factor = _opt(entry, "emission_factor_type", key, lambda v, k: _choice(v, k, BASES), bases["average"])
        return replace(
            common,
            zone=_opt(entry, "zone", key, _string, zone).upper(),
            token_env=token_env,
            token_file=token_file,
            basis=factor,
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
    if kind == "central":
        user_env = _opt(entry, "username_env", key, _string, None)
        user_file = _opt(entry, "username_file", key, _string, None)
        pass_env = _opt(entry, "password_env", key, _string, None)
        pass_file = _opt(entry, "password_file", key, _string, None)
        if (user_env or user_file) and not (pass_env or pass_file):
            raise ConfigError(
                f"{key}.password_env", "missing: basic auth needs a password_env or password_file"
            )
        if (pass_env or pass_file) and not (user_env or user_file):
            raise ConfigError(
                f"{key}.username_env", "missing: basic auth needs a username_env or username_file"
            )
        return replace(
            common,
            zone=_opt(entry, "zone", key, _string, zone).upper(),
            basis="",
            refresh=_opt(entry, "refresh", key, _duration, 60.0),
            username_env=user_env,
            username_file=user_file,
            password_env=pass_env,
            password_file=pass_file,
        )
    if "location" not in entry:
        raise ConfigError(f"{key}.location", "missing: the Carbon Aware SDK needs a location, e.g. eastus")
    location = _string(entry["location"], f"{key}.location")
    # The SDK serves what its data source gives: Electricity Maps data is an average on Electricity
    # Maps' (lifecycle) basis, WattTime data is the marginal MOER of direct emissions.
    signal = _opt(entry, "signal", key, lambda v, k: _choice(v, k, SIGNALS), "average")
    default_basis = "direct" if signal == "marginal" else "lifecycle"
    basis = _opt(entry, "basis", key, lambda v, k: _choice(v, k, BASES), default_basis)
    return replace(common, zone=location, location=location, signal=signal, basis=basis)


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


def _plausible(raw: object, key: str) -> tuple[float, float]:
    entry = _mapping(raw, key)
    _check_keys(entry, frozenset({"min_grams_per_kwh", "max_grams_per_kwh"}), key)
    low = _opt(entry, "min_grams_per_kwh", key, lambda v, k: _number(v, k, minimum=0.0), 0.0)
    high = _opt(
        entry, "max_grams_per_kwh", key, lambda v, k: _number(v, k, minimum=0.0), PLAUSIBLE_MAX_DEFAULT
    )
    if high <= low:
        raise ConfigError(f"{key}.max_grams_per_kwh", f"must be more than min_grams_per_kwh ({low:g})")
    return low, high


def _factor(value: object, key: str, plausible: tuple[float, float]) -> float:
    grams = _number(value, key, minimum=0.0)
    if grams > plausible[1]:
        raise ConfigError(
            key, f"{grams:g} g/kWh is above the plausible maximum {plausible[1]:g} (carbon.plausible)"
        )
    return grams


def _text(raw: Mapping[str, object], name: str, key: str) -> str:
    value = raw.get(name)
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a year written as a number
    return _string(value, f"{key}.{name}")


def _share(value: object, key: str) -> float:
    share = _number(value, key, minimum=0.0)
    if share > 1.0:
        raise ConfigError(key, f"must be a fraction from 0 to 1, got {share:g}")
    return share


def _instrument(raw: object, key: str, plausible: tuple[float, float]) -> Instrument:
    entry = _mapping(raw, key)
    _check_keys(entry, frozenset({"name", "share", "hourly_share", "grams_per_kwh", "source", "year"}), key)
    if "name" not in entry:
        raise ConfigError(f"{key}.name", "missing: name the instrument (it labels the factor info metric)")
    if "grams_per_kwh" not in entry:
        raise ConfigError(f"{key}.grams_per_kwh", "missing: the instrument's emission factor")
    name = _string(entry["name"], f"{key}.name")
    grams = _factor(entry["grams_per_kwh"], f"{key}.grams_per_kwh", plausible)
    if ("share" in entry) == ("hourly_share" in entry):
        raise ConfigError(f"{key}.share", "give exactly one of share and hourly_share")
    hourly: tuple[float, ...] | None = None
    share = 0.0
    if "hourly_share" in entry:
        values = entry["hourly_share"]
        if not isinstance(values, list) or len(values) != HOURS_PER_DAY:
            raise ConfigError(
                f"{key}.hourly_share", f"must be a list of {HOURS_PER_DAY} fractions (UTC hours 0-23)"
            )
        hourly = tuple(_share(v, f"{key}.hourly_share[{i}]") for i, v in enumerate(values))
    else:
        share = _share(entry["share"], f"{key}.share")
    return Instrument(name, grams, share, hourly, _text(entry, "source", key), _text(entry, "year", key))


def _market(raw: object, key: str, plausible: tuple[float, float], basis: str) -> MarketConfig | None:
    if raw is None:
        return None
    entry = _mapping(raw, key)
    allowed = {
        "instruments",
        "supplier_grams_per_kwh",
        "residual_grams_per_kwh",
        "basis",
        "supplier_source",
        "supplier_year",
        "residual_source",
        "residual_year",
    }
    _check_keys(entry, frozenset(allowed), key)
    raw_instruments = entry.get("instruments") or []
    if not isinstance(raw_instruments, list):
        raise ConfigError(f"{key}.instruments", f"must be a list, got {type(raw_instruments).__name__}")
    instruments = tuple(
        _instrument(item, f"{key}.instruments[{i}]", plausible) for i, item in enumerate(raw_instruments)
    )
    names = [i.name for i in instruments]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(f"{key}.instruments[{index}].name", f"instrument {shown(name)} appears twice")
    supplier = _opt(entry, "supplier_grams_per_kwh", key, lambda v, k: _factor(v, k, plausible), None)
    residual = _opt(entry, "residual_grams_per_kwh", key, lambda v, k: _factor(v, k, plausible), None)
    if supplier is None and residual is None:
        full = all(
            min(1.0, sum(i.share_at(hour) for i in instruments)) >= 1.0 for hour in range(HOURS_PER_DAY)
        )
        if not full:
            raise ConfigError(
                f"{key}.residual_grams_per_kwh",
                "missing: consumption not covered by instruments needs a supplier or residual-mix factor",
            )
    return MarketConfig(
        instruments=instruments,
        supplier_grams_per_kwh=supplier,
        residual_grams_per_kwh=residual,
        basis=_opt(entry, "basis", key, lambda v, k: _choice(v, k, BASES), basis),
        supplier_source=_text(entry, "supplier_source", key),
        supplier_year=_text(entry, "supplier_year", key),
        residual_source=_text(entry, "residual_source", key),
        residual_year=_text(entry, "residual_year", key),
    )


SECTION_KEYS = frozenset(
    {
        "zone",
        "pue",
        "wue",
        "max_age",
        "providers",
        "embodied",
        "basis",
        "marginal_basis",
        "plausible",
        "market",
    }
)


def parse_carbon_config(raw: object) -> CarbonConfig:
    """A validated ``CarbonConfig`` from the YAML ``carbon:`` mapping (None: every default)."""
    section = _mapping(raw, "carbon")
    _check_keys(section, SECTION_KEYS, "carbon")
    zone = _opt(section, "zone", "carbon", _string, embedded.DEFAULT_ZONE).upper()
    if not embedded.knows(zone):
        raise ConfigError(
            "carbon.zone",
            f"unknown zone {shown(zone)}: the embedded table has no row for it "
            "(use an ISO 3166 country code such as DE, WORLD, or a grid region such as US-CAL-CISO)",
        )
    # PUE above 5 or WUE above 20 L/kWh describe no data centre on record: a typo, not a site.
    pue = _opt(section, "pue", "carbon", lambda v, k: _number(v, k, minimum=1.0, maximum=5.0), 1.0)
    wue = _opt(section, "wue", "carbon", lambda v, k: _number(v, k, minimum=0.0, maximum=20.0), None)
    max_age = _opt(section, "max_age", "carbon", _duration, MAX_AGE_DEFAULT)
    basis = _opt(section, "basis", "carbon", lambda v, k: _choice(v, k, BASES), "lifecycle")
    marginal_basis = _opt(section, "marginal_basis", "carbon", lambda v, k: _choice(v, k, BASES), "direct")
    plausible = _plausible(section.get("plausible"), "carbon.plausible")
    bases = {"average": basis, "marginal": marginal_basis}
    raw_providers = section.get("providers")
    if raw_providers is None:
        raw_providers = []
    if not isinstance(raw_providers, list):
        raise ConfigError("carbon.providers", f"must be a list, got {type(raw_providers).__name__}")
    providers: list[ProviderConfig] = []
    for index, item in enumerate(raw_providers):
        provider = _provider(item, f"carbon.providers[{index}]", zone, bases, plausible)
        # Metrics label providers by type, so two of one type would collide in one series.
        if any(p.type == provider.type for p in providers):
            raise ConfigError(
                f"carbon.providers[{index}].type", f"provider type {provider.type!r} appears twice"
            )
        providers.append(provider)
    # The average chain must always end in a value on its basis: the embedded table or a static figure.
    last_resort = any(p.type == "static" and p.signal == "average" and p.basis == basis for p in providers)
    if embedded.lookup(zone, basis) is None and not last_resort:
        raise ConfigError(
            "carbon.basis",
            f"the embedded table has no {basis}-basis figure for zone {zone}: add a static provider with "
            f"basis: {basis} (your own figure) as the chain's last resort",
        )
    return CarbonConfig(
        zone=zone,
        pue=pue,
        wue=wue,
        max_age=max_age,
        providers=tuple(providers),
        embodied=_embodied(section.get("embodied"), "carbon.embodied"),
        basis=basis,
        marginal_basis=marginal_basis,
        plausible_min=plausible[0],
        plausible_max=plausible[1],
        market=_market(section.get("market"), "carbon.market", plausible, basis),
    )
