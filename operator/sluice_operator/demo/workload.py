"""The demo's traffic: producers at three priorities on the real SDK, and a consumer of fixed capacity.

Producers are closed-loop clients, as in a service: each of `WORKERS` threads per priority waits a
think time, then calls `ThrottledProducer.produce`, which applies the decision in force (sleeps the
delay, raises ShedError or CircuitOpenError). The think time gives the phase's offered load when
nothing is throttled; a delay lengthens every cycle, so a delay is what lowers the send rate, just as
it does for real request handlers. Each priority is its own "application" with its own producer and
its own DirectoryDecisions on the decisions directory.

The consumer is a real group member that processes at most `capacity` messages/s (a token bucket)
and commits its offsets several times a second, so the lag the operator reads from Kafka is real.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from sluice.decision import PRIORITIES, Priority
from sluice.errors import CircuitOpenError, ShedError, SluiceError
from sluice.producer import ThrottledProducer
from sluice.sources.directory import DirectoryDecisions

log = logging.getLogger("sluice_operator.demo")

#: Concurrent clients per priority.
WORKERS = 8
#: How often producers look at the decisions directory (a mounted ConfigMap would be 60-90 s; local
#: mode's files change at once, so the demo polls them fast).
DECISION_POLL_SECONDS = 0.25
COMMIT_EVERY = 0.2


@dataclass(frozen=True, slots=True)
class PriorityCounts:
    """Cumulative counts of one priority (a snapshot)."""

    attempted: int = 0
    sent: int = 0
    delayed: int = 0
    shed: int = 0
    rejected: int = 0
    failed: int = 0
    delivered: int = 0
    in_flight: int = 0
    delay_seconds: float = 0.0


class _Worker:
    """Per-thread tallies the SDK does not keep (attempts, time spent in produce)."""

    __slots__ = ("attempted", "waited")

    def __init__(self) -> None:
        self.attempted = 0
        self.waited = 0.0


class ProducerFleet:
    """`WORKERS` client threads per priority, each priority with its own ThrottledProducer."""

    def __init__(self, bootstrap: str, topic: str, decisions: Path, circuit_paths: list[Path],
                 offered: Callable[[Priority], float], *, workers: int = WORKERS, logger: logging.Logger = log,
                 seed: int = 7) -> None:
        self.topic = topic
        self.offered = offered
        self.workers = workers
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._tallies: dict[Priority, list[_Worker]] = {p: [] for p in PRIORITIES}
        self.sources: dict[Priority, DirectoryDecisions] = {}
        self.producers: dict[Priority, ThrottledProducer] = {}
        self._random = random.Random(seed)
        for priority in PRIORITIES:
            source = DirectoryDecisions(decisions, poll_interval=DECISION_POLL_SECONDS, circuit_paths=circuit_paths)
            self.sources[priority] = source
            conf: dict[str, Any] = {
                "bootstrap.servers": bootstrap,
                "client.id": f"demo-{priority}",
                "linger.ms": 5,
                "message.timeout.ms": 120000,
                "logger": logger,
            }
            self.producers[priority] = ThrottledProducer(conf, source, policy=None)

    def start(self) -> None:
        for priority in PRIORITIES:
            for i in range(self.workers):
                tally = _Worker()
                self._tallies[priority].append(tally)
                thread = threading.Thread(target=self._work, args=(priority, tally, self._random.random()),
                                          name=f"demo-{priority}-{i}", daemon=True)
                self._threads.append(thread)
        poller = threading.Thread(target=self._poll, name="demo-delivery-reports", daemon=True)
        self._threads.append(poller)
        for thread in self._threads:
            thread.start()

    def _work(self, priority: Priority, tally: _Worker, offset: float) -> None:
        producer = self.producers[priority]
        rng = random.Random(offset)
        value = f"{priority}-order".encode()
        # Spread the workers' first sends over one think time.
        first = True
        while True:
            rate = self.offered(priority)
            think = self.workers / rate if rate > 0 else 0.5
            wait = think * (offset if first else rng.uniform(0.5, 1.5))
            first = False
            if self._stop.wait(wait):
                return
            tally.attempted += 1
            started = time.monotonic()
            try:
                producer.produce(self.topic, value, priority=priority)
            except (ShedError, CircuitOpenError):
                pass  # counted by the SDK; a real client would drop or retry the request later
            except SluiceError as error:
                log.debug("%s produce failed: %s", priority, error)
            tally.waited += time.monotonic() - started

    def _poll(self) -> None:
        """Serve delivery reports even while circuits reject everything (produce() polls otherwise)."""
        while not self._stop.is_set():
            for producer in self.producers.values():
                producer.poll(0)
            self._stop.wait(0.05)

    def snapshot(self) -> dict[Priority, PriorityCounts]:
        out: dict[Priority, PriorityCounts] = {}
        for i, priority in enumerate(PRIORITIES):
            producer = self.producers[priority]
            counts = producer.counts
            outcomes = producer.outcomes()
            tallies = self._tallies[priority]
            out[priority] = PriorityCounts(
                attempted=sum(t.attempted for t in tallies),
                sent=counts.sent[i],
                delayed=counts.delayed[i],
                shed=counts.shed[i],
                rejected=counts.rejected_open[i] + counts.rejected_stale[i],
                failed=counts.failed[i] + outcomes.failed,
                delivered=outcomes.delivered,
                in_flight=outcomes.in_flight,
                delay_seconds=sum(t.waited for t in tallies),
            )
        return out

    def stop(self, flush_timeout: float = 2.0) -> None:
        """Stop the clients, then flush and close every producer and decision source."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        for producer in self.producers.values():
            producer.close(flush_timeout)
        for source in self.sources.values():
            source.close()


class CappedConsumer:
    """A real consumer-group member processing at most `capacity` messages per second."""

    def __init__(self, bootstrap: str, group: str, topic: str, capacity: float, *,
                 logger: logging.Logger = log) -> None:
        self.capacity = capacity
        self.topic = topic
        self.consumed = 0
        self.commit_errors = 0
        self.assigned = threading.Event()
        self._stop = threading.Event()
        self._consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": "demo-consumer",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
            "session.timeout.ms": 45000,
            "on_commit": self._on_commit,
            "logger": logger,
        })
        self._thread = threading.Thread(target=self._run, name="demo-consumer", daemon=True)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            self.commit_errors += 1

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.set()

    def start(self) -> None:
        self._consumer.subscribe([self.topic], on_assign=self._on_assign)
        self._thread.start()

    def _run(self) -> None:
        burst = max(1.0, self.capacity * 0.05)
        tokens = 0.0
        last = time.monotonic()
        last_commit = last
        uncommitted = False
        while not self._stop.is_set():
            now = time.monotonic()
            tokens = min(burst, tokens + (now - last) * self.capacity)
            last = now
            if tokens < 1.0:
                time.sleep((1.0 - tokens) / self.capacity)
                continue
            try:
                messages = self._consumer.consume(num_messages=int(tokens), timeout=0.1)
            except KafkaException as error:
                log.debug("consume failed: %s", error)
                continue
            handled = sum(1 for m in messages if m.error() is None)
            tokens -= len(messages)
            self.consumed += handled
            uncommitted = uncommitted or handled > 0
            if uncommitted and now - last_commit >= COMMIT_EVERY:
                last_commit = now
                try:
                    self._consumer.commit(asynchronous=True)
                    uncommitted = False
                except KafkaException as error:  # nothing consumed since the last commit, or no coordinator
                    log.debug("commit failed: %s", error)
        self.assigned.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as error:
            log.debug("consumer close: %s", error)
