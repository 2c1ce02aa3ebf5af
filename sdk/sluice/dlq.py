"""Dead-letter messages: what a failed message becomes, and the ``sluice.*`` headers it carries.

A dead letter keeps the original key (as its key, so it lands on a partition as stable as the
original) and the original value, plus headers that say where it was going and why it failed, so
a replay tool needs nothing else. Values that never got serialized are kept as JSON where possible,
else ``repr``; a value that failed for being too large is truncated (it would fail again).

Headers (all values are UTF-8 strings except ``sluice.original-key``, the raw key bytes):

========================  ========================================================================
``sluice.original-topic``  topic the message was produced to
``sluice.original-partition``  partition it was assigned (-1: none yet)
``sluice.original-key``    the original key bytes (absent when the key was None)
``sluice.error-name``      librdkafka error name (``MSG_SIZE_TOO_LARGE``...) or ``SLUICE_SHED`` /
                           ``SERIALIZATION``
``sluice.error-code``      librdkafka error code (0 for a shed, -1 for a serialization error)
``sluice.error-reason``    human-readable error text
``sluice.reason``          shed | permanent | timeout | serialization
``sluice.attempts``        how many times the SDK tried to produce it
``sluice.failed-at``       failure time, RFC 3339 UTC
``sluice.priority``        high | medium | low
``sluice.maybe-delivered``  ``true`` only for timeouts: the original may also have been written
``sluice.value-encoding``  raw | json | repr (how the value field was produced)
``sluice.value-truncated``  original length in bytes, only when the value was cut
``sluice.headers-truncated``  original size of the message's own headers in bytes, only when they
                           were cut to fit
========================  ========================================================================

The original message's own headers follow the ``sluice.*`` ones, unchanged while they fit in
``headers_budget`` bytes (names plus values). A dead letter must fit where the original did not
always fit: headers past the budget are cut (the one that crosses it keeps a prefix of its value,
later ones are dropped) and ``sluice.headers-truncated`` says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "H_ATTEMPTS",
    "H_ERROR_CODE",
    "H_ERROR_NAME",
    "H_ERROR_REASON",
    "H_FAILED_AT",
    "H_HEADERS_TRUNCATED",
    "H_MAYBE_DELIVERED",
    "H_ORIGINAL_KEY",
    "H_ORIGINAL_PARTITION",
    "H_ORIGINAL_TOPIC",
    "H_PRIORITY",
    "H_REASON",
    "H_VALUE_ENCODING",
    "H_VALUE_TRUNCATED",
    "DeadLetter",
    "Header",
    "Reason",
    "encode_value",
    "normalize_headers",
]

H_ORIGINAL_TOPIC = "sluice.original-topic"
H_ORIGINAL_PARTITION = "sluice.original-partition"
H_ORIGINAL_KEY = "sluice.original-key"
H_ERROR_NAME = "sluice.error-name"
H_ERROR_CODE = "sluice.error-code"
H_ERROR_REASON = "sluice.error-reason"
H_REASON = "sluice.reason"
H_ATTEMPTS = "sluice.attempts"
H_FAILED_AT = "sluice.failed-at"
H_PRIORITY = "sluice.priority"
H_MAYBE_DELIVERED = "sluice.maybe-delivered"
H_VALUE_ENCODING = "sluice.value-encoding"
H_VALUE_TRUNCATED = "sluice.value-truncated"
H_HEADERS_TRUNCATED = "sluice.headers-truncated"

Reason = Literal["shed", "permanent", "timeout", "serialization"]
Header = tuple[str, str | bytes | None]


def encode_value(value: Any) -> tuple[bytes | None, str]:
    """Bytes for the DLQ value field and how they were made: raw bytes, JSON, else repr."""
    if value is None:
        return None, "raw"
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), "raw"
    if isinstance(value, str):
        return value.encode(), "raw"
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode(), "json"
    except (TypeError, ValueError):
        return repr(value).encode(errors="replace"), "repr"


def _key_bytes(key: Any) -> bytes | None:
    if key is None:
        return None
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    if isinstance(key, str):
        return key.encode()
    return encode_value(key)[0]


@dataclass(slots=True)
class DeadLetter:
    """One message on its way to (or in) the dead-letter topic."""

    topic: str
    partition: int
    key: Any
    value: Any
    priority: str
    reason: Reason
    error_name: str
    error_code: int
    error_reason: str
    attempts: int
    maybe_delivered: bool = False
    original_headers: list[Header] = field(default_factory=list)
    failed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    truncate_to: int | None = None
    headers_budget: int | None = None

    def key_bytes(self) -> bytes | None:
        """The original key as bytes (the DLQ message key and the ``sluice.original-key`` header)."""
        return _key_bytes(self.key)

    def payload(self) -> tuple[bytes | None, list[Header]]:
        """The DLQ message value and headers."""
        value, encoding = encode_value(self.value)
        headers: list[Header] = [
            (H_ORIGINAL_TOPIC, self.topic),
            (H_ORIGINAL_PARTITION, str(self.partition)),
        ]
        key = self.key_bytes()
        if key is not None:
            headers.append((H_ORIGINAL_KEY, key))
        headers += [
            (H_ERROR_NAME, self.error_name),
            (H_ERROR_CODE, str(self.error_code)),
            (H_ERROR_REASON, self.error_reason),
            (H_REASON, self.reason),
            (H_ATTEMPTS, str(self.attempts)),
            (H_FAILED_AT, self.failed_at.isoformat().replace("+00:00", "Z")),
            (H_PRIORITY, self.priority),
            (H_VALUE_ENCODING, encoding),
        ]
        if self.maybe_delivered:
            headers.append((H_MAYBE_DELIVERED, "true"))
        if value is not None and self.truncate_to is not None and len(value) > self.truncate_to:
            headers.append((H_VALUE_TRUNCATED, str(len(value))))
            value = value[: self.truncate_to]
        own = list(self.original_headers)
        if self.headers_budget is not None:
            size = headers_size(own)
            if size > self.headers_budget:
                headers.append((H_HEADERS_TRUNCATED, str(size)))
                own = cut_headers(own, self.headers_budget)
        return value, headers + own


def normalize_headers(headers: Any) -> list[Header]:
    """confluent-kafka accepts a dict or a list of pairs; dead letters keep a list."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(str(k), v) for k, v in items]


def _raw(value: str | bytes | None) -> bytes:
    return value.encode() if isinstance(value, str) else (value or b"")


def headers_size(headers: list[Header]) -> int:
    """Bytes of header names and values (what counts against ``message.max.bytes``)."""
    return sum(len(name.encode()) + len(_raw(value)) for name, value in headers)


def cut_headers(headers: list[Header], budget: int) -> list[Header]:
    """The headers that fit in ``budget`` bytes; the one crossing it keeps a prefix of its value."""
    out: list[Header] = []
    room = budget
    for name, value in headers:
        need = len(name.encode())
        raw = _raw(value)
        if need + len(raw) <= room:
            out.append((name, value))
            room -= need + len(raw)
            continue
        if room > need:
            out.append((name, raw[: room - need]))
        break
    return out
