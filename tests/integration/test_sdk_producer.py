"""ThrottledProducer against librdkafka's mock cluster: decisions applied to real produce calls."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sluice import (
    CircuitOpenError,
    ProducerClosedError,
    ShedError,
    StaleDecisionError,
    StaticDecisions,
    ThrottledProducer,
)
from tests.support.sdk_helpers import InProcessKafka, consume, headers_of, make_circuit, make_decision


def test_green_decision_delivers_every_message_once(kafka: InProcessKafka, make: Any, topic: str) -> None:
    producer = make(StaticDecisions(make_decision()))
    for i in range(200):
        producer.produce(topic, f"v{i}".encode(), f"k{i}".encode(), priority=("high", "medium", "low")[i % 3])
    assert producer.flush(10) == 0
    outcomes = producer.outcomes()
    assert (outcomes.accepted, outcomes.delivered, outcomes.failed, outcomes.dead_lettered) == (200, 200, 0, 0)
    values = sorted(m.value() or b"" for m in consume(kafka.bootstrap_servers, topic, 200))
    assert values == sorted(f"v{i}".encode() for i in range(200))
    assert producer.counts.as_dict()["sent"] == {"high": 67, "medium": 67, "low": 66}


def test_delay_is_applied_before_producing(make: Any, topic: str) -> None:
    producer = make(StaticDecisions(make_decision(delay_ms={"high": 0, "medium": 200, "low": 0}, zone="yellow")))
    start = time.monotonic()
    producer.produce(topic, b"slow", priority="medium")
    assert time.monotonic() - start >= 0.2
    producer.produce(topic, b"fast", priority="high")
    assert producer.flush(10) == 0
    assert producer.counts.delayed == [0, 1, 0]
    assert producer.outcomes().delivered == 2


async def test_aproduce_awaits_the_delay_without_blocking_the_loop(make: Any, topic: str) -> None:
    producer = make(StaticDecisions(make_decision(delay_ms=200)))
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    start = time.monotonic()
    await producer.aproduce(topic, b"async", priority="low")
    elapsed = time.monotonic() - start
    done.set()
    await task
    assert elapsed >= 0.2
    assert ticks >= 5  # the loop kept running while the producer waited
    assert await producer.aflush(10) == 0
    assert producer.outcomes().delivered == 1


def test_shed_raises_and_enqueues_nothing(make: Any, topic: str) -> None:
    producer = make(StaticDecisions(make_decision(shed=("low",), zone="red", epoch=9)))
    with pytest.raises(ShedError) as info:
        producer.produce(topic, b"dropped", priority="low")
    assert (info.value.priority, info.value.zone, info.value.epoch) == ("low", "red", 9)
    assert producer.in_flight == 0 and producer.counts.shed == [0, 0, 1]
    producer.produce(topic, b"kept", priority="high")
    assert producer.flush(10) == 0 and producer.outcomes().accepted == 1


def test_shed_to_the_dead_letter_topic(kafka: InProcessKafka, make: Any, topic: str) -> None:
    dlq = f"{topic}-dlq"
    producer = make(StaticDecisions(make_decision(shed=("low",), zone="red")), dlq_topic=dlq, on_shed="dlq")
    producer.produce(topic, b"to-dlq", b"key-7", priority="low", headers={"trace": b"t1"})
    assert producer.flush(10) == 0
    assert producer.outcomes().dead_lettered == 1
    [letter] = consume(kafka.bootstrap_servers, dlq, 1)
    assert letter.value() == b"to-dlq" and letter.key() == b"key-7"
    headers = headers_of(letter)
    assert headers["sluice.reason"] == "shed"
    assert headers["sluice.error-name"] == "SLUICE_SHED"
    assert headers["sluice.original-topic"] == topic
    assert headers["sluice.original-key"] == b"key-7"
    assert headers["sluice.priority"] == "low"
    assert headers["trace"] == "t1"
    assert consume(kafka.bootstrap_servers, topic, 1, timeout=1.0) == []


def test_open_circuit_rejects_at_once_without_touching_kafka(make: Any, topic: str) -> None:
    source = StaticDecisions(make_decision(delay_ms=5000), [make_circuit("brokers", "open")])
    producer = make(source)
    for priority in ("high", "medium", "low"):
        with pytest.raises(CircuitOpenError) as info:
            producer.produce(topic, b"x", priority=priority)
        assert info.value.circuit == "brokers" and info.value.state == "open"
    assert producer.counts.delayed == [0, 0, 0]  # no delay was even started
    assert producer.counts.rejected_open == [1, 1, 1]
    assert producer.counts.sent == [0, 0, 0] and len(producer._producer) == 0
    health = producer.health()
    assert health["circuit"]["state"] == "open" and not health["healthy"]


def test_half_open_lets_the_probe_fraction_through(kafka: InProcessKafka, make: Any, topic: str) -> None:
    producer = make(StaticDecisions(make_decision(), [make_circuit("brokers", "half-open", probe_ratio=0.2)]))
    admitted = 0
    for i in range(500):
        try:
            producer.produce(topic, f"p{i}".encode())
            admitted += 1
        except CircuitOpenError as exc:
            assert exc.state == "half-open"
    assert abs(admitted - 100) <= 5
    assert producer.flush(10) == 0
    assert producer.outcomes().delivered == admitted
    assert len(consume(kafka.bootstrap_servers, topic, admitted)) == admitted


def _stale_source(ttl: float = 0.3, **kwargs: Any) -> StaticDecisions:
    source = StaticDecisions(make_decision(ttl=ttl, **kwargs))
    time.sleep(ttl + 0.1)
    return source


def test_stale_allow_produces_and_warns(make: Any, topic: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sluice.producer"):
        producer = make(_stale_source(delay_ms=5000, shed=("low",)))
        producer.produce(topic, b"anyway", priority="low")
    assert producer.flush(10) == 0 and producer.outcomes().delivered == 1
    assert producer.counts.delayed == [0, 0, 0]
    assert any("stale" in r.getMessage() for r in caplog.records)
    assert producer.health()["decision"]["status"] == "stale"


def test_stale_conservative_applies_the_fallback_delays(make: Any, topic: str) -> None:
    producer = make(_stale_source(fallback={"high": 10, "medium": 150, "low": 300}), on_stale="conservative")
    start = time.monotonic()
    producer.produce(topic, b"careful", priority="medium")
    assert time.monotonic() - start >= 0.15
    assert producer.counts.delayed == [0, 1, 0]


def test_stale_block_refuses(make: Any, topic: str) -> None:
    producer = make(_stale_source(), on_stale="block")
    with pytest.raises(StaleDecisionError) as info:
        producer.produce(topic, b"no")
    assert info.value.age_seconds is not None and info.value.age_seconds > 0.3
    assert producer.counts.rejected_stale == [0, 1, 0]


def test_no_document_at_all_is_stale(make: Any, topic: str) -> None:
    producer = make(StaticDecisions(), on_stale="block")
    with pytest.raises(StaleDecisionError, match="never received"):
        producer.produce(topic, b"no")


def test_a_fresh_document_ends_staleness_at_once(make: Any, topic: str) -> None:
    source = _stale_source()
    producer = make(source, on_stale="block")
    with pytest.raises(StaleDecisionError):
        producer.produce(topic, b"no")
    source.set_decision(make_decision(epoch=2))
    time.sleep(0.002)  # one producer tick
    producer.produce(topic, b"yes")
    assert producer.flush(10) == 0


def test_observe_applies_nothing_but_counts(make: Any, topic: str) -> None:
    source = StaticDecisions(
        make_decision(delay_ms=3000, shed=("low",), enforcement="Observe",
                      circuit=make_circuit("brokers", "open"))
    )
    producer = make(source)
    for priority in ("high", "low", "low"):
        producer.produce(topic, b"observed", priority=priority)
    assert producer.flush(10) == 0
    assert producer.outcomes().delivered == 3
    assert producer.counts.delayed == [0, 0, 0] and producer.counts.shed == [0, 0, 0]
    assert producer.counts.observed == {"delay": [1, 0, 2], "shed": [0, 0, 2], "reject_open": [1, 0, 2],
                                       "pace": [0, 0, 0]}


def test_decision_changes_apply_to_a_running_producer(make: Any, topic: str) -> None:
    source = StaticDecisions(make_decision(epoch=1))
    producer = make(source)
    producer.produce(topic, b"a", priority="low")
    source.set_decision(make_decision(epoch=2, shed=("low",), zone="red"))
    time.sleep(0.002)
    with pytest.raises(ShedError):
        producer.produce(topic, b"b", priority="low")
    source.set_decision(make_decision(epoch=3))
    time.sleep(0.002)
    producer.produce(topic, b"c", priority="low")
    assert producer.flush(10) == 0 and producer.outcomes().delivered == 2


def test_metrics_on_the_users_registry(make: Any, topic: str) -> None:
    registry = CollectorRegistry()
    source = StaticDecisions(make_decision(delay_ms={"high": 0, "medium": 20, "low": 0}, shed=("low",), epoch=42))
    producer = make(source, metrics_registry=registry)
    producer.produce(topic, b"1", priority="high")
    producer.produce(topic, b"2", priority="medium")
    with pytest.raises(ShedError):
        producer.produce(topic, b"3", priority="low")
    assert producer.flush(10) == 0
    text = generate_latest(registry).decode()
    pol = 'policy="orders",policy_namespace="default"'  # every family names the policy whose decision applies
    assert f'sluice_producer_messages_total{{outcome="sent",{pol},priority="high"}} 1.0' in text
    assert f'sluice_producer_messages_total{{outcome="delayed",{pol},priority="medium"}} 1.0' in text
    assert f'sluice_producer_messages_total{{outcome="shed",{pol},priority="low"}} 1.0' in text
    assert f'sluice_producer_delay_seconds_count{{{pol},priority="medium"}} 1.0' in text
    assert f"sluice_producer_applied_epoch{{{pol}}} 42.0" in text
    assert f"sluice_producer_circuit_state{{{pol}}} 0.0" in text
    assert f"sluice_producer_in_flight{{{pol}}} 0.0" in text
    age = float(re.search(r"^sluice_producer_decision_age_seconds\{[^}]*\} (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert 0 <= age < 60


def test_health_reports_source_circuit_in_flight_and_error_rate(make: Any, topic: str) -> None:
    producer = make(StaticDecisions(make_decision(epoch=5)))
    health = producer.health()
    assert health["healthy"] is True
    assert health["decision"]["status"] == "fresh" and health["decision"]["epoch"] == 5
    assert health["decision"]["ttl_seconds"] == pytest.approx(180)
    assert health["circuit"] == {"state": "closed", "names": []}
    assert health["in_flight"] == 0 and health["error_rate"] == 0.0


def test_context_manager_flushes_on_exit_and_closes(kafka: InProcessKafka, topic: str) -> None:
    conf = {"bootstrap.servers": kafka.bootstrap_servers, "linger.ms": 200}
    with ThrottledProducer(conf, StaticDecisions(make_decision())) as producer:
        for i in range(20):
            producer.produce(topic, f"m{i}".encode())
    assert producer.unflushed == 0
    assert producer.outcomes().delivered == 20
    with pytest.raises(ProducerClosedError):
        producer.produce(topic, b"late")


def test_unknown_priority_is_a_caller_error(make: Any, topic: str) -> None:
    producer = make(StaticDecisions(make_decision()))
    with pytest.raises(ValueError, match="priority"):
        producer.produce(topic, b"x", priority="urgent")


async def test_aproduce_takes_produces_keywords_and_refuses_others(kafka: InProcessKafka, make: Any,
                                                                     topic: str) -> None:
    producer = make(StaticDecisions(make_decision()), delivery_reports="all")
    seen: list[bytes | None] = []
    await producer.aproduce(topic, b"v", b"k", priority="high", headers={"h": b"1"},
                            on_delivery=lambda err, msg: seen.append(msg.value()))
    with pytest.raises(ValueError, match="priority"):
        await producer.aproduce(topic, b"x", priority="urgent")
    with pytest.raises(TypeError, match="prority"):
        await producer.aproduce(topic, b"x", prority="high")
    assert producer.flush(10) == 0
    assert seen == [b"v"]


def test_user_on_delivery_with_all_reports(make: Any, topic: str) -> None:
    producer = make(StaticDecisions(make_decision()), delivery_reports="all")
    seen: list[tuple[Any, bytes | None]] = []
    producer.produce(topic, b"hello", on_delivery=lambda err, msg: seen.append((err, msg.value())))
    assert producer.flush(10) == 0
    assert seen == [(None, b"hello")]


def test_a_waiting_message_obeys_a_circuit_that_opens_during_its_delay(make: Any, topic: str) -> None:
    import threading

    from sluice import CircuitOpenError

    decisions = StaticDecisions(make_decision(delay_ms=3000, zone="red"))
    producer = make(decisions)
    threading.Timer(0.3, lambda: decisions.set_circuit(make_circuit("kafka", "open"))).start()
    start = time.monotonic()
    with pytest.raises(CircuitOpenError):
        producer.produce(topic, b"late", priority="medium")
    waited = time.monotonic() - start
    assert 0.3 <= waited < 3.0, waited  # rejected when the circuit opened, not after the full delay
    assert producer.outcomes().delivered == 0


def test_a_shorter_delay_arriving_mid_wait_releases_the_message_early(make: Any, topic: str) -> None:
    import threading

    decisions = StaticDecisions(make_decision(delay_ms=3000, zone="red"))
    producer = make(decisions)
    threading.Timer(0.3, lambda: decisions.set_decision(make_decision(delay_ms=0, zone="green"))).start()
    start = time.monotonic()
    producer.produce(topic, b"released", priority="medium")
    assert time.monotonic() - start < 3.0
    assert producer.flush(10) == 0
    assert producer.outcomes().delivered == 1
