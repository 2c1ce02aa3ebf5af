"""The CircuitBreaker's kafka health probe against a mock cluster that really hangs."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from sluice.testing import MockKafkaCluster
from sluice_operator.sources.kafka_probe import KafkaProbe, ProbeResult, probe


@pytest.fixture
def cluster() -> Iterator[MockKafkaCluster]:
    with MockKafkaCluster(num_brokers=3, topics={"t": 1}) as mock:
        yield mock


@pytest.fixture
def prober() -> Iterator[KafkaProbe]:
    kafka_probe = KafkaProbe(max_in_flight=1)
    yield kafka_probe
    kafka_probe.close()


async def _until_healthy(prober: KafkaProbe, bootstrap: str, within: float = 10.0) -> ProbeResult:
    deadline = time.monotonic() + within
    result = await prober.probe(bootstrap, timeout_seconds=1.0)
    while not result.healthy and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        result = await prober.probe(bootstrap, timeout_seconds=1.0)
    return result


async def test_healthy_cluster_is_healthy(cluster: MockKafkaCluster) -> None:
    result = await probe(cluster.bootstrap_servers, timeout_seconds=3.0)

    assert result.healthy, result
    assert result.reason == "Ok"
    assert result.latency >= 0
    assert "3 brokers" in result.message


async def test_paused_cluster_fails_then_recovers(cluster: MockKafkaCluster, prober: KafkaProbe) -> None:
    assert (await prober.probe(cluster.bootstrap_servers, timeout_seconds=3.0)).healthy

    cluster.pause()
    try:
        timeout = 1.0
        started = time.monotonic()
        hung = await prober.probe(cluster.bootstrap_servers, timeout_seconds=timeout)
        elapsed = time.monotonic() - started
    finally:
        cluster.resume()

    assert not hung.healthy
    assert hung.reason in ("Timeout", "Transport"), hung
    assert elapsed < timeout + 1.0  # the probe gives up on time, not at librdkafka's defaults

    healed = await _until_healthy(prober, cluster.bootstrap_servers)
    assert healed.healthy, healed


async def test_hung_probes_are_capped_and_leave_no_threads(cluster: MockKafkaCluster, prober: KafkaProbe) -> None:
    assert (await prober.probe(cluster.bootstrap_servers, timeout_seconds=3.0)).healthy
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    cluster.pause()
    ticking = asyncio.create_task(ticker())
    try:
        first = asyncio.create_task(prober.probe(cluster.bootstrap_servers, timeout_seconds=1.0))
        await asyncio.sleep(0.05)
        assert prober.in_flight == 1
        second = await prober.probe(cluster.bootstrap_servers, timeout_seconds=1.0)
        hung = await first
    finally:
        ticking.cancel()
        cluster.resume()

    assert second.reason == "ProbeBacklog" and not second.healthy
    assert not hung.healthy
    assert ticks >= 10  # the event loop ran while librdkafka waited
    for _ in range(300):  # the hung probe's thread ends by its own timeout
        if prober.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert prober.in_flight == 0


async def test_unreachable_cluster_is_unhealthy(prober: KafkaProbe) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    result = await prober.probe(f"127.0.0.1:{port}", timeout_seconds=0.5)

    assert not result.healthy
    assert result.reason in ("Transport", "Timeout", "AllBrokersDown"), result


async def test_invalid_client_config_is_unhealthy(cluster: MockKafkaCluster, prober: KafkaProbe) -> None:
    result = await prober.probe(cluster.bootstrap_servers, config={"security.protocol": "nope"}, timeout_seconds=1)

    assert not result.healthy
    assert result.reason == "InvalidConfig"
