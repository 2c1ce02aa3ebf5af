"""Error routes against librdkafka's mock cluster: permanent, backpressure, fail-closed, fatal, serialization."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer

from sluice import (
    PermanentMessageError,
    RetryBudgetExceededError,
    RetryPolicy,
    TopicUnavailableError,
)
from tests.support.sdk_helpers import InProcessKafka, consume, headers_of, inject_fatal

DLQ_HEADERS = {
    "sluice.original-topic",
    "sluice.original-partition",
    "sluice.original-key",
    "sluice.error-name",
    "sluice.error-code",
    "sluice.error-reason",
    "sluice.reason",
    "sluice.attempts",
    "sluice.failed-at",
    "sluice.priority",
    "sluice.value-encoding",
}

ORDER_SCHEMA = """
{"type": "record", "name": "Order", "namespace": "shop",
 "fields": [{"name": "id", "type": "int"}, {"name": "item", "type": "string"}]}
"""


def test_a_message_over_message_max_bytes_lands_in_the_dlq_with_every_header(
    kafka: InProcessKafka, make: Any, topic: str
) -> None:
    dlq = f"{topic}-dlq"
    producer = make({"message.max.bytes": 2000}, dlq_topic=dlq)
    producer.produce(topic, b"x" * 5000, b"order-1", priority="high", headers=[("trace", b"abc")])
    producer.produce(topic, b"small", b"order-2")
    assert producer.flush(10) == 0
    outcomes = producer.outcomes()
    assert (outcomes.accepted, outcomes.delivered, outcomes.dead_lettered, outcomes.failed) == (2, 1, 1, 0)
    [letter] = consume(kafka.bootstrap_servers, dlq, 1)
    headers = headers_of(letter)
    assert set(headers) >= DLQ_HEADERS
    assert headers["sluice.original-topic"] == topic
    assert headers["sluice.original-partition"] == "-1"  # never assigned: refused before partitioning
    assert headers["sluice.original-key"] == b"order-1"
    assert headers["sluice.error-name"] == "MSG_SIZE_TOO_LARGE"
    assert headers["sluice.error-code"] == str(KafkaError.MSG_SIZE_TOO_LARGE)
    assert headers["sluice.reason"] == "permanent"
    assert headers["sluice.attempts"] == "1"  # permanent: never retried
    assert headers["sluice.priority"] == "high"
    assert headers["sluice.failed-at"].endswith("Z")
    assert headers["sluice.value-truncated"] == "5000"
    assert headers["trace"] == "abc"
    assert "sluice.maybe-delivered" not in headers
    assert letter.key() == b"order-1" and letter.value() == b"x" * 1000
    assert [m.value() for m in consume(kafka.bootstrap_servers, topic, 1)] == [b"small"]


def test_a_permanent_error_without_a_dlq_is_raised_at_once(make: Any, topic: str) -> None:
    producer = make({"message.max.bytes": 2000})
    with pytest.raises(PermanentMessageError) as info:
        producer.produce(topic, b"x" * 5000)
    assert info.value.error is not None and info.value.error.code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert producer.counts.retried == [0, 0, 0] and producer.counts.failed == [0, 1, 0]
    assert producer.outcomes().accepted == 0


def test_a_full_local_queue_is_absorbed_by_backoff_and_nothing_is_lost(
    kafka: InProcessKafka, make: Any, topic: str
) -> None:
    producer = make(
        {"queue.buffering.max.messages": 10, "linger.ms": 2},
        retry=RetryPolicy(max_attempts=1000, initial_delay=0.001, max_delay=0.05, deadline=30),
    )
    for i in range(1500):
        producer.produce(topic, f"m{i}".encode())
    assert producer.flush(20) == 0
    assert sum(producer.counts.retried) > 0  # the queue really was full
    outcomes = producer.outcomes()
    assert (outcomes.accepted, outcomes.delivered, outcomes.failed) == (1500, 1500, 0)
    values = [m.value() for m in consume(kafka.bootstrap_servers, topic, 1500)]
    assert len(values) == 1500 and len(set(values)) == 1500  # nothing lost, nothing twice


def test_backpressure_beyond_the_retry_budget_is_raised_not_lost(make: Any, topic: str) -> None:
    producer = make(
        {"queue.buffering.max.messages": 1, "linger.ms": 5000},
        retry=RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.002, deadline=0.5),
    )
    producer.produce(topic, b"fills the queue")
    with pytest.raises(RetryBudgetExceededError) as info:
        producer.produce(topic, b"no room")
    assert info.value.attempts == 3
    assert producer.outcomes().accepted == 1  # the refused one was never accepted


def test_an_unauthorized_topic_fails_closed_and_is_not_dead_lettered(
    kafka: InProcessKafka, make: Any, topic: str
) -> None:
    kafka.set_topic_error(topic, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    dlq = f"{topic}-dlq"
    producer = make({"message.timeout.ms": 5000}, dlq_topic=dlq, fail_closed_seconds=30)
    errors: list[KafkaError | None] = []
    producer.produce(topic, b"denied", on_delivery=lambda err, msg: errors.append(err))
    assert producer.flush(10) == 0
    assert [e.code() if e else None for e in errors] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    assert producer.outcomes().failed == 1 and producer.outcomes().dead_lettered == 0
    with pytest.raises(TopicUnavailableError):
        producer.produce(topic, b"again")
    assert producer.health()["blocked_topics"] == [topic]
    producer.produce(f"{topic}-other", b"other topics still work")
    assert producer.flush(10) == 0
    assert consume(kafka.bootstrap_servers, dlq, 1, timeout=1.0) == []


def test_a_fatal_error_recreates_the_producer_and_reports_what_it_lost(
    kafka: InProcessKafka, make: Any, topic: str
) -> None:
    producer = make({"linger.ms": 3000}, delivery_reports="all")
    results: list[tuple[int, KafkaError | None]] = []
    for i in range(10):
        producer.produce(topic, f"q{i}".encode(), on_delivery=lambda err, msg, i=i: results.append((i, err)))
    inject_fatal(producer._producer)
    assert producer.flush(10) == 0
    assert sorted(i for i, _ in results) == list(range(10))  # every message reported exactly once
    assert all(err is not None for _, err in results)  # none was delivered
    assert producer.health()["producer_recreated"] == 1
    assert producer.outcomes().failed == 10
    producer.produce(topic, b"after")
    assert producer.flush(10) == 0
    assert producer.outcomes().delivered == 1
    assert [m.value() for m in consume(kafka.bootstrap_servers, topic, 1)] == [b"after"]


# -- serialization (Schema Registry's in-memory client: real serializer code, no network) ------------


def _avro(url: str = "mock://sluice-tests", **extra: Any) -> tuple[AvroSerializer, SchemaRegistryClient]:
    registry = SchemaRegistryClient.new_client({"url": url, **extra})
    return AvroSerializer(registry, ORDER_SCHEMA), registry


def test_avro_values_through_the_registry_are_delivered(kafka: InProcessKafka, make: Any, topic: str) -> None:
    serializer, registry = _avro()
    producer = make(value_serializer=serializer, key_serializer=StringSerializer())
    producer.produce(topic, {"id": 1, "item": "tea"}, "order-1")
    assert producer.flush(10) == 0
    [msg] = consume(kafka.bootstrap_servers, topic, 1)
    assert msg.key() == b"order-1"
    decoded = AvroDeserializer(registry)(msg.value(), SerializationContext(topic, MessageField.VALUE))
    assert decoded == {"id": 1, "item": "tea"}


def test_a_record_the_schema_rejects_is_dead_lettered_once_as_json(
    kafka: InProcessKafka, make: Any, topic: str
) -> None:
    dlq = f"{topic}-dlq"
    serializer, _ = _avro()
    producer = make(value_serializer=serializer, dlq_topic=dlq)
    producer.produce(topic, {"id": "not-an-int", "item": "tea"}, b"k")
    assert producer.flush(10) == 0
    assert producer.counts.retried == [0, 0, 0]
    assert producer.outcomes().dead_lettered == 1
    [letter] = consume(kafka.bootstrap_servers, dlq, 1)
    headers = headers_of(letter)
    assert headers["sluice.reason"] == "serialization"
    assert headers["sluice.error-name"] == "_VALUE_SERIALIZATION"
    assert headers["sluice.value-encoding"] == "json"
    assert letter.value() == b'{"id":"not-an-int","item":"tea"}'


def test_a_record_the_schema_rejects_without_dlq_is_raised_and_never_retried(make: Any, topic: str) -> None:
    serializer, _ = _avro()
    producer = make(value_serializer=serializer)
    with pytest.raises(PermanentMessageError) as info:
        producer.produce(topic, {"item": "no id"})
    assert info.value.error is not None and info.value.error.code() == KafkaError._VALUE_SERIALIZATION
    assert producer.counts.retried == [0, 0, 0]


def test_a_registry_outage_is_transient_and_bounded(make: Any, topic: str) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serializer, _ = _avro(f"http://127.0.0.1:{port}", **{"max.retries": 0, "timeout": 2})
    producer = make(
        value_serializer=serializer,
        dlq_topic=f"{topic}-dlq",
        retry=RetryPolicy(max_attempts=3, initial_delay=0.01, max_delay=0.02, deadline=5),
    )
    with pytest.raises(RetryBudgetExceededError):
        producer.produce(topic, {"id": 1, "item": "tea"})
    assert producer.counts.retried == [0, 2, 0]  # three attempts, never dead-lettered
    assert producer.outcomes().dead_lettered == 0 and producer.outcomes().accepted == 0
