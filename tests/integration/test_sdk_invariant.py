"""Every accepted message ends in exactly one of delivered, dead-lettered or reported failed.

Thousands of messages with a mix of fates (fine, oversized, shed to the DLQ, to a topic the brokers
refuse) go through one producer; every callback is tallied per message id and the topics are read
back, so a message counted twice, lost, or written twice fails the test.
"""

from __future__ import annotations

import collections
import time

from confluent_kafka import KafkaError, Message

from sluice import DeadLetter, StaticDecisions, ThrottledProducer, TopicUnavailableError
from tests.support.sdk_helpers import InProcessKafka, consume_all, make_decision

N = 3000


def test_exactly_one_outcome_per_accepted_message() -> None:
    with InProcessKafka() as kafka:
        kafka.set_topic_error("inv-denied", KafkaError.TOPIC_AUTHORIZATION_FAILED)
        delivered: collections.Counter[str] = collections.Counter()
        failed: collections.Counter[str] = collections.Counter()
        dead: collections.Counter[str] = collections.Counter()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            key = (msg.key() or b"").decode()
            (failed if err is not None else delivered)[key] += 1

        def on_dead_letter(letter: DeadLetter) -> None:
            dead[letter.key_bytes().decode()] += 1  # type: ignore[union-attr]

        producer = ThrottledProducer(
            {"bootstrap.servers": kafka.bootstrap_servers, "message.max.bytes": 4000, "linger.ms": 5,
             "message.timeout.ms": 10000},
            StaticDecisions(make_decision(shed=("low",), zone="red")),
            dlq_topic="inv-dlq",
            on_shed="dlq",
            delivery_reports="all",
            on_dead_letter=on_dead_letter,
            fail_closed_seconds=0.25,
        )
        accepted: set[str] = set()
        refused: set[str] = set()

        def send(i: int) -> None:
            key = f"id-{i}"
            topic = "inv-denied" if i % 13 == 0 else "inv-good"
            value = b"x" * 6000 if i % 10 == 0 else f"value-{i}".encode()
            priority = "low" if i % 7 == 0 else ("high", "medium")[i % 2]
            try:
                producer.produce(topic, value, key.encode(), priority=priority, on_delivery=on_delivery)
            except TopicUnavailableError:
                refused.add(key)
                return
            accepted.add(key)

        # Phase 1: the denied topic fails once and the producer fails closed on it ...
        send(13)
        assert producer.flush(10) == 0 and producer.health()["blocked_topics"] == ["inv-denied"]
        # ... phase 2: so its messages are refused at produce time while everything else flows ...
        for i in range(N // 2):
            if i != 13:
                send(i)
        # ... phase 3: the fail-closed period ends and its messages are accepted (and fail) again.
        time.sleep(0.3)
        for i in range(N // 2, N):
            send(i)
        assert producer.flush(30) == 0

        # Each callback fired at most once per message, and the three sets partition the accepted ones.
        for tally in (delivered, failed, dead):
            assert set(tally.values()) <= {1}
        assert not (set(delivered) & set(failed)) and not (set(delivered) & set(dead)) and not (set(failed) & set(dead))
        assert set(delivered) | set(failed) | set(dead) == accepted
        assert not (accepted & refused)

        # Every kind of fate really happened.
        assert failed and dead and delivered and refused
        assert {k for k in dead if int(k[3:]) % 7 == 0}  # shed
        assert {k for k in dead if int(k[3:]) % 10 == 0 and int(k[3:]) % 7}  # oversized

        outcomes = producer.outcomes()
        assert outcomes.in_flight == 0
        assert (outcomes.accepted, outcomes.delivered, outcomes.dead_lettered, outcomes.failed) == (
            len(accepted), len(delivered), len(dead), len(failed),
        )

        # On the wire: each delivered message exactly once in its topic, each dead letter once in the DLQ.
        good = consume_all(kafka.bootstrap_servers, "inv-good")
        assert sorted((m.key() or b"").decode() for m in good) == sorted(delivered)
        letters = consume_all(kafka.bootstrap_servers, "inv-dlq")
        assert sorted((m.key() or b"").decode() for m in letters) == sorted(dead)
        producer.close()
