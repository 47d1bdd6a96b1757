"""The ``watttime`` provider: WattTime API v3 marginal intensity (MOER), with token login and renewal."""

from __future__ import annotations

import logging
from typing import Any

from exporter.carbon.config import ProviderConfig
from exporter.carbon.credentials import read_secret
from exporter.carbon.fetch import Fetcher, ProviderError, host_of
from exporter.carbon.provider import (
    ForecastPoint,
    Reading,
    field,
    first,
    grams,
    items,
    points_from,
    timestamp,
)

log = logging.getLogger(__name__)

# 1 lb = 453.59237 g and 1 MWh = 1000 kWh, so lbs/MWh x 0.45359237 = g/kWh.
GRAMS_PER_KWH_PER_LBS_PER_MWH = 0.45359237
# Tokens live 30 minutes; renewing a little early avoids a guaranteed 401 on the last request.
TOKEN_LIFETIME_S = 25 * 60.0


def to_grams_per_kwh(value: float, units: object) -> float:
    """A MOER value in g/kWh; WattTime answers lbs/MWh (also assumed when ``meta.units`` is missing)."""
    if units is None or units == "lbs_co2_per_mwh":
        return value * GRAMS_PER_KWH_PER_LBS_PER_MWH
    if units in ("g_co2_per_kwh", "gco2_per_kwh"):
        return value
    raise ProviderError("malformed", f"unexpected units {units!r} (a percentile index is not an intensity)")


class WattTimeProvider:
    type = "watttime"
    signal = "marginal"
    # The MOER is the CO2 rate of the generators responding to load (watttime.org, "Marginal CO2"):
    # stack emissions, no upstream share.
    basis = "direct"

    def __init__(self, config: ProviderConfig, fetcher: Fetcher) -> None:
        self.url = config.url
        self.zone = config.region
        self._config = config
        self._fetcher = fetcher
        self._token: str | None = None
        self._token_expires = 0.0
        self.logins_total = 0

    def _login(self) -> str:
        c = self._config
        user = read_secret(self.type, "username", c.username_env, c.username_file)
        password = read_secret(self.type, "password", c.password_env, c.password_file)
        self._token = None
        body = self._fetcher.get_json(c.login_url, auth=(user, password))
        token = field(body, "token", "login")
        if not isinstance(token, str) or not token:
            raise ProviderError("malformed", "login answer has no token")
        self.logins_total += 1
        log.info("carbon provider watttime: logged in at %s", host_of(c.login_url))
        self._token = token
        self._token_expires = self._fetcher.clock() + TOKEN_LIFETIME_S
        return token

    def _get(self, path: str, params: dict[str, str]) -> Any:
        token = self._token
        fresh = token is None or self._fetcher.clock() >= self._token_expires
        if token is None or fresh:
            token = self._login()
        try:
            return self._fetcher.get_json(
                f"{self.url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}
            )
        except ProviderError as exc:
            if exc.kind != "auth":
                raise
            if fresh:  # a token minted a moment ago is refused: the account lacks access, not expiry
                self._token = None
                raise
        # 401/403 with a token we thought valid: it expired or was revoked; log in once more.
        token = self._login()
        return self._fetcher.get_json(
            f"{self.url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}
        )

    def _forecast_body(self, hours: int) -> tuple[list[Any], object, float]:
        body = self._get(
            "/v3/forecast", {"region": self.zone, "signal_type": "co2_moer", "horizon_hours": str(hours)}
        )
        meta = body.get("meta") if isinstance(body, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        period = meta.get("data_point_period_seconds")
        period_s = float(period) if isinstance(period, int | float) and period > 0 else 300.0
        return items(field(body, "data", "forecast"), "forecast data"), meta.get("units"), period_s

    def current(self) -> Reading:
        data, units, _ = self._forecast_body(0)
        point = first(data, "nowcast data")
        value = to_grams_per_kwh(grams(field(point, "value", "nowcast"), "nowcast value"), units)
        when = point.get("point_time")
        # The current value is the first point of a forecast run (horizon 0): a model estimate.
        return Reading(value, timestamp(when, "point_time") if when is not None else None, True)

    def forecast(self) -> tuple[ForecastPoint, ...] | None:
        if not self._config.forecast:
            return None
        data, units, period_s = self._forecast_body(24)
        pairs = [
            (
                timestamp(field(p, "point_time", "forecast"), "point_time"),
                to_grams_per_kwh(grams(field(p, "value", "forecast"), "forecast value"), units),
            )
            for p in data
        ]
        return points_from(pairs, period_s)
