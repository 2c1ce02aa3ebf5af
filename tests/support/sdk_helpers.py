"""Helpers for the producer SDK's tests: decision documents, an in-process mock Kafka cluster with
fault injection, and a consumer that drains a topic.

`InProcessKafka` hosts librdkafka's mock cluster inside the test process (``test.mock.num.brokers``
on a plain client) and reaches librdkafka's mock API through ctypes on the very library
confluent-kafka loaded, to inject per-topic errors (``rd_kafka_mock_topic_set_error``) and fatal
producer errors (``rd_kafka_test_fatal_error``). Use ``sluice.testing.MockKafkaCluster`` when the
brokers must hang (SIGSTOP); it lives in a child process.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import confluent_kafka
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from sluice.decision import CircuitState, Decision, FallbackDelays, PolicyRef, Priorities, PriorityDecision, utcnow

__all__ = [
    "InProcessKafka",
    "consume",
    "consume_all",
    "headers_of",
    "inject_fatal",
    "kubelet_write",
    "make_circuit",
    "make_decision",
]


# -- documents -------------------------------------------------------------------------------------


def make_decision(
    *,
    delay_ms: int | Mapping[str, int] = 0,
    shed: tuple[str, ...] = (),
    zone: str = "green",
    enforcement: str = "Enforce",
    ttl: float = 180.0,
    epoch: int = 1,
    circuit: CircuitState | None = None,
    fallback: Mapping[str, int] | None = None,
    policy: tuple[str, str] = ("default", "orders"),
    generated_ago: float = 0.0,
    admit_ratio: Mapping[str, float] | None = None,
    excess: Mapping[str, str] | None = None,
) -> Decision:
    """A Decision document as the operator would publish it (``admit_ratio``: DrainTime pacing)."""
    delays = dict.fromkeys(("high", "medium", "low"), delay_ms) if isinstance(delay_ms, int) else dict(delay_ms)
    observe = enforcement == "Observe"

    def one(p: str) -> PriorityDecision:
        d, s = int(delays.get(p, 0)), p in shed
        ratio = (admit_ratio or {}).get(p)
        how = (excess or {}).get(p)
        if observe:
            return PriorityDecision(zone=zone, delay_ms=0, shed=False, would_delay_ms=d, would_shed=s,
                                    would_admit_ratio=ratio)
        return PriorityDecision(zone=zone, delay_ms=d, shed=s, admit_ratio=ratio,
                                excess=how)  # type: ignore[arg-type]

    now = utcnow() - timedelta(seconds=generated_ago)
    return Decision(
        policy=PolicyRef(namespace=policy[0], name=policy[1]),
        epoch=epoch,
        generated_at=now,
        expires_at=now + timedelta(seconds=ttl),
        source="prometheus",
        enforcement=enforcement,
        priorities=Priorities(high=one("high"), medium=one("medium"), low=one("low")),
        fallback=FallbackDelays(**fallback) if fallback else FallbackDelays(),
        circuit=circuit,
    )


def make_circuit(
    name: str = "kafka", state: str = "open", *, probe_ratio: float = 0.1, ttl: float = 180.0, epoch: int = 1
) -> CircuitState:
    """A CircuitState document."""
    now = utcnow()
    return CircuitState(
        name=name,
        state=state,
        probe_ratio=probe_ratio,
        epoch=epoch,
        generated_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )


# -- a ConfigMap volume, updated exactly as the kubelet does it ----------------------------------

_SEQ = itertools.count()


def kubelet_write(directory: Path, files: Mapping[str, str | bytes]) -> Path:
    """Publish ``files`` into ``directory`` the way the kubelet's AtomicWriter updates a ConfigMap volume.

    1. write every file into a fresh ``..<timestamp>`` directory;
    2. point a new ``..data_tmp`` symlink at it and rename it over ``..data`` (the atomic step);
    3. create the visible ``name -> ..data/name`` symlinks that do not exist yet;
    4. remove visible names that are no longer keys, then the previous timestamped directory.
    Returns the new timestamped directory.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y_%m_%d_%H_%M_%S.%f")
    target = directory / f"..{stamp}{next(_SEQ):04d}"
    target.mkdir()
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (target / name).write_bytes(data)
    data_link = directory / "..data"
    previous = os.readlink(data_link) if data_link.is_symlink() else None
    tmp = directory / "..data_tmp"
    os.symlink(target.name, tmp)
    os.rename(tmp, data_link)
    for name in files:
        link = directory / name
        if not link.is_symlink():
            os.symlink(f"..data/{name}", link)
    for entry in directory.iterdir():
        if not entry.name.startswith("..") and entry.is_symlink() and entry.name not in files:
            entry.unlink()
    if previous is not None:
        shutil.rmtree(directory / previous, ignore_errors=True)
    return target


# -- librdkafka through ctypes --------------------------------------------------------------------


def _librdkafka() -> ctypes.CDLL:
    """The librdkafka confluent-kafka loaded (found through /proc/self/maps)."""
    import confluent_kafka.cimpl

    with open("/proc/self/maps") as maps:
        for row in maps:
            path = row.split()[-1] if row.strip() else ""
            if "librdkafka" in os.path.basename(path):
                lib = ctypes.CDLL(path)
                break
        else:
            lib = ctypes.CDLL(confluent_kafka.cimpl.__file__)
    vp, cp = ctypes.c_void_p, ctypes.c_char_p
    lib.rd_kafka_handle_mock_cluster.restype = vp
    lib.rd_kafka_handle_mock_cluster.argtypes = [vp]
    lib.rd_kafka_mock_cluster_bootstraps.restype = cp
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [vp]
    lib.rd_kafka_mock_topic_set_error.argtypes = [vp, cp, ctypes.c_int]
    lib.rd_kafka_mock_topic_create.argtypes = [vp, cp, ctypes.c_int, ctypes.c_int]
    lib.rd_kafka_mock_topic_create.restype = ctypes.c_int
    lib.rd_kafka_test_fatal_error.argtypes = [vp, ctypes.c_int, cp]
    lib.rd_kafka_test_fatal_error.restype = ctypes.c_int
    return lib


def _rk(handle: Producer) -> int:
    """The rd_kafka_t* of a confluent-kafka client: the first field after PyObject_HEAD."""
    pointer = ctypes.c_void_p.from_address(id(handle) + 2 * ctypes.sizeof(ctypes.c_void_p)).value
    assert pointer, "could not read rd_kafka_t* from the client object"
    return int(pointer)


def inject_fatal(producer: Producer, code: int = confluent_kafka.KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER) -> None:
    """Raise a fatal (idempotence) error inside ``producer``, as librdkafka's own tests do."""
    rc = _librdkafka().rd_kafka_test_fatal_error(_rk(producer), code, b"injected by the test")
    assert rc == 0, f"rd_kafka_test_fatal_error returned {rc}"


class InProcessKafka:
    """librdkafka's mock cluster hosted by a client in this process, with fault injection."""

    def __init__(self, num_brokers: int = 3, topics: Mapping[str, int] | None = None) -> None:
        self._host: Producer | None = Producer({"test.mock.num.brokers": num_brokers, "log_level": 2})
        self._lib = _librdkafka()
        self._mcluster = self._lib.rd_kafka_handle_mock_cluster(_rk(self._host))
        assert self._mcluster, "client has no mock cluster"
        raw: bytes = self._lib.rd_kafka_mock_cluster_bootstraps(self._mcluster)
        self.bootstrap_servers = raw.decode()
        for topic, partitions in (topics or {}).items():
            self.create_topic(topic, partitions)

    def create_topic(self, topic: str, partitions: int = 3, replication: int = 1) -> None:
        """Create a topic with an exact partition count."""
        rc = self._lib.rd_kafka_mock_topic_create(self._mcluster, topic.encode(), partitions, replication)
        assert rc == 0, f"topic create failed: {rc}"

    def set_topic_error(self, topic: str, code: int) -> None:
        """Make the brokers answer every request about ``topic`` with ``code`` (0 clears it)."""
        self._lib.rd_kafka_mock_topic_set_error(self._mcluster, topic.encode(), code)

    def close(self) -> None:
        """Destroy the hosting client (and with it the brokers)."""
        host, self._host = self._host, None
        if host is not None:
            with contextlib.suppress(Exception):
                host.flush(0)
            del host

    def __enter__(self) -> InProcessKafka:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def consume(bootstrap: str, topic: str, count: int, *, timeout: float = 15.0) -> list[Message]:
    """Read ``count`` messages of ``topic`` from the beginning (fewer if ``timeout`` passes).

    Partitions are assigned directly (no consumer group), so there is no rebalance delay.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "sluice-test-reader",
            "enable.auto.commit": False,
            "log_level": 2,
        }
    )
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        partitions: list[int] = []
        while not partitions and time.monotonic() < deadline:
            meta = consumer.list_topics(topic, timeout=max(0.1, deadline - time.monotonic()))
            info = meta.topics.get(topic)
            if info is not None and info.error is None:
                partitions = sorted(info.partitions)
            else:
                time.sleep(0.05)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            out.append(msg)
    finally:
        consumer.close()
    return out


def consume_all(bootstrap: str, topic: str, *, timeout: float = 15.0) -> list[Message]:
    """Every message of ``topic`` up to its current end (the high watermarks when called)."""
    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": "sluice-test-reader", "log_level": 2})
    try:
        meta = probe.list_topics(topic, timeout=timeout)
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            return []
        total = 0
        for partition in info.partitions:
            low, high = probe.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            total += high - low
    finally:
        probe.close()
    messages = consume(bootstrap, topic, total, timeout=timeout)
    assert len(messages) == total, f"read {len(messages)} of {total} messages of {topic}"
    return messages


def headers_of(msg: Message) -> dict[str, Any]:
    """A message's headers as a dict (str values decoded, the original key left as bytes)."""
    out: dict[str, Any] = {}
    raw = msg.headers() or []
    for name, value in raw.items() if isinstance(raw, dict) else raw:
        if isinstance(value, bytes) and name != "sluice.original-key":
            out[name] = value.decode()
        else:
            out[name] = value
    return out
