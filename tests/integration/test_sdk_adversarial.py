"""Adversarial runs against librdkafka's mock cluster, each checked id by id against what a real
consumer reads back from the topic and the dead-letter topic.

The invariant every test asserts: each message ``produce`` accepted has exactly one of four
outcomes (delivered, dead-lettered, failed, in doubt), reported once; a refused message is nowhere;
a delivered id is in the topic exactly once, a failed one never, an in-doubt one at most once; each
dead-lettered id is in the DLQ exactly once; and ``outcomes()`` agrees with the tallies.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message

from sluice import (
    DeadLetter,
    DirectoryDecisions,
    ProducerClosedError,
    SluiceError,
    StaleDecisionError,
    StaticDecisions,
    ThrottledProducer,
    in_doubt,
)
from sluice.decision import to_json
from sluice.testing import MockKafkaCluster
from tests.support.sdk_helpers import consume_all, kubelet_write, make_circuit, make_decision

TOPIC = "adv"
_topics = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[MockKafkaCluster]:
    with MockKafkaCluster(num_brokers=3, topics={TOPIC: 3}) as mock:
        yield mock


class Ledger:
    """Outcomes by id, from the callbacks; refusals by id, from produce()."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.accepted: set[str] = set()
        self.refused: set[str] = set()

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        kind = "delivered" if err is None else "in_doubt" if in_doubt(err) else "failed"
        self._note((msg.key() or b"").decode(), kind)

    def on_dead_letter(self, letter: DeadLetter) -> None:
        self._note((letter.key_bytes() or b"").decode(), "dead_lettered")

    def _note(self, key: str, kind: str) -> None:
        with self.lock:
            self.seen[key][kind] += 1

    def produce(
        self, producer: ThrottledProducer, topic: str, key: str, value: bytes | None = None, **kwargs: Any
    ) -> bool:
        try:
            producer.produce(topic, value or f"v-{key}".encode(), key.encode(), on_delivery=self.on_delivery,
                             **kwargs)
        except SluiceError:
            with self.lock:
                self.refused.add(key)
            return False
        with self.lock:
            self.accepted.add(key)
        return True

    def by_outcome(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = collections.defaultdict(set)
        for key, kinds in self.seen.items():
            for kind in kinds:
                out[kind].add(key)
        return out

    def check(
        self, producer: ThrottledProducer, bootstrap: str, topic: str, dlq: str | None = None
    ) -> dict[str, set[str]]:
        """Assert the invariant against the callbacks, outcomes() and the topics read back."""
        assert not (self.accepted & self.refused)
        for key in self.accepted:
            assert sum(self.seen[key].values()) == 1, (key, self.seen[key])
        assert set(self.seen) == self.accepted, set(self.seen) ^ self.accepted
        groups = self.by_outcome()
        outcomes = producer.outcomes()
        assert outcomes.in_flight == 0
        assert (outcomes.accepted, outcomes.delivered, outcomes.dead_lettered, outcomes.failed, outcomes.in_doubt) == (
            len(self.accepted), len(groups["delivered"]), len(groups["dead_lettered"]), len(groups["failed"]),
            len(groups["in_doubt"]),
        )
        written = collections.Counter((m.key() or b"").decode() for m in consume_all(bootstrap, topic, timeout=30))
        assert groups["delivered"] <= set(written)
        assert set(written) <= groups["delivered"] | groups["in_doubt"]  # never a failed, refused or dead letter
        assert set(written.values()) <= {1}  # idempotent: nothing twice
        if dlq is not None:
            letters = collections.Counter((m.key() or b"").decode() for m in consume_all(bootstrap, dlq, timeout=30))
            # every dead-lettered id is in the DLQ once; a dead letter purged or timed out in flight may be
            # there too, and its message is then in doubt, never failed
            assert groups["dead_lettered"] <= set(letters) <= groups["dead_lettered"] | groups["in_doubt"]
            assert set(letters.values()) <= {1}
        return groups


def _producer(cluster: MockKafkaCluster, ledger: Ledger, source: Any = None, **kwargs: Any) -> ThrottledProducer:
    conf = {"bootstrap.servers": cluster.bootstrap_servers, "linger.ms": 5, "message.timeout.ms": 1000,
            "message.max.bytes": 2000, **kwargs.pop("conf", {})}
    return ThrottledProducer(conf, source or StaticDecisions(make_decision()), delivery_reports="all",
                             on_dead_letter=ledger.on_dead_letter, **kwargs)


def _fresh_topic(cluster: MockKafkaCluster) -> str:
    """A topic of its own for each test, and its dead-letter topic ``<topic>-dlq``."""
    name = f"{TOPIC}-{next(_topics)}"
    cluster.create_topic(name, 3)
    cluster.create_topic(f"{name}-dlq", 1)
    return name


def test_four_outcomes_by_id_across_repeated_pauses(cluster: MockKafkaCluster) -> None:
    topic, ledger = _fresh_topic(cluster), Ledger()
    producer = _producer(cluster, ledger, dlq_topic=f"{topic}-dlq", dlq_conf={"message.timeout.ms": 60000},
                         on_timeout="report")
    ids = (f"p{i}" for i in itertools.count())
    for _ in range(5):  # 5 rounds x 4,000 ids, each with a broker freeze longer than message.timeout.ms
        for _ in range(2000):
            key = next(ids)
            ledger.produce(producer, topic, key, b"x" * 5000 if int(key[1:]) % 97 == 0 else None)  # oversized: DLQ
        cluster.pause()
        try:
            for _ in range(2000):
                ledger.produce(producer, topic, next(ids))
            deadline = time.monotonic() + 15
            while len(producer._producer) and time.monotonic() < deadline:
                producer.poll(0.05)  # the frozen messages time out: in doubt
        finally:
            cluster.resume()
    # A last freeze ended by close(): queued messages are purged (failed), sent ones are in doubt.
    cluster.pause()
    try:
        for _ in range(500):
            ledger.produce(producer, topic, next(ids))
        producer.poll(0.2)
        producer.close(0.3)
    finally:
        cluster.resume()
    groups = ledger.check(producer, cluster.bootstrap_servers, topic, f"{topic}-dlq")
    assert len(ledger.accepted) >= 20_000
    assert all(groups[kind] for kind in ("delivered", "dead_lettered", "failed", "in_doubt")), {
        k: len(v) for k, v in groups.items()}


async def test_threads_and_asyncio_on_one_producer(cluster: MockKafkaCluster) -> None:
    topic, ledger = _fresh_topic(cluster), Ledger()
    producer = _producer(cluster, ledger, StaticDecisions(make_decision(delay_ms={"high": 0, "medium": 0, "low": 3})))

    def worker(n: int) -> None:
        for i in range(1500):
            ledger.produce(producer, topic, f"t{n}-{i}", priority=("high", "medium", "low")[i % 7 % 3])

    async def async_worker(n: int) -> None:
        for i in range(500):
            key = f"a{n}-{i}"
            await producer.aproduce(topic, key.encode(), key.encode(), on_delivery=ledger.on_delivery,
                                    priority="low" if i % 5 == 0 else "high")
            ledger.accepted.add(key)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    await asyncio.gather(*(async_worker(n) for n in range(4)))
    await asyncio.to_thread(lambda: [t.join(60) for t in threads])
    assert await producer.aflush(30) == 0
    groups = ledger.check(producer, cluster.bootstrap_servers, topic)
    assert len(groups["delivered"]) == 8 * 1500 + 4 * 500
    producer.close(5)


def test_close_racing_produce(cluster: MockKafkaCluster) -> None:
    topic, ledger = _fresh_topic(cluster), Ledger()
    producer = _producer(cluster, ledger, conf={"queue.buffering.max.messages": 50})
    closed: list[str] = []
    start = threading.Barrier(5)

    def worker(n: int) -> None:
        start.wait()
        for i in itertools.count():
            key = f"c{n}-{i}"
            try:
                producer.produce(topic, key.encode(), key.encode(), on_delivery=ledger.on_delivery)
            except ProducerClosedError:
                closed.append(key)
                return
            ledger.accepted.add(key)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    start.wait()
    time.sleep(0.3)
    producer.close(2)
    for thread in threads:
        thread.join(30)
    assert len(closed) == 4  # every thread was refused once close() began
    ledger.refused.update(closed)
    ledger.check(producer, cluster.bootstrap_servers, topic)
    with pytest.raises(ProducerClosedError):
        producer.produce(topic, b"after")


def test_decision_swaps_mid_flight_through_the_kubelet_volume(cluster: MockKafkaCluster, tmp_path: Path) -> None:
    topic, ledger = _fresh_topic(cluster), Ledger()
    volume = tmp_path / "volume"
    docs = [
        {"decision.json": to_json(make_decision(epoch=1))},
        {"decision.json": to_json(make_decision(epoch=2, zone="yellow", delay_ms=30))},
        {"decision.json": to_json(make_decision(epoch=3, zone="red", shed=("low",), delay_ms=60))},
        {"decision.json": to_json(make_decision(epoch=4)), "circuit.json": to_json(make_circuit("k", "open"))},
        {"decision.json": to_json(make_decision(epoch=5)), "circuit.json": to_json(make_circuit("k", "closed"))},
    ]
    kubelet_write(volume, docs[0])
    stop = threading.Event()

    def swapper() -> None:
        for doc in itertools.cycle(docs):
            if stop.wait(0.15):
                return
            kubelet_write(volume, doc)

    with DirectoryDecisions(volume, poll_interval=0.02) as source:
        producer = _producer(cluster, ledger, source, dlq_topic=f"{topic}-dlq", on_shed="dlq")
        swaps = threading.Thread(target=swapper, daemon=True)
        swaps.start()

        until = time.monotonic() + 2.0  # more than two full cycles of swaps

        def worker(n: int) -> None:
            for i in itertools.count():
                if time.monotonic() > until:
                    return
                ledger.produce(producer, topic, f"s{n}-{i}", priority=("high", "medium", "low")[i % 3])
                if i % 10 == 0:
                    time.sleep(0.002)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        stop.set()
        swaps.join()
        assert producer.flush(30) == 0
        groups = ledger.check(producer, cluster.bootstrap_servers, topic, f"{topic}-dlq")
    assert ledger.refused and groups["delivered"] and groups["dead_lettered"]  # the swaps really bit
    assert sum(producer.counts.delayed) > 0 and sum(producer.counts.rejected_open) > 0
    producer.close(5)


def test_a_reproducing_on_delivery_across_a_freeze(cluster: MockKafkaCluster) -> None:
    topic, ledger = _fresh_topic(cluster), Ledger()
    producer = _producer(cluster, ledger, on_timeout="report")
    retried: dict[str, str] = {}

    def retry(err: KafkaError | None, msg: Message) -> None:
        ledger.on_delivery(err, msg)
        key = (msg.key() or b"").decode()
        if err is not None and not key.endswith("-again"):
            again = f"{key}-again"
            if ledger.produce(producer, topic, again):
                retried[key] = again

    cluster.pause()
    try:
        for i in range(300):
            key = f"r{i}"
            producer.produce(topic, key.encode(), key.encode(), on_delivery=retry)
            ledger.accepted.add(key)
        deadline = time.monotonic() + 15
        while len(retried) < 300 and time.monotonic() < deadline:
            producer.poll(0.05)
    finally:
        cluster.resume()
    assert producer.flush(30) == 0
    groups = ledger.check(producer, cluster.bootstrap_servers, topic)
    assert set(retried) == {f"r{i}" for i in range(300)} == groups["in_doubt"] - set(retried.values())
    # each re-produced copy is delivered, or (a slow resume on a loaded machine: it was queued during
    # the freeze too) in doubt itself; nothing is lost or failed
    assert set(retried.values()) <= groups["delivered"] | groups["in_doubt"]
    assert groups["delivered"] <= set(retried.values()) and len(groups["delivered"]) >= 150
    producer.close(5)


def test_stale_and_long_expired_documents(cluster: MockKafkaCluster, tmp_path: Path) -> None:
    topic, ledger = _fresh_topic(cluster), Ledger()
    volume = tmp_path / "volume"
    kubelet_write(volume, {"decision.json": to_json(make_decision(ttl=60, generated_ago=3600, epoch=1))})
    with DirectoryDecisions(volume, poll_interval=0.02) as source:
        producer = _producer(cluster, ledger, source, on_stale="block")
        for i in range(50):  # an hour-old document is stale on arrival: blocked, not "fresh"
            assert not ledger.produce(producer, topic, f"old{i}")
        assert producer.health()["decision"]["status"] == "stale"
        kubelet_write(volume, {"decision.json": to_json(make_decision(ttl=1.0, epoch=2))})
        assert source.wait_for(lambda v: v.decision is not None and v.decision.doc.epoch == 2, 10)
        time.sleep(0.01)
        for i in range(50):
            assert ledger.produce(producer, topic, f"fresh{i}")
        time.sleep(1.2)  # the one-second document ages out on the producer's own clock
        with pytest.raises(StaleDecisionError):
            producer.produce(topic, b"late")
        assert producer.flush(30) == 0
        ledger.check(producer, cluster.bootstrap_servers, topic)
    assert ledger.refused == {f"old{i}" for i in range(50)}
    producer.close(5)
