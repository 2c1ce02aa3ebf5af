"""Delivery timeouts for real: the brokers are frozen with SIGSTOP (MockKafkaCluster in a child process).

librdkafka then reports ``_MSG_TIMED_OUT`` after ``message.timeout.ms``; whether the broker wrote the
message is unknown. Each ``on_timeout`` route is checked: dead-letter with ``sluice.maybe-delivered``,
report to the caller, or (``at_least_once``) produce again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError

from sluice import StaticDecisions, ThrottledProducer, in_doubt
from sluice.testing import MockKafkaCluster
from tests.support.sdk_helpers import consume, headers_of, make_decision

TIMEOUT_MS = 1500
N = 5


@pytest.fixture
def cluster() -> Iterator[MockKafkaCluster]:
    with MockKafkaCluster(num_brokers=3, topics={"orders": 3, "orders-dlq": 1}) as mock:
        yield mock


def _producer(cluster: MockKafkaCluster, **kwargs: Any) -> ThrottledProducer:
    conf = {
        "bootstrap.servers": cluster.bootstrap_servers,
        "message.timeout.ms": TIMEOUT_MS,
        "linger.ms": 5,
    }
    producer = ThrottledProducer(conf, StaticDecisions(make_decision()), **kwargs)
    producer.produce("orders", b"warm-up")  # connections and metadata up before the freeze
    assert producer.flush(10) == 0
    return producer


def _produce_while_frozen(
    cluster: MockKafkaCluster,
    producer: ThrottledProducer,
    until: Callable[[], bool] | None = None,
    **kwargs: Any,
) -> None:
    """Freeze the brokers, produce N messages, and thaw once ``until()`` (default: all timed out)."""
    done = until or (lambda: len(producer._producer) == 0)
    cluster.pause()
    try:
        for i in range(N):
            producer.produce("orders", f"frozen-{i}".encode(), f"k{i}".encode(), **kwargs)
        deadline = time.monotonic() + 10 * TIMEOUT_MS / 1000
        while not done() and time.monotonic() < deadline:
            producer.poll(0.1)
        assert done(), "messages did not time out"
    finally:
        cluster.resume()


def test_timeouts_are_dead_lettered_as_maybe_delivered(cluster: MockKafkaCluster) -> None:
    producer = _producer(cluster, dlq_topic="orders-dlq", dlq_conf={"message.timeout.ms": 30000})
    _produce_while_frozen(cluster, producer)
    assert producer.flush(30) == 0
    outcomes = producer.outcomes()
    assert (outcomes.dead_lettered, outcomes.failed, outcomes.delivered) == (N, 0, 1)
    letters = consume(cluster.bootstrap_servers, "orders-dlq", N)
    assert sorted(m.value() or b"" for m in letters) == [f"frozen-{i}".encode() for i in range(N)]
    for letter in letters:
        headers = headers_of(letter)
        assert headers["sluice.maybe-delivered"] == "true"
        assert headers["sluice.reason"] == "timeout"
        assert headers["sluice.error-name"] == "_MSG_TIMED_OUT"
        assert headers["sluice.error-code"] == str(KafkaError._MSG_TIMED_OUT)
        assert headers["sluice.original-topic"] == "orders"
        assert headers["sluice.original-key"] == letter.key()
    producer.close()


def test_timeouts_reported_to_the_caller(cluster: MockKafkaCluster) -> None:
    producer = _producer(cluster, dlq_topic="orders-dlq", on_timeout="report")
    errors: list[KafkaError | None] = []
    _produce_while_frozen(cluster, producer, on_delivery=lambda err, msg: errors.append(err))
    assert producer.flush(10) == 0
    assert [e.code() if e else None for e in errors] == [KafkaError._MSG_TIMED_OUT] * N
    assert all(in_doubt(e) for e in errors)  # on_delivery can tell "may have been written" from "failed"
    outcomes = producer.outcomes()
    assert (outcomes.in_doubt, outcomes.failed, outcomes.dead_lettered) == (N, 0, 0)
    producer.close()


def test_at_least_once_produces_timed_out_messages_again(cluster: MockKafkaCluster) -> None:
    producer = _producer(cluster, at_least_once=True)
    assert producer.on_timeout == "retry"
    _produce_while_frozen(cluster, producer, until=lambda: sum(producer.counts.retried) >= N)
    assert producer.flush(30) == 0
    outcomes = producer.outcomes()
    assert (outcomes.delivered, outcomes.failed, outcomes.dead_lettered) == (N + 1, 0, 0)
    values = {m.value() for m in consume(cluster.bootstrap_servers, "orders", 2 * N + 1, timeout=5)}
    assert {f"frozen-{i}".encode() for i in range(N)} <= values  # each at least once (maybe twice)
    producer.close()


def test_retry_without_at_least_once_is_refused() -> None:
    with pytest.raises(ValueError, match="at_least_once"):
        ThrottledProducer({"bootstrap.servers": "127.0.0.1:9"}, StaticDecisions(), on_timeout="retry")
