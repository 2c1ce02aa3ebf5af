"""Dead-letter payloads: value encodings, every header, truncation of oversized values."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sluice import dlq
from sluice.dlq import DeadLetter, encode_value, normalize_headers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, (None, "raw")),
        (b"\x00bytes", (b"\x00bytes", "raw")),
        ("text", (b"text", "raw")),
        ({"b": 1, "a": [1, 2]}, (b'{"a":[1,2],"b":1}', "json")),
        ({1, 2}, (b"{1, 2}", "repr")),
    ],
)
def test_value_encoding(value: object, expected: tuple[bytes | None, str]) -> None:
    assert encode_value(value) == expected


def test_every_header_is_present_and_original_headers_follow() -> None:
    letter = DeadLetter(
        topic="orders",
        partition=2,
        key=b"k1",
        value=b"payload",
        priority="low",
        reason="timeout",
        error_name="_MSG_TIMED_OUT",
        error_code=-192,
        error_reason="Local: Message timed out",
        attempts=3,
        maybe_delivered=True,
        original_headers=normalize_headers({"trace": b"abc"}),
        failed_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    value, headers = letter.payload()
    assert value == b"payload"
    assert headers == [
        (dlq.H_ORIGINAL_TOPIC, "orders"),
        (dlq.H_ORIGINAL_PARTITION, "2"),
        (dlq.H_ORIGINAL_KEY, b"k1"),
        (dlq.H_ERROR_NAME, "_MSG_TIMED_OUT"),
        (dlq.H_ERROR_CODE, "-192"),
        (dlq.H_ERROR_REASON, "Local: Message timed out"),
        (dlq.H_REASON, "timeout"),
        (dlq.H_ATTEMPTS, "3"),
        (dlq.H_FAILED_AT, "2025-01-02T03:04:05Z"),
        (dlq.H_PRIORITY, "low"),
        (dlq.H_VALUE_ENCODING, "raw"),
        (dlq.H_MAYBE_DELIVERED, "true"),
        ("trace", b"abc"),
    ]


def test_oversized_values_are_truncated_and_say_so() -> None:
    letter = DeadLetter(
        topic="t", partition=-1, key=None, value=b"x" * 100, priority="high", reason="permanent",
        error_name="MSG_SIZE_TOO_LARGE", error_code=10, error_reason="too large", attempts=1, truncate_to=10,
    )
    value, headers = letter.payload()
    assert value == b"x" * 10
    assert (dlq.H_VALUE_TRUNCATED, "100") in headers
    assert all(name != dlq.H_ORIGINAL_KEY for name, _ in headers)  # no key, no key header
    assert all(name != dlq.H_MAYBE_DELIVERED for name, _ in headers)


def test_unserialized_objects_keep_json_keys() -> None:
    letter = DeadLetter(
        topic="t", partition=-1, key={"id": 7}, value={"amount": "NaN"}, priority="medium",
        reason="serialization", error_name="_VALUE_SERIALIZATION", error_code=-161, error_reason="bad", attempts=1,
    )
    value, headers = letter.payload()
    assert value == b'{"amount":"NaN"}'
    assert dict(headers)[dlq.H_VALUE_ENCODING] == "json"
    assert letter.key_bytes() == b'{"id":7}'


def test_header_normalization() -> None:
    assert normalize_headers(None) == []
    assert normalize_headers([("a", b"1")]) == [("a", b"1")]
    assert normalize_headers({"a": "1"}) == [("a", "1")]
