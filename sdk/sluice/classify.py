"""Which of five routes an error takes: the documented table of librdkafka error codes.

``KafkaError.retriable()`` alone is not enough to decide. A message that timed out is "retriable",
yet re-sending it may duplicate what the broker already wrote; ``CORRUPT_MESSAGE`` is retriable in
the protocol but librdkafka has already retried it; an unknown topic is the same failure for every
message and must not fill a dead-letter topic. So every code the SDK can meet is listed in
`ERROR_TABLE` with its route and the reason, and the README's table is generated from it
(``python -m sluice.classify``). Codes not in the table fall back to ``fatal()`` / ``retriable()``.

Routes:

``BACKPRESSURE``  the local queue is full: poll, back off, try again (never enqueued, so no duplicate).
``TRANSIENT``     a produce-time error that may clear: bounded backoff and retry. In a *delivery
                  report* it means librdkafka gave up retrying; the SDK treats that like a timeout.
``TIMED_OUT``     delivery outcome unknown (``message.timeout.ms`` passed): ``on_timeout`` decides.
``PERMANENT_MESSAGE``  this message can never succeed: dead-letter it, else report it.
``PERMANENT_ALL``  every message to the topic (or cluster) fails the same way: fail closed, report,
                  never dead-letter.
``FATAL``         the idempotent producer is unusable: report, and recreate the producer.
``ABORTED``       purged from the queue (by a fatal error or close): reported failed, never re-sent.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, NamedTuple

from confluent_kafka import KafkaError, KafkaException

__all__ = [
    "ERROR_TABLE",
    "Route",
    "TableRow",
    "classify_delivery",
    "classify_error",
    "classify_exception",
    "classify_serialization",
    "in_doubt",
    "markdown_table",
]


class Route(enum.Enum):
    """What the SDK does with a failed message."""

    BACKPRESSURE = "backpressure"
    TRANSIENT = "transient"
    TIMED_OUT = "timed-out"
    PERMANENT_MESSAGE = "permanent-message"
    PERMANENT_ALL = "permanent-all"
    FATAL = "fatal"
    ABORTED = "aborted"


class TableRow(NamedTuple):
    """One documented error code."""

    name: str
    route: Route
    why: str


_B, _T, _TO = Route.BACKPRESSURE, Route.TRANSIENT, Route.TIMED_OUT
_PM, _PA, _F, _A = Route.PERMANENT_MESSAGE, Route.PERMANENT_ALL, Route.FATAL, Route.ABORTED

#: The documented table, in the order the README shows it.
_ROWS: Final[tuple[TableRow, ...]] = (
    TableRow("_QUEUE_FULL", _B, "local queue.buffering.max.messages/kbytes reached; the message was not enqueued"),
    TableRow("_MSG_TIMED_OUT", _TO, "message.timeout.ms passed; the broker may or may not have written it"),
    TableRow("_TIMED_OUT", _T, "a local operation timed out before the message was sent"),
    TableRow("_TRANSPORT", _T, "broker connection failed; librdkafka reconnects"),
    TableRow("_ALL_BROKERS_DOWN", _T, "no broker reachable right now"),
    TableRow("_RETRY", _T, "librdkafka asks for a retry"),
    TableRow("_WAIT_COORD", _T, "waiting for a coordinator"),
    TableRow("_NODE_UPDATE", _T, "broker address changed"),
    TableRow("_ISR_INSUFF", _T, "in-sync replicas below min.insync.replicas (local view)"),
    TableRow("LEADER_NOT_AVAILABLE", _T, "leader election in progress"),
    TableRow("NOT_LEADER_FOR_PARTITION", _T, "stale metadata; librdkafka refreshes it"),
    TableRow("REQUEST_TIMED_OUT", _T, "broker did not answer in request.timeout.ms"),
    TableRow("NETWORK_EXCEPTION", _T, "connection dropped mid-request"),
    TableRow("NOT_ENOUGH_REPLICAS", _T, "fewer in-sync replicas than min.insync.replicas"),
    TableRow("NOT_ENOUGH_REPLICAS_AFTER_APPEND", _T, "written to the leader but not replicated enough"),
    TableRow("KAFKA_STORAGE_ERROR", _T, "broker disk problem; another replica may lead soon"),
    TableRow("THROTTLING_QUOTA_EXCEEDED", _T, "broker-side quota; wait and retry"),
    TableRow("BROKER_NOT_AVAILABLE", _T, "broker going down or starting"),
    TableRow("REPLICA_NOT_AVAILABLE", _T, "replica not available yet"),
    TableRow("MSG_SIZE_TOO_LARGE", _PM, "larger than message.max.bytes (client or broker); will never fit"),
    TableRow("RECORD_LIST_TOO_LARGE", _PM, "the batch exceeds the broker's limit for this message"),
    TableRow("INVALID_MSG", _PM, "CORRUPT_MESSAGE: CRC failed after librdkafka's own retries"),
    TableRow("INVALID_RECORD", _PM, "the broker's record validation rejected this record"),
    TableRow("INVALID_TIMESTAMP", _PM, "timestamp outside the broker's accepted range"),
    TableRow("_BAD_MSG", _PM, "librdkafka could not build the message"),
    TableRow("_INVALID_ARG", _PM, "invalid produce() argument for this message"),
    TableRow("_UNKNOWN_PARTITION", _PM, "the explicit partition does not exist"),
    TableRow("_KEY_SERIALIZATION", _PM, "the key serializer rejected the key"),
    TableRow("_VALUE_SERIALIZATION", _PM, "the value serializer rejected the value"),
    TableRow("UNKNOWN_TOPIC_OR_PART", _PA, "topic does not exist (auto-create off): every message fails"),
    TableRow("_UNKNOWN_TOPIC", _PA, "topic does not exist per metadata: every message fails"),
    TableRow("TOPIC_AUTHORIZATION_FAILED", _PA, "ACLs deny writes to the topic: every message fails"),
    TableRow("CLUSTER_AUTHORIZATION_FAILED", _PA, "ACLs deny idempotent writes: every message fails"),
    TableRow("TRANSACTIONAL_ID_AUTHORIZATION_FAILED", _PA, "ACLs deny the transactional id"),
    TableRow("_AUTHENTICATION", _PA, "credentials rejected: every message fails"),
    TableRow("SASL_AUTHENTICATION_FAILED", _PA, "credentials rejected: every message fails"),
    TableRow("_SSL", _PA, "TLS handshake failed: every message fails"),
    TableRow("TOPIC_EXCEPTION", _PA, "invalid topic name"),
    TableRow("INVALID_REQUIRED_ACKS", _PA, "acks setting refused by the broker"),
    TableRow("UNSUPPORTED_FOR_MESSAGE_FORMAT", _PA, "broker message format too old for this feature"),
    TableRow("UNSUPPORTED_VERSION", _PA, "broker does not support the request version"),
    TableRow("UNSUPPORTED_COMPRESSION_TYPE", _PA, "topic refuses the configured compression"),
    TableRow("POLICY_VIOLATION", _PA, "a broker policy refuses the write"),
    TableRow("_FATAL", _F, "the idempotent producer hit a fatal error and must be recreated"),
    TableRow("OUT_OF_ORDER_SEQUENCE_NUMBER", _F, "idempotence sequence broken (fatal when idempotent)"),
    TableRow("INVALID_PRODUCER_EPOCH", _F, "producer epoch fenced"),
    TableRow("UNKNOWN_PRODUCER_ID", _F, "broker lost the producer id"),
    TableRow("INVALID_PRODUCER_ID_MAPPING", _F, "producer id no longer valid"),
    TableRow("PRODUCER_FENCED", _F, "another producer took over the id"),
    TableRow("_FENCED", _F, "producer fenced locally"),
    TableRow("_GAPLESS_GUARANTEE", _F, "gapless ordering could not be kept"),
    TableRow("_INCONSISTENT", _F, "internal idempotence state inconsistent"),
    TableRow("_PURGE_QUEUE", _A, "purged before it was sent (fatal error or close)"),
    TableRow("_PURGE_INFLIGHT", _A, "purged while in flight (fatal error or close); may be written"),
    TableRow("_DESTROY", _A, "the producer was destroyed"),
)


def _resolve(rows: tuple[TableRow, ...]) -> dict[int, TableRow]:
    table: dict[int, TableRow] = {}
    for row in rows:
        code = getattr(KafkaError, row.name, None)
        if isinstance(code, int):  # older librdkafka builds may lack a constant
            table[code] = row
    return table


#: error code -> documented row.
ERROR_TABLE: Final[Mapping[int, TableRow]] = _resolve(_ROWS)


def classify_error(err: KafkaError) -> Route:
    """The route of a librdkafka error raised at produce time (the table, then fatal/retriable)."""
    if err.fatal():
        return Route.FATAL
    row = ERROR_TABLE.get(err.code())
    if row is not None:
        return row.route
    return Route.TRANSIENT if err.retriable() else Route.PERMANENT_MESSAGE


def classify_delivery(err: KafkaError) -> Route:
    """The route of an error in a delivery report.

    librdkafka reports a message failed only after its own retries ran out, so a "transient" error
    here means the outcome is unknown: it is routed like a timeout, never blindly re-sent.
    """
    route = classify_error(err)
    if route in (Route.TRANSIENT, Route.BACKPRESSURE):
        return Route.TIMED_OUT
    return route


def in_doubt(err: KafkaError | None) -> bool:
    """True when a failed delivery may have been written anyway: the outcome is *in doubt*.

    A timeout (``_MSG_TIMED_OUT``, or a transient error librdkafka stopped retrying) and a purge of
    a message already sent (``_PURGE_INFLIGHT``) leave the broker's side unknown. Every other error
    in a delivery report means the message was not written.
    """
    if err is None:
        return False
    return err.code() == KafkaError._PURGE_INFLIGHT or classify_delivery(err) is Route.TIMED_OUT


def classify_exception(exc: BaseException) -> tuple[Route, KafkaError | None]:
    """The route of an exception raised by ``Producer.produce``."""
    if isinstance(exc, BufferError):
        return Route.BACKPRESSURE, None
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        err: KafkaError = exc.args[0]
        return classify_error(err), err
    return Route.PERMANENT_MESSAGE, None


_TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})


def classify_serialization(exc: BaseException) -> Route:
    """A serializer failure: a Schema Registry outage is transient, anything else is permanent.

    Registry outages show up as network exceptions (httpx/requests transport errors, OSError,
    TimeoutError) or as ``SchemaRegistryError`` with a 5xx/408/429 status, possibly wrapped in a
    ``SerializationError``; the cause chain is searched. A bad record (fastavro's ValueError or
    TypeError, a schema incompatibility, 4xx) can never succeed and is never retried.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_network_error(current):
            return Route.TRANSIENT
        status = getattr(current, "http_status_code", None)
        if type(current).__name__ == "SchemaRegistryError" and isinstance(status, int):
            return Route.TRANSIENT if status in _TRANSIENT_HTTP or status >= 500 or status < 0 else _PM
        current = current.__cause__ or current.__context__
    return Route.PERMANENT_MESSAGE


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, OSError | TimeoutError):
        return True
    for klass in type(exc).__mro__:
        module = klass.__module__.split(".", 1)[0]
        if module == "httpx" and klass.__name__ in ("TransportError", "TimeoutException", "NetworkError"):
            return True
        if module in ("requests", "urllib3") and klass.__name__ in (
            "ConnectionError",
            "Timeout",
            "NewConnectionError",
            "MaxRetryError",
            "ProtocolError",
        ):
            return True
    return False


def markdown_table() -> str:
    """The README table of error codes, generated from `ERROR_TABLE`."""
    lines = ["| librdkafka error | code | route | why |", "|---|---|---|---|"]
    for row in _ROWS:
        code = getattr(KafkaError, row.name, None)
        if isinstance(code, int):
            lines.append(f"| `{row.name}` | {code} | {row.route.value} | {row.why} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
