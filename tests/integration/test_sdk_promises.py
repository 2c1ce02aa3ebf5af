"""Issue 10, items 1-11 and broker throttling: each promise the README makes, against the mock cluster.

Every test here failed on the SDK before the admission rewrite and passes after it. Timing is
asserted only where a delay is the behaviour under test, with generous upper bounds.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, ThrottleEvent
from prometheus_client import CollectorRegistry, generate_latest

from sluice import (
    ProducerClosedError,
    RetryPolicy,
    StaticDecisions,
    ThrottledProducer,
    TopicUnavailableError,
    in_doubt,
)
from tests.support.sdk_helpers import InProcessKafka, consume, consume_all, headers_of, make_decision

UNREACHABLE = "127.0.0.1:9"  # nothing listens: connections are refused, error events pile up


def _until(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


# -- item 1: an on_delivery that produces again ----------------------------------------------------


def test_on_delivery_that_produces_again_loses_nothing(kafka: InProcessKafka, topic: str) -> None:
    bad = f"{topic}-bad"
    kafka.create_topic(bad, 3)
    kafka.set_topic_error(bad, KafkaError.INVALID_RECORD)  # nothing is ever written: every message times out
    n = 1000
    reported: collections.Counter[bytes] = collections.Counter()
    producer = ThrottledProducer(
        {"bootstrap.servers": kafka.bootstrap_servers, "message.timeout.ms": 1000, "linger.ms": 5},
        StaticDecisions(make_decision()),
        on_timeout="report",
    )

    def retry_elsewhere(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            reported[msg.key() or b""] += 1
            producer.produce(topic, msg.value(), msg.key())  # the common "retry from the callback" pattern

    for i in range(n):
        producer.produce(bad, b"v", f"id-{i}".encode(), on_delivery=retry_elsewhere)
    assert producer.flush(30) == 0
    assert set(reported) == {f"id-{i}".encode() for i in range(n)} and set(reported.values()) == {1}
    outcomes = producer.outcomes()
    assert (outcomes.accepted, outcomes.in_doubt, outcomes.delivered, outcomes.failed) == (2 * n, n, n, 0)
    written = sorted((m.key() or b"") for m in consume_all(kafka.bootstrap_servers, topic))
    assert written == sorted(reported)
    producer.close(5)


def test_on_dead_letter_may_produce_again(kafka: InProcessKafka, topic: str) -> None:
    dlq = f"{topic}-dlq"
    producer = ThrottledProducer({"bootstrap.servers": kafka.bootstrap_servers},
                                 StaticDecisions(make_decision(shed=("low",), zone="red")), dlq_topic=dlq,
                                 on_shed="dlq",
                                 on_dead_letter=lambda letter: producer.produce(topic, letter.value, priority="high"))
    for i in range(50):
        producer.produce(topic, f"shed-{i}".encode(), priority="low")
    assert producer.flush(15) == 0
    outcomes = producer.outcomes()
    assert (outcomes.dead_lettered, outcomes.delivered, outcomes.failed) == (50, 50, 0)
    assert sorted(m.value() or b"" for m in consume_all(kafka.bootstrap_servers, topic)) == sorted(
        f"shed-{i}".encode() for i in range(50))
    producer.close(5)


# -- item 2: delays measured once ----------------------------------------------------------------------


def test_a_delay_is_not_cut_short_by_republished_decisions(kafka: InProcessKafka, topic: str) -> None:
    registry = CollectorRegistry()
    source = StaticDecisions(make_decision(delay_ms=1000, zone="red", epoch=1))
    producer = ThrottledProducer({"bootstrap.servers": kafka.bootstrap_servers}, source, metrics_registry=registry)
    stop = threading.Event()

    def republish() -> None:  # the operator re-stamps the same decision every 250 ms
        for epoch in itertools.count(2):
            if stop.wait(0.25):
                return
            source.set_decision(make_decision(delay_ms=1000, zone="red", epoch=epoch))

    thread = threading.Thread(target=republish, daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        producer.produce(topic, b"late", priority="medium")
        waited = time.monotonic() - start
    finally:
        stop.set()
        thread.join()
    assert 0.99 <= waited < 5.0, waited
    assert producer.counts.delayed == [0, 1, 0]
    text = generate_latest(registry).decode()
    labels = 'policy="orders",policy_namespace="default",priority="medium"'
    assert f"sluice_producer_delay_seconds_count{{{labels}}} 1.0" in text
    producer.close(5)


async def test_aproduce_delay_is_not_cut_short_by_republished_decisions(kafka: InProcessKafka, topic: str) -> None:
    source = StaticDecisions(make_decision(delay_ms=800, zone="red", epoch=1))
    producer = ThrottledProducer({"bootstrap.servers": kafka.bootstrap_servers}, source)
    stop = threading.Event()

    def republish() -> None:
        for epoch in itertools.count(2):
            if stop.wait(0.2):
                return
            source.set_decision(make_decision(delay_ms=800, zone="red", epoch=epoch))

    thread = threading.Thread(target=republish, daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        await producer.aproduce(topic, b"late", priority="low")
        waited = time.monotonic() - start
    finally:
        stop.set()
        thread.join()
    assert 0.79 <= waited < 5.0, waited
    assert producer.counts.delayed == [0, 0, 1]
    producer.close(5)


# -- item 3: close() and a produce() backing off ---------------------------------------------------------


def test_close_refuses_a_produce_that_was_backing_off(kafka: InProcessKafka, topic: str) -> None:
    producer = ThrottledProducer(
        {"bootstrap.servers": kafka.bootstrap_servers, "queue.buffering.max.messages": 1, "linger.ms": 60000},
        StaticDecisions(make_decision()),
        retry=RetryPolicy(max_attempts=10_000, initial_delay=0.01, max_delay=0.05, deadline=30),
    )
    producer.produce(topic, b"fills the queue")
    result: list[BaseException | None] = []

    def blocked() -> None:
        try:
            producer.produce(topic, b"backing off")
            result.append(None)
        except BaseException as exc:  # recorded for the assertion
            result.append(exc)

    thread = threading.Thread(target=blocked)
    thread.start()
    assert _until(lambda: sum(producer.counts.retried) >= 3)  # really backing off on the full queue
    producer.close(0.2)  # purges the queue: room for the blocked thread
    thread.join(20)
    assert len(result) == 1 and isinstance(result[0], ProducerClosedError), result
    outcomes = producer.outcomes()
    assert outcomes.accepted == 1 and outcomes.in_flight == 0
    assert outcomes.resolved == outcomes.accepted


def test_close_timeout_bounds_leaving_a_with_block() -> None:
    start = time.monotonic()
    with ThrottledProducer({"bootstrap.servers": UNREACHABLE}, StaticDecisions(make_decision()),
                           close_timeout=0.3) as producer:
        for i in range(5):
            producer.produce("nowhere", f"m{i}".encode())
    assert time.monotonic() - start < 5.0
    assert producer.unflushed == 5
    outcomes = producer.outcomes()
    assert (outcomes.failed, outcomes.in_flight, outcomes.delivered) == (5, 0, 0)  # never sent: known not written


# -- item 4: dlq_conf validated at construction ----------------------------------------------------------


def test_an_invalid_dlq_conf_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="dlq_conf"):
        ThrottledProducer({"bootstrap.servers": UNREACHABLE}, StaticDecisions(), dlq_topic="dlq",
                          dlq_conf={"no.such.property": "1"})
    with pytest.raises(ValueError, match="dlq_topic"):
        ThrottledProducer({"bootstrap.servers": UNREACHABLE}, StaticDecisions(), dlq_conf={"acks": "all"})


# -- item 5: in_flight counts messages only ---------------------------------------------------------------


def test_in_flight_counts_messages_not_librdkafka_events() -> None:
    producer = ThrottledProducer({"bootstrap.servers": UNREACHABLE, "message.timeout.ms": 60000},
                                 StaticDecisions(make_decision()))
    for i in range(5):
        producer.produce("t", f"m{i}".encode())
    # Nobody polls: connection errors queue up as events next to the five messages.
    assert _until(lambda: len(producer._producer) > 5, timeout=15)
    assert producer.in_flight == 5
    assert producer.outcomes().delivered == 0
    producer.close(0)


# -- item 6: a missing topic is unknown, not a timeout --------------------------------------------------------


def test_a_missing_topic_fails_closed_before_messages_time_out(kafka: InProcessKafka, topic: str) -> None:
    errors: list[KafkaError | None] = []
    producer = ThrottledProducer(
        {"bootstrap.servers": kafka.bootstrap_servers, "message.timeout.ms": 3000, "allow.auto.create.topics": False},
        StaticDecisions(make_decision()),
        dlq_topic=f"{topic}-dlq",
        fail_closed_seconds=30,
    )
    assert producer._conf["topic.metadata.propagation.max.ms"] == 1500
    producer.produce(f"{topic}-never-created", b"x", on_delivery=lambda err, msg: errors.append(err))
    assert producer.flush(15) == 0
    assert [e.code() if e else None for e in errors] == [KafkaError.UNKNOWN_TOPIC_OR_PART]
    outcomes = producer.outcomes()
    assert (outcomes.failed, outcomes.dead_lettered, outcomes.in_doubt) == (1, 0, 0)
    with pytest.raises(TopicUnavailableError):
        producer.produce(f"{topic}-never-created", b"again")
    producer.close(5)


def test_a_propagation_wait_not_below_the_message_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match=r"topic\.metadata\.propagation\.max\.ms"):
        ThrottledProducer({"bootstrap.servers": UNREACHABLE, "message.timeout.ms": 5000,
                           "topic.metadata.propagation.max.ms": 5000}, StaticDecisions())


# -- item 9: documents long expired on arrival -------------------------------------------------------------------


def test_a_document_expired_long_before_the_producer_started_is_stale() -> None:
    hour_old = make_decision(ttl=60, generated_ago=3600, shed=("low",), zone="red")
    producer = ThrottledProducer({"bootstrap.servers": UNREACHABLE}, StaticDecisions(hour_old), on_stale="allow")
    assert producer.health()["decision"]["status"] == "stale"
    producer.produce("t", b"not shed: the shed is an hour old", priority="low")
    week_old = make_decision(ttl=2 * 86400, generated_ago=7 * 86400)
    assert ThrottledProducer({"bootstrap.servers": UNREACHABLE},
                             StaticDecisions(week_old)).health()["decision"]["status"] == "stale"
    lenient = StaticDecisions(hour_old, max_clock_skew=7200)  # the setting: trust up to two hours of skew
    assert ThrottledProducer({"bootstrap.servers": UNREACHABLE}, lenient).health()["decision"]["status"] == "fresh"
    producer.close(0)


# -- item 10: in doubt ---------------------------------------------------------------------------------------------


def test_timeouts_are_in_doubt_and_on_delivery_can_tell(kafka: InProcessKafka, topic: str) -> None:
    bad = f"{topic}-stuck"
    kafka.create_topic(bad, 1)
    kafka.set_topic_error(bad, KafkaError.INVALID_RECORD)
    seen: list[bool] = []
    producer = ThrottledProducer({"bootstrap.servers": kafka.bootstrap_servers, "message.timeout.ms": 800},
                                 StaticDecisions(make_decision()), on_timeout="report")
    for _ in range(3):
        producer.produce(bad, b"x", on_delivery=lambda err, msg: seen.append(in_doubt(err)))
    assert producer.flush(15) == 0
    assert seen == [True, True, True]
    outcomes = producer.outcomes()
    assert (outcomes.in_doubt, outcomes.failed, outcomes.resolved) == (3, 0, 3)
    assert not in_doubt(KafkaError(KafkaError._PURGE_QUEUE)) and in_doubt(KafkaError(KafkaError._PURGE_INFLIGHT))
    producer.close(5)


# -- item 11: logs, error_cb, headers -------------------------------------------------------------------------------


def test_repeated_failures_are_logged_once_per_topic_and_reason(
    kafka: InProcessKafka, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad = f"{topic}-stuck"
    kafka.create_topic(bad, 1)
    kafka.set_topic_error(bad, KafkaError.INVALID_RECORD)
    producer = ThrottledProducer({"bootstrap.servers": kafka.bootstrap_servers, "message.timeout.ms": 800},
                                 StaticDecisions(make_decision()), on_timeout="report")
    with caplog.at_level(logging.WARNING, logger="sluice.producer"):
        for _ in range(300):
            producer.produce(bad, b"x")
        assert producer.flush(15) == 0
        producer.close(5)
    lines = [r.getMessage() for r in caplog.records if "no on_delivery" in r.getMessage()]
    assert len(lines) == 2 and "299 more" in lines[1], lines  # the first at once, the rest counted
    assert producer.outcomes().in_doubt == 300


def test_an_error_cb_that_raises_never_escapes() -> None:
    calls: list[KafkaError] = []

    def broken(err: KafkaError) -> None:
        calls.append(err)
        raise RuntimeError("user bug")

    producer = ThrottledProducer({"bootstrap.servers": UNREACHABLE, "error_cb": broken},
                                 StaticDecisions(make_decision()))
    producer.produce("t", b"x")
    assert _until(lambda: producer.poll(0.05) >= 0 and bool(calls), timeout=15)
    producer.produce("t", b"y")
    producer.flush(0.2)
    assert producer.close(0.2) == 2
    assert producer.outcomes().resolved == 2


def test_oversized_headers_are_cut_in_the_dead_letter(kafka: InProcessKafka, topic: str) -> None:
    dlq = f"{topic}-dlq"
    producer = ThrottledProducer({"bootstrap.servers": kafka.bootstrap_servers}, StaticDecisions(make_decision()),
                                 dlq_topic=dlq)
    big = b"h" * 2_000_000
    producer.produce(topic, b"small value", b"k1", headers=[("trace", b"t"), ("blob", big)])
    assert producer.flush(15) == 0
    assert producer.outcomes().dead_lettered == 1
    [letter] = consume(kafka.bootstrap_servers, dlq, 1)
    headers = headers_of(letter)
    assert headers["sluice.headers-truncated"] == str(len(b"tracet") + len(b"blob") + len(big))
    assert headers["trace"] == "t" and 0 < len(headers["blob"]) < 1_000_000
    assert letter.value() == b"small value"
    producer.close(5)


# -- broker throttling (KIP-219) ------------------------------------------------------------------------------------


def _throttle(producer: ThrottledProducer, seconds: float) -> None:
    """What librdkafka does when a broker answers with throttle_time_ms: call the throttle_cb."""
    callback: Any = producer._conf["throttle_cb"]
    callback(ThrottleEvent("mock:9092/1", 1, seconds))


@pytest.mark.parametrize(("decision_ms", "throttle_s", "expected"), [(0, 0.4, 0.4), (200, 0.5, 0.5), (700, 0.3, 0.7)])
def test_a_broker_throttle_holds_messages_back(
    kafka: InProcessKafka, topic: str, decision_ms: int, throttle_s: float, expected: float
) -> None:
    registry = CollectorRegistry()
    user_calls: list[ThrottleEvent] = []
    producer = ThrottledProducer(
        {"bootstrap.servers": kafka.bootstrap_servers, "throttle_cb": user_calls.append},
        StaticDecisions(make_decision(delay_ms={"high": decision_ms, "medium": 0, "low": 0}, zone="yellow")),
        metrics_registry=registry,
    )
    producer.produce(topic, b"warm-up", priority="medium")  # connections up
    _throttle(producer, throttle_s)
    assert len(user_calls) == 1  # the caller's own throttle_cb still runs
    health = producer.health()["broker_throttle"]
    assert health["active"] and health["last_broker"] == "mock:9092/1"
    start = time.monotonic()
    producer.produce(topic, b"held", priority="high")  # the larger of decision delay and throttle
    waited = time.monotonic() - start
    assert expected - 0.01 <= waited < expected + 2.0, waited
    assert producer.flush(10) == 0 and producer.outcomes().delivered == 2
    text = generate_latest(registry).decode()
    [total] = [float(line.split()[1]) for line in text.splitlines()
               if line.startswith("sluice_producer_broker_throttle_seconds_total{")]
    assert total == pytest.approx(throttle_s, abs=0.05)
    assert not producer.health()["broker_throttle"]["active"]
    producer.close(5)


async def test_aproduce_waits_out_a_broker_throttle(kafka: InProcessKafka, topic: str) -> None:
    producer = ThrottledProducer({"bootstrap.servers": kafka.bootstrap_servers}, StaticDecisions(make_decision()))
    _throttle(producer, 0.3)
    start = time.monotonic()
    await producer.aproduce(topic, b"held")
    assert 0.29 <= time.monotonic() - start < 3.0
    assert await producer.aflush(10) == 0
    producer.close(5)
