"""Each provider request has a total deadline, providers refresh independently, and shutdown never waits.

The fake APIs drip their bodies (or headers) one byte at a time, as an overloaded API or a stuck proxy
does: every byte arrives within a per-read timeout, so only a deadline over the whole answer ends it.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from carbon_servers import FakeApi, Reply, casdk_bylocation, em_latest, iso, wait_until

from exporter.carbon.config import parse_carbon_config
from exporter.carbon.fetch import Fetcher, ProviderError, track_deadlines
from exporter.carbon.service import CarbonService
from tests.exporter_proc import start_exporter
from tests.metrics_text import parse, select

EM_PATH = "/carbon-intensity/latest"
SDK_PATH = "/emissions/bylocation"


@pytest.fixture(autouse=True)
def em_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_EM_TOKEN", "em-secret-123")


def fresh_em(value: float) -> dict[str, Any]:
    return em_latest(value, when=iso(time.time() - 300))


def fresh_sdk(value: float) -> list[dict[str, Any]]:
    return casdk_bylocation([(iso(time.time() - 300), value)])


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body=em_latest(), drip=0.2, endless=True),  # a body that never ends
        Reply(body=em_latest(), drip=0.3),  # a complete body, but too slow: 20 s at 0.3 s a byte
        Reply(drip_headers=True, drip=0.2),  # headers that never end: requests alone cannot bound it
    ],
)
def test_a_dripping_answer_ends_at_the_deadline(api: FakeApi, reply: Reply) -> None:
    api.script("/slow", reply)
    api.script("/fast", Reply(body=em_latest(123)))
    fetcher = Fetcher(track_deadlines(requests.Session()), timeout=1.0, retries=0)
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        fetcher.get_json(api.url + "/slow")
    took = time.monotonic() - started
    assert caught.value.kind == "timeout"
    # Cut at the deadline (plus the abort grace for headers), not after a per-read timeout per byte.
    assert 0.9 < took < 3.0, took
    assert fetcher.in_flight_since is None
    # The same fetcher (and thread) works normally afterwards.
    assert fetcher.get_json(api.url + "/fast")["carbonIntensity"] == 123


def test_oversized_body_is_refused(api: FakeApi) -> None:
    api.script("/big", Reply(body=b"[" + b"1," * 3_000_000 + b"1]"))
    fetcher = Fetcher(requests.Session(), timeout=10.0, retries=0)
    with pytest.raises(ProviderError) as caught:
        fetcher.get_json(api.url + "/big")
    assert caught.value.kind == "malformed" and "larger than" in str(caught.value)


def service_with_drip_first(api: FakeApi, em_timeout: str) -> CarbonService:
    config = parse_carbon_config(
        {
            "zone": "DE",
            "providers": [
                {
                    "type": "electricitymaps",
                    "url": api.url,
                    "token_env": "TEST_EM_TOKEN",
                    "timeout": em_timeout,
                    "retries": 0,
                    "refresh": "1s",
                },
                {"type": "carbon_aware_sdk", "url": api.url, "location": "eastus", "refresh": "1s"},
            ],
        }
    )
    return CarbonService(config)  # its own sessions, deadlines tracked


def state(svc: CarbonService, provider: str) -> Any:
    return next(p for p in svc.providers() if p.provider == provider)


def test_a_dripping_provider_is_down_at_its_deadline_and_stalls_nobody(api: FakeApi) -> None:
    # Electricity Maps answers once, then drips forever; the Carbon Aware SDK stays healthy.
    api.script(EM_PATH, Reply(body=fresh_em(300)), Reply(body=em_latest(), drip=0.2, endless=True))
    api.script(SDK_PATH, Reply(body=fresh_sdk(250)))
    svc = service_with_drip_first(api, em_timeout="2s")
    svc.start()
    try:
        wait_until(lambda: state(svc, "electricitymaps").up and len(api.hits(EM_PATH)) >= 2)
        dripping_since = time.monotonic()
        sdk_before = len(api.hits(SDK_PATH))
        # While Electricity Maps drips, the SDK keeps its own 1 s rhythm on its own thread.
        wait_until(lambda: len(api.hits(SDK_PATH)) >= sdk_before + 2, timeout=10)
        # Down once its 2 s deadline has passed (not after 25 s of dripping, nor never).
        wait_until(lambda: not state(svc, "electricitymaps").up, timeout=10)
        assert time.monotonic() - dripping_since < 6.0
        wait_until(lambda: state(svc, "electricitymaps").errors_total.get("timeout", 0) >= 1, timeout=10)
        # Its last good value stays in use (its data is 5 minutes old, far from max_age): no flapping
        # to the next provider because one refresh failed.
        average = next(i for i in svc.intensities() if i.signal == "average")
        assert (average.provider, average.grams_per_kwh) == ("electricitymaps", 300.0)
        assert state(svc, "carbon_aware_sdk").up
    finally:
        started = time.monotonic()
        svc.stop()
        # stop() gives hung requests STOP_WAIT_S (1 s) in all; the drip would take forever.
        assert time.monotonic() - started < 5.0  # never waits for the drip


def test_stop_returns_at_once_with_a_request_hanging(api: FakeApi) -> None:
    api.script(EM_PATH, Reply(body=em_latest(), drip=0.2, endless=True))
    api.script(SDK_PATH, Reply(body=fresh_sdk(250)))
    svc = service_with_drip_first(api, em_timeout="60s")
    svc.start()
    wait_until(lambda: api.hits(EM_PATH) and state(svc, "carbon_aware_sdk").up)
    average = next(i for i in svc.intensities() if i.signal == "average")
    assert average.provider == "carbon_aware_sdk"  # the next provider serves while the first hangs
    started = time.monotonic()
    svc.stop()
    assert time.monotonic() - started < 5.0  # STOP_WAIT_S (1 s), not the 60 s deadline nor the drip


@pytest.mark.integration
def test_exporter_serves_the_healthy_provider_and_exits_on_sigterm_within_5s_during_a_drip(
    api: FakeApi, tmp_path: Path
) -> None:
    # The measured case: a body dripping 1 byte/s beside a healthy provider. The deadline is set
    # long (60 s) so that the drip is certainly still in flight when SIGTERM arrives.
    api.script(EM_PATH, Reply(body=em_latest(), drip=1.0, endless=True))
    api.script(SDK_PATH, Reply(body=fresh_sdk(250)))
    config = tmp_path / "c.yml"
    config.write_text(
        f"""carbon:
  zone: DE
  providers:
    - type: electricitymaps
      url: {api.url}
      token_env: TEST_EM_TOKEN
      timeout: 60s
      retries: 0
      refresh: 1s
    - type: carbon_aware_sdk
      url: {api.url}
      location: eastus
      refresh: 1s
"""
    )
    exp = start_exporter(["--source.gpu=simulated", "--source.cpu=none", f"--config.file={config}"])
    try:

        def healthy_in_use() -> dict[Any, float]:
            samples = parse(exp.metrics())
            up = select(samples, "footprint_carbon_provider_up", provider="electricitymaps")
            intensity = select(samples, "footprint_grid_carbon_intensity_grams_per_kwh", signal="average")
            providers = [dict(k)["provider"] for k in intensity]
            return samples if list(up.values()) == [0.0] and providers == ["carbon_aware_sdk"] else {}

        samples = wait_until(healthy_in_use)
        assert select(samples, "footprint_grid_carbon_intensity_grams_per_kwh", basis="lifecycle")
        hits = len(api.hits(SDK_PATH))
        wait_until(lambda: len(api.hits(SDK_PATH)) >= hits + 2, timeout=15)  # still refreshed
        assert len(api.hits(EM_PATH)) == 1  # the one dripping request, still in flight
        started = time.monotonic()
        code, log = exp.stop(signal.SIGTERM, timeout=30)
        took = time.monotonic() - started
    except BaseException:
        exp.stop(signal.SIGKILL)
        raise
    print(f"\nSIGTERM during a 1 byte/s drip: exited in {took:.2f} s")
    assert code == 0, log
    assert took < 5.0, (took, log[-2000:])
    assert "stopped" in log
