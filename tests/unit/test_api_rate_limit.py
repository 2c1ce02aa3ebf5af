"""SLUICE_API_QPS / SLUICE_API_BURST: the token bucket on the operator's own writes."""

from __future__ import annotations

import asyncio

import pytest

from sluice_operator.kube import Connection, KubeClient, WriteLimiter
from sluice_operator.settings import Settings, SettingsError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_qps() -> None:
    clock = Clock()
    limiter = WriteLimiter(10, 5, clock=clock)
    assert [limiter.reserve() for _ in range(5)] == [0.0] * 5  # the burst goes at once
    assert limiter.reserve() == pytest.approx(0.1)  # then one every 1/qps, in arrival order
    assert limiter.reserve() == pytest.approx(0.2)
    clock.now += 10  # a quiet spell refills the bucket up to the burst, not beyond
    assert [limiter.reserve() for _ in range(5)] == [0.0] * 5
    assert limiter.reserve() == pytest.approx(0.1)


def test_zero_qps_is_no_limit() -> None:
    limiter = WriteLimiter(0, 1, clock=Clock())
    assert all(limiter.reserve() == 0.0 for _ in range(1000))


async def test_concurrent_writers_are_spaced() -> None:
    limiter = WriteLimiter(50, 2)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(limiter.acquire() for _ in range(12)))
    assert loop.time() - start >= (12 - 2) / 50 * 0.9
    assert limiter.waits == 10


def test_settings_and_client_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.api.qps, settings.api.burst) == (100.0, 200)
    client = KubeClient(Connection(server="http://127.0.0.1:1"))
    assert (client.limiter.qps, client.limiter.burst) == (100.0, 200)
    assert Settings.from_env({"SLUICE_API_QPS": "0"}).api.qps == 0
    with pytest.raises(SettingsError, match="SLUICE_API_BURST"):
        Settings.from_env({"SLUICE_API_BURST": "0"})
    with pytest.raises(SettingsError, match="SLUICE_API_QPS"):
        Settings.from_env({"SLUICE_API_QPS": "-1"})
