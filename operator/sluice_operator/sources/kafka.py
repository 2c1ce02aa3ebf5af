"""Consumer lag read straight from Kafka (no Prometheus, no lag exporter).

lag = sum over the partitions of the given topics of
``high watermark - max(committed offset, low watermark)``, where a partition
the group never committed counts from its low watermark. Committed offsets
below the low watermark (records deleted by retention) therefore never count
deleted records as lag, and an unknown group reports every retained record.

How it is read (one AdminClient per bootstrap + config, reused):

1. ``list_topics()`` - one all-topics Metadata request: the partition lists,
   and proof the cluster answers at all.
2. ``list_consumer_group_offsets()`` with explicit partitions (OffsetFetch).
   Explicit partitions matter: asking for "all of the group's partitions"
   returns nothing from librdkafka's mock broker.
3. ``list_offsets()`` latest and earliest, concurrently (ListOffsets,
   read_uncommitted, as ``kafka-consumer-groups`` reports it).

Committed offsets are read *before* the watermarks so a commit racing the
read can only make lag look larger, never negative. The admin API is used
rather than a Consumer's ``get_watermark_offsets`` (one round trip per
partition) and ``committed`` (needs a consumer instance joined to the
group's coordinator); librdkafka's mock cluster supports all three requests.

Everything is a blocking librdkafka call, so a read runs in a small bounded
thread pool with one overall deadline: every call gets the remaining budget
as its own timeout, a hung cluster ends in ``Timeout``, and the event loop
never blocks.

Outcomes (never exceptions):

- OK: the exact sum; ``series`` is the number of partitions summed.
- UNAVAILABLE: timeout, transport errors, a partition without a leader or
  offsets, the group coordinator still loading. Under-reporting lag is the
  dangerous direction, so a read missing any partition is not a number.
- SPEC_ERROR: an unknown topic, an authorization failure, an invalid client
  config or Secret. An unknown topic is usually a typo; it is reported
  plainly and the next evaluation picks up a topic created meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # not re-exported explicitly

from sluice_operator.sources.reading import Reading, SignalStatus, truncate

__all__ = [
    "LIBRDKAFKA_LOGGER",
    "ClientCache",
    "KafkaLagSource",
    "KafkaSecretError",
    "base_client_config",
    "drain_logs",
    "kafka_config_from_secret",
    "kafka_error_reason",
    "kafka_exception_error",
    "partition_lag",
    "read_lag",
    "redact",
]

T = TypeVar("T")

#: librdkafka properties a Secret may set (a tenant-controlled Secret must not reach properties
#: that load libraries or run commands, such as ``plugin.library.paths`` or ``sasl.kerberos.kinit.cmd``).
ALLOWED_SECRET_PROPERTIES = frozenset(
    {
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "sasl.oauthbearer.method",
        "sasl.oauthbearer.client.id",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.scope",
        "sasl.oauthbearer.extensions",
        "sasl.oauthbearer.token.endpoint.url",
        "ssl.ca.pem",
        "ssl.certificate.pem",
        "ssl.key.pem",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
        "ssl.cipher.suites",
        "ssl.curves.list",
        "ssl.sigalgs.list",
        "client.id",
    }
)

#: Friendly Secret keys -> librdkafka properties (``tls.crt``/``tls.key``/``ca.crt`` as cert-manager writes them).
SECRET_KEY_ALIASES: Mapping[str, str] = {
    "username": "sasl.username",
    "password": "sasl.password",
    "mechanism": "sasl.mechanism",
    "securityProtocol": "security.protocol",
    "ca.crt": "ssl.ca.pem",
    "tls.crt": "ssl.certificate.pem",
    "tls.key": "ssl.key.pem",
}

_DEFAULT_TIMEOUT = 3.0
_GRACE = 0.5  # the thread's own deadline fires first; this only covers scheduling delays
_MIN_CALL_TIMEOUT = 0.05


class KafkaSecretError(ValueError):
    """The Secret holding Kafka client settings cannot be used as it is."""


def kafka_config_from_secret(data: Mapping[str, str]) -> dict[str, str]:
    """Decode a Secret's base64 ``data`` into librdkafka properties.

    Keys are either allowed librdkafka property names (passed through) or the
    aliases in :data:`SECRET_KEY_ALIASES`. Anything else is refused by name,
    so a typo is visible instead of silently ignored.
    """
    config: dict[str, str] = {}
    refused: list[str] = []
    for key, encoded in data.items():
        prop = SECRET_KEY_ALIASES.get(key, key)
        if prop not in ALLOWED_SECRET_PROPERTIES:
            refused.append(key)
            continue
        try:
            value = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError) as exc:
            raise KafkaSecretError(f"Secret key {key!r} is not base64-encoded UTF-8 text") from exc
        if prop in config and config[prop] != value:
            raise KafkaSecretError(f"Secret sets {prop!r} twice with different values (key {key!r})")
        config[prop] = value
    if refused:
        allowed = sorted(ALLOWED_SECRET_PROPERTIES | set(SECRET_KEY_ALIASES))
        raise KafkaSecretError(f"Secret keys not allowed: {sorted(refused)}; allowed: {allowed}")
    return config


def base_client_config(bootstrap_servers: str, extra: Mapping[str, str] | None, client_id: str) -> dict[str, str]:
    """Client settings shared by the lag source and the health probe; ``bootstrap.servers`` always wins."""
    config = {
        "client.id": client_id,
        "allow.auto.create.topics": "false",  # reading must never create a topic
        "reconnect.backoff.max.ms": "1000",  # notice a recovered cluster within a second
        "log.connection.close": "false",
    }
    config.update(extra or {})
    config["bootstrap.servers"] = bootstrap_servers
    return config


_SENSITIVE_PROPERTIES = ("sasl.password", "sasl.oauthbearer.client.secret", "ssl.key.pem", "ssl.key.password")


def redact(text: str, config: Mapping[str, str] | None) -> str:
    """``text`` with the values of secret properties replaced (client errors may echo config values)."""
    for prop in _SENSITIVE_PROPERTIES:
        value = (config or {}).get(prop)
        if value:
            text = text.replace(value, "***")
    return text


def partition_lag(high: int, low: int, committed: int | None) -> int:
    """Lag of one partition: from the committed offset, or the low watermark when there is none / it is older."""
    start = low if committed is None or committed < 0 else max(committed, low)
    return max(0, high - start)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.strip("_").split("_") if part)


def kafka_error_reason(error: KafkaError | None) -> str:
    """A CamelCase reason from a KafkaError name (``_TIMED_OUT`` -> ``Timeout``)."""
    if error is None:
        return "KafkaError"
    if error.code() in (KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT):
        return "Timeout"
    return _camel(str(error.name())) or "KafkaError"


_SPEC_ERROR_CODES = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.INVALID_GROUP_ID,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError._INVALID_ARG,
    }
)


class _Failed(Exception):
    """Internal: ends a read with a non-OK Reading."""

    def __init__(self, status: SignalStatus, reason: str, message: str) -> None:
        super().__init__(message)
        self.reading = Reading(status=status, reason=reason, message=truncate(message))


def _from_kafka(error: KafkaError | None, what: str) -> _Failed:
    code = error.code() if error is not None else None
    status = SignalStatus.SPEC_ERROR if code in _SPEC_ERROR_CODES else SignalStatus.UNAVAILABLE
    reason = kafka_error_reason(error)
    if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
        reason = "UnknownTopic"
    detail = error.str() if error is not None else "unknown error"
    return _Failed(status, reason, f"{what}: {detail}")


def kafka_exception_error(exc: BaseException) -> KafkaError | None:
    """The KafkaError inside a KafkaException (None for anything else)."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


_Key = tuple[tuple[str, str], ...]

#: librdkafka's own log lines go here (delivered by :func:`drain_logs`), not straight to stderr.
LIBRDKAFKA_LOGGER = logging.getLogger("sluice_operator.sources.kafka.librdkafka")


def drain_logs(client: AdminClient) -> None:
    """Deliver librdkafka's queued log lines to :data:`LIBRDKAFKA_LOGGER` (they wait for a poll)."""
    with contextlib.suppress(Exception):
        client.poll(0)


class ClientCache:
    """AdminClients keyed by their full config: LRU beyond ``max_clients``, dropped after ``max_idle`` s unused.

    Creating a client costs threads and connections; a per-evaluation client
    would also throw away its warm connections and metadata every time. Idle
    eviction stops clients of deleted or edited resources from reconnecting
    to an old cluster forever.
    """

    def __init__(self, client_id: str, max_clients: int = 16, max_idle: float = 600.0) -> None:
        self._client_id = client_id
        self._max = max_clients
        self._max_idle = max_idle
        self._clients: OrderedDict[_Key, tuple[AdminClient, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, bootstrap_servers: str, extra: Mapping[str, str] | None) -> AdminClient:
        """The client for this bootstrap + config (created on first use; raises KafkaException on bad config)."""
        config = base_client_config(bootstrap_servers, extra, self._client_id)
        key: _Key = tuple(sorted(config.items()))
        now = time.monotonic()
        with self._lock:
            self._evict_idle(now)
            entry = self._clients.get(key)
            if entry is not None:
                self._clients[key] = (entry[0], now)
                self._clients.move_to_end(key)
                return entry[0]
        client_config: dict[str, Any] = {**config, "logger": LIBRDKAFKA_LOGGER}  # stubs omit non-scalar values
        client = AdminClient(client_config)
        with self._lock:
            existing, _ = self._clients.setdefault(key, (client, now))
            self._clients.move_to_end(key)
            while len(self._clients) > self._max:
                self._clients.popitem(last=False)  # threads still using it keep their reference
            return existing

    def _evict_idle(self, now: float) -> None:
        for key in [k for k, (_, used) in self._clients.items() if now - used > self._max_idle]:
            del self._clients[key]

    def clear(self) -> None:
        """Drop every client (librdkafka destroys each when its last reference goes)."""
        with self._lock:
            self._clients.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)


@dataclass(frozen=True, slots=True)
class _Deadline:
    end: float

    def remaining(self, what: str) -> float:
        left = self.end - time.monotonic()
        if left < _MIN_CALL_TIMEOUT:
            raise _Failed(SignalStatus.UNAVAILABLE, "Timeout", f"no time left for {what}")
        return left


def _wait(futures: Mapping[Any, concurrent.futures.Future[Any]], deadline: _Deadline, what: str) -> dict[Any, Any]:
    results: dict[Any, Any] = {}
    for key, future in futures.items():
        try:
            results[key] = future.result(timeout=deadline.remaining(what) + _GRACE)
        except concurrent.futures.TimeoutError as exc:
            raise _Failed(SignalStatus.UNAVAILABLE, "Timeout", f"{what} timed out") from exc
        except KafkaException as exc:
            raise _from_kafka(kafka_exception_error(exc), what) from exc
    return results


def _partitions(admin: AdminClient, topics: Sequence[str], deadline: _Deadline) -> list[TopicPartition]:
    try:
        metadata = admin.list_topics(timeout=deadline.remaining("metadata"))
    except KafkaException as exc:
        raise _from_kafka(kafka_exception_error(exc), "metadata request") from exc
    missing = [t for t in topics if t not in metadata.topics]
    if missing:
        raise _Failed(SignalStatus.SPEC_ERROR, "UnknownTopic", f"topics not found in the cluster: {missing}")
    result: list[TopicPartition] = []
    for topic in topics:
        meta = metadata.topics[topic]
        if meta.error is not None:
            raise _from_kafka(meta.error, f"topic {topic}")
        if not meta.partitions:
            raise _Failed(SignalStatus.UNAVAILABLE, "NoPartitions", f"topic {topic} reports no partitions")
        result.extend(TopicPartition(topic, p) for p in sorted(meta.partitions))
    return result


def _committed(
    admin: AdminClient, group: str, partitions: list[TopicPartition], deadline: _Deadline
) -> dict[tuple[str, int], int]:
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(tp.topic, tp.partition) for tp in partitions])]
    futures = admin.list_consumer_group_offsets(request, request_timeout=deadline.remaining("committed offsets"))
    answer = _wait(futures, deadline, f"committed offsets of group {group}")[group]
    committed: dict[tuple[str, int], int] = {}
    for tp in answer.topic_partitions or []:
        if tp.error is not None:
            raise _from_kafka(tp.error, f"committed offset of {tp.topic}[{tp.partition}]")
        committed[(tp.topic, tp.partition)] = tp.offset
    return committed


def _watermarks(
    admin: AdminClient, partitions: list[TopicPartition], deadline: _Deadline
) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    timeout = deadline.remaining("watermarks")
    specs = (OffsetSpec.latest(), OffsetSpec.earliest())  # type: ignore[no-untyped-call]
    pending = [
        admin.list_offsets({TopicPartition(tp.topic, tp.partition): spec for tp in partitions}, request_timeout=timeout)
        for spec in specs
    ]
    marks: list[dict[tuple[str, int], int]] = []
    for futures in pending:
        results = _wait(futures, deadline, "watermarks")
        marks.append({(tp.topic, tp.partition): info.offset for tp, info in results.items()})
    high, low = marks
    # librdkafka reports a partition it got no answer for as offset -1001 rather than an error.
    bad = sorted(f"{t}[{p}]" for (t, p), off in (*high.items(), *low.items()) if off < 0)
    if bad:
        timed_out = time.monotonic() >= deadline.end - _MIN_CALL_TIMEOUT
        reason = "Timeout" if timed_out else "OffsetsUnavailable"
        raise _Failed(SignalStatus.UNAVAILABLE, reason, f"no watermarks for {', '.join(bad[:10])}")
    return high, low


def _read_lag_blocking(
    cache: ClientCache,
    bootstrap_servers: str,
    group: str,
    topics: Sequence[str],
    config: Mapping[str, str] | None,
    deadline: _Deadline,
) -> Reading:
    if time.monotonic() >= deadline.end:  # waited in the pool queue past the deadline
        return Reading(SignalStatus.UNAVAILABLE, reason="Timeout", message="lag read queued past its deadline")
    try:
        try:
            admin = cache.get(bootstrap_servers, config)
        except (KafkaException, ValueError, TypeError) as exc:
            message = redact(f"Kafka client config rejected: {exc}", config)
            raise _Failed(SignalStatus.SPEC_ERROR, "InvalidConfig", message) from exc
        try:
            partitions = _partitions(admin, topics, deadline)
            committed = _committed(admin, group, partitions, deadline)
            high, low = _watermarks(admin, partitions, deadline)
        finally:
            drain_logs(admin)
    except _Failed as failed:
        return failed.reading
    total = 0
    consumed = 0
    for tp in partitions:
        key = (tp.topic, tp.partition)
        total += partition_lag(high[key], low[key], committed.get(key))
        consumed += high[key] - partition_lag(high[key], low[key], committed.get(key))
    return Reading(SignalStatus.OK, value=float(total), reason="Ok", series=len(partitions), consumed=float(consumed))


class KafkaLagSource:
    """Reads consumer lag with cached clients and at most ``max_workers`` blocking reads at a time.

    A read that waits for a worker longer than its timeout is cancelled, so a
    hung cluster costs at most ``max_workers`` threads, never an unbounded pile.
    """

    def __init__(self, *, max_workers: int = 4, max_clients: int = 16) -> None:
        self._cache = ClientCache("sluice-operator-lag", max_clients)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sluice-lag")

    async def read_lag(
        self,
        bootstrap_servers: str,
        group: str,
        topics: Iterable[str],
        *,
        config: Mapping[str, str] | None = None,
        timeout_seconds: float = _DEFAULT_TIMEOUT,
    ) -> Reading:
        """Total lag of ``group`` over ``topics``; every outcome is a :class:`Reading`."""
        topic_list = list(dict.fromkeys(topics))
        if not topic_list:
            return Reading(SignalStatus.SPEC_ERROR, reason="NoTopics", message="no topics given")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be > 0")
        deadline = _Deadline(time.monotonic() + timeout_seconds)
        return await self._run(
            lambda: _read_lag_blocking(self._cache, bootstrap_servers, group, topic_list, config, deadline),
            timeout_seconds,
        )

    async def _run(self, fn: Callable[[], Reading], timeout_seconds: float) -> Reading:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._pool, fn), timeout_seconds + 2 * _GRACE)
        except TimeoutError:
            message = f"lag read exceeded {timeout_seconds}s"
            return Reading(SignalStatus.UNAVAILABLE, reason="Timeout", message=message)

    def close(self) -> None:
        """Stop the worker pool (running reads finish by their deadline) and drop the clients."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._cache.clear()


class ProcessWide(Generic[T]):
    """One instance shared by the whole process, made on first use (shared clients, pools and caps)."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._instance: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        with self._lock:
            if self._instance is None:
                self._instance = self._factory()
            return self._instance


_default = ProcessWide(KafkaLagSource)


async def read_lag(*args: Any, **kwargs: Any) -> Reading:
    """:meth:`KafkaLagSource.read_lag` (same arguments) on a process-wide source."""
    return await _default.get().read_lag(*args, **kwargs)
