"""Direct consumer lag against the librdkafka mock cluster over real sockets."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from sluice.testing import MockKafkaCluster
from sluice_operator.sources.kafka import (
    KafkaLagSource,
    KafkaSecretError,
    kafka_config_from_secret,
    partition_lag,
    read_lag,
    redact,
)
from sluice_operator.sources.reading import SignalStatus

PER_PARTITION = 10


@pytest.fixture(scope="module")
def cluster() -> Iterator[MockKafkaCluster]:
    with MockKafkaCluster(topics={"orders": 3, "refunds": 3, "retained": 3, "other": 2}) as mock:
        producer = Producer({"bootstrap.servers": mock.bootstrap_servers})
        for topic, partitions in (("orders", 3), ("refunds", 3), ("retained", 3), ("other", 2)):
            for p in range(partitions):
                for i in range(PER_PARTITION):
                    producer.produce(topic, f"{topic}-{p}-{i}".encode(), partition=p)
        assert producer.flush(10) == 0
        yield mock


@pytest.fixture
def source() -> Iterator[KafkaLagSource]:
    lag_source = KafkaLagSource(max_workers=2)
    yield lag_source
    lag_source.close()


def _consume_and_commit(bootstrap: str, group: str, commit_upto: dict[str, dict[int, int]]) -> None:
    """A real group member: subscribe, consume, then commit ``topic -> partition -> next offset``.

    One member per group on purpose: librdkafka's mock makes a later member of the same group
    wait for the departed member's session timeout before it gets an assignment.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe(list(commit_upto))
    wanted = {(t, p): upto for t, parts in commit_upto.items() for p, upto in parts.items()}
    reached: set[tuple[str, int]] = set()
    deadline = time.monotonic() + 15
    while reached != set(wanted) and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None or msg.error() is not None:
            continue
        key = (msg.topic() or "", msg.partition() or 0)
        if key in wanted and (msg.offset() or 0) >= wanted[key] - 1:
            reached.add(key)
    assert reached == set(wanted), f"consumer did not reach {wanted}"
    consumer.commit(offsets=[TopicPartition(t, p, upto) for (t, p), upto in wanted.items()], asynchronous=False)
    consumer.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_partition_lag_rules() -> None:
    assert partition_lag(high=10, low=0, committed=7) == 3
    assert partition_lag(high=10, low=4, committed=None) == 6  # never committed: from the low watermark
    assert partition_lag(high=10, low=4, committed=-1001) == 6  # OFFSET_INVALID is "no commit"
    assert partition_lag(high=10, low=4, committed=2) == 6  # deleted records are not lag
    assert partition_lag(high=10, low=0, committed=12) == 0  # never negative


async def test_lag_is_exact_after_partial_commits(cluster: MockKafkaCluster, source: KafkaLagSource) -> None:
    _consume_and_commit(cluster.bootstrap_servers, "billing", {"orders": {0: 7, 1: 10}})

    reading = await source.read_lag(cluster.bootstrap_servers, "billing", ["orders"], timeout_seconds=5)

    # p0: 10 - 7, p1: fully consumed, p2: never committed -> all 10 from the low watermark 0
    assert reading.status is SignalStatus.OK, reading
    assert reading.value == 3 + 0 + 10
    assert reading.series == 3
    assert reading.reason == "Ok"
    assert reading.consumed == 7 + 10 + 0  # the group's position: what DrainTime's mu is the rate of

    # DrainTime in kafka mode: mu is the change of that position between two polls.
    _consume_and_commit(cluster.bootstrap_servers, "billing", {"orders": {0: 10, 2: 4}})
    later = await source.read_lag(cluster.bootstrap_servers, "billing", ["orders"], timeout_seconds=5)
    assert later.consumed is not None and later.consumed - reading.consumed == 3 + 4


async def test_records_deleted_by_retention_are_not_lag(cluster: MockKafkaCluster, source: KafkaLagSource) -> None:
    _consume_and_commit(cluster.bootstrap_servers, "audit", {"retained": {0: 2}})
    cluster.delete_records("retained", 0, 5)  # committed 2 is now below the low watermark 5
    cluster.delete_records("retained", 1, 3)  # no commit: counts from the new low watermark 3

    reading = await source.read_lag(cluster.bootstrap_servers, "audit", ["retained"], timeout_seconds=5)

    assert reading.status is SignalStatus.OK, reading
    assert reading.value == (10 - 5) + (10 - 3) + 10


async def test_unknown_group_counts_every_retained_record(cluster: MockKafkaCluster) -> None:
    reading = await read_lag(cluster.bootstrap_servers, "nobody-ever", ["refunds", "other"], timeout_seconds=5)

    assert reading.status is SignalStatus.OK, reading
    assert reading.value == 5 * PER_PARTITION
    assert reading.series == 5


async def test_lag_sums_over_topics(cluster: MockKafkaCluster, source: KafkaLagSource) -> None:
    _consume_and_commit(cluster.bootstrap_servers, "multi", {"refunds": {0: 10, 1: 10, 2: 4}, "other": {1: 9}})

    reading = await source.read_lag(cluster.bootstrap_servers, "multi", ["refunds", "other"], timeout_seconds=5)

    assert reading.status is SignalStatus.OK, reading
    assert reading.value == (0 + 0 + 6) + (10 + 1)
    assert reading.series == 5


async def test_unknown_topic_is_a_spec_error(cluster: MockKafkaCluster, source: KafkaLagSource) -> None:
    reading = await source.read_lag(cluster.bootstrap_servers, "billing", ["orders", "ordres"], timeout_seconds=5)

    assert reading.status is SignalStatus.SPEC_ERROR
    assert reading.reason == "UnknownTopic"
    assert "ordres" in reading.message
    assert reading.value is None


async def test_unreachable_cluster_is_unavailable_within_the_timeout(source: KafkaLagSource) -> None:
    timeout = 1.0
    started = time.monotonic()
    reading = await source.read_lag(f"127.0.0.1:{_closed_port()}", "g", ["t"], timeout_seconds=timeout)
    elapsed = time.monotonic() - started

    assert reading.status is SignalStatus.UNAVAILABLE
    assert reading.reason in ("Transport", "Timeout", "AllBrokersDown"), reading
    assert reading.message
    assert elapsed < timeout + 1.5  # bounded by the timeout, not librdkafka's defaults


async def test_hung_cluster_times_out_without_blocking_the_loop(source: KafkaLagSource) -> None:
    with MockKafkaCluster(num_brokers=1, topics={"t": 1}) as mock:
        warm = await source.read_lag(mock.bootstrap_servers, "g", ["t"], timeout_seconds=5)
        assert warm.status is SignalStatus.OK, warm

        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        mock.pause()
        ticking = asyncio.create_task(ticker())
        try:
            reading = await source.read_lag(mock.bootstrap_servers, "g", ["t"], timeout_seconds=1.0)
        finally:
            ticking.cancel()
            mock.resume()

        assert reading.status is SignalStatus.UNAVAILABLE
        assert reading.reason in ("Timeout", "Transport"), reading
        assert ticks >= 10  # the loop kept running while librdkafka waited

        healed = await source.read_lag(mock.bootstrap_servers, "g", ["t"], timeout_seconds=5)
        assert healed.status is SignalStatus.OK, healed


async def test_bad_client_config_from_secret_is_a_spec_error(cluster: MockKafkaCluster) -> None:
    config = kafka_config_from_secret({"security.protocol": _b64("carrier-pigeon")})
    reading = await read_lag(cluster.bootstrap_servers, "g", ["orders"], config=config, timeout_seconds=2)

    assert reading.status is SignalStatus.SPEC_ERROR
    assert reading.reason == "InvalidConfig"


async def test_secret_config_reaches_the_client(cluster: MockKafkaCluster) -> None:
    config = kafka_config_from_secret({"client.id": _b64("tenant-a"), "securityProtocol": _b64("plaintext")})
    reading = await read_lag(cluster.bootstrap_servers, "nobody", ["orders"], config=config, timeout_seconds=5)

    assert reading.status is SignalStatus.OK, reading
    assert reading.value == 3 * PER_PARTITION


def test_secret_keys_map_to_librdkafka_properties() -> None:
    data = {
        "username": _b64("alice"),
        "password": _b64("s3cr3t"),
        "sasl.mechanism": _b64("SCRAM-SHA-512"),
        "security.protocol": _b64("SASL_SSL"),
        "ca.crt": _b64("-----BEGIN CERTIFICATE-----\n..."),
    }
    assert kafka_config_from_secret(data) == {
        "sasl.username": "alice",
        "sasl.password": "s3cr3t",
        "sasl.mechanism": "SCRAM-SHA-512",
        "security.protocol": "SASL_SSL",
        "ssl.ca.pem": "-----BEGIN CERTIFICATE-----\n...",
    }


@pytest.mark.parametrize(
    "data",
    [
        {"sasl.kerberos.kinit.cmd": _b64("touch /tmp/pwned")},  # would run a command in the operator
        {"plugin.library.paths": _b64("/tmp/evil.so")},  # would load a library into the operator
        {"bootstrap.servers": _b64("elsewhere:9092")},  # the spec decides where to connect
        {"usernmae": _b64("typo")},
    ],
)
def test_secret_refuses_unsafe_or_unknown_keys(data: dict[str, str]) -> None:
    with pytest.raises(KafkaSecretError, match="not allowed"):
        kafka_config_from_secret(data)


def test_secret_values_must_be_base64() -> None:
    with pytest.raises(KafkaSecretError, match="base64"):
        kafka_config_from_secret({"username": "not base64!"})


def test_secret_values_are_redacted_from_messages() -> None:
    config = {"sasl.password": "s3cr3t", "sasl.username": "alice"}
    assert redact("login alice:s3cr3t failed", config) == "login alice:*** failed"
    assert redact("nothing to hide", None) == "nothing to hide"
