"""The documented error table: every route, the fallbacks, Schema Registry errors, and the README copy."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import SerializationError

from sluice.classify import (
    ERROR_TABLE,
    Route,
    classify_delivery,
    classify_error,
    classify_exception,
    classify_serialization,
    markdown_table,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"


@pytest.mark.parametrize(
    ("code", "route"),
    [
        (KafkaError._QUEUE_FULL, Route.BACKPRESSURE),
        (KafkaError._MSG_TIMED_OUT, Route.TIMED_OUT),
        (KafkaError._TRANSPORT, Route.TRANSIENT),
        (KafkaError.NOT_ENOUGH_REPLICAS, Route.TRANSIENT),
        (KafkaError.MSG_SIZE_TOO_LARGE, Route.PERMANENT_MESSAGE),
        (KafkaError.INVALID_RECORD, Route.PERMANENT_MESSAGE),
        (KafkaError.INVALID_MSG, Route.PERMANENT_MESSAGE),  # CORRUPT_MESSAGE
        (KafkaError._VALUE_SERIALIZATION, Route.PERMANENT_MESSAGE),
        (KafkaError.UNKNOWN_TOPIC_OR_PART, Route.PERMANENT_ALL),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, Route.PERMANENT_ALL),
        (KafkaError._FATAL, Route.FATAL),
        (KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, Route.FATAL),
        (KafkaError._PURGE_QUEUE, Route.ABORTED),
    ],
)
def test_the_table_routes_each_documented_code(code: int, route: Route) -> None:
    assert classify_error(KafkaError(code)) is route


def test_the_table_beats_retriable() -> None:
    # CORRUPT_MESSAGE is retriable in the protocol, but librdkafka already retried it.
    assert classify_error(KafkaError(KafkaError.INVALID_MSG, retriable=True)) is Route.PERMANENT_MESSAGE
    # A timed-out message is "retriable", yet re-sending may duplicate: the table says so.
    assert classify_error(KafkaError(KafkaError._MSG_TIMED_OUT, retriable=True)) is Route.TIMED_OUT


def test_fatal_flag_wins_over_the_table() -> None:
    assert classify_error(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, fatal=True)) is Route.FATAL


def test_codes_outside_the_table_fall_back_to_retriable() -> None:
    unknown = KafkaError.OFFSET_OUT_OF_RANGE
    assert unknown not in ERROR_TABLE
    assert classify_error(KafkaError(unknown, retriable=True)) is Route.TRANSIENT
    assert classify_error(KafkaError(unknown)) is Route.PERMANENT_MESSAGE


def test_a_transient_error_in_a_delivery_report_is_an_unknown_outcome() -> None:
    # librdkafka reports it only after its own retries ran out: never re-send blindly.
    assert classify_delivery(KafkaError(KafkaError.NOT_ENOUGH_REPLICAS)) is Route.TIMED_OUT
    assert classify_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)) is Route.PERMANENT_MESSAGE


def test_exceptions_from_produce() -> None:
    assert classify_exception(BufferError("Local: Queue full"))[0] is Route.BACKPRESSURE
    err = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    assert classify_exception(KafkaException(err)) == (Route.PERMANENT_MESSAGE, err)


def _wrapped(cause: BaseException) -> SerializationError:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise SerializationError("serializer failed") from inner
    except SerializationError as outer:
        return outer


@pytest.mark.parametrize(
    ("exc", "route"),
    [
        (SchemaRegistryError(503, 50003, "unavailable"), Route.TRANSIENT),
        (SchemaRegistryError(429, 42900, "slow down"), Route.TRANSIENT),
        (SchemaRegistryError(-1, -1, "unknown"), Route.TRANSIENT),
        (SchemaRegistryError(409, 409, "incompatible schema"), Route.PERMANENT_MESSAGE),
        (SchemaRegistryError(404, 40401, "subject not found"), Route.PERMANENT_MESSAGE),
        (httpx.ConnectError("connection refused"), Route.TRANSIENT),
        (httpx.ReadTimeout("timed out"), Route.TRANSIENT),
        (ConnectionRefusedError(111, "refused"), Route.TRANSIENT),
        (ValueError("not a valid record"), Route.PERMANENT_MESSAGE),
        (TypeError("int expected"), Route.PERMANENT_MESSAGE),
    ],
)
def test_serialization_errors(exc: BaseException, route: Route) -> None:
    assert classify_serialization(exc) is route
    assert classify_serialization(_wrapped(exc)) is route


def test_every_row_is_a_real_code_and_in_the_generated_table() -> None:
    table = markdown_table()
    for code, row in ERROR_TABLE.items():
        assert getattr(KafkaError, row.name) == code
        assert f"| `{row.name}` | {code} | {row.route.value} |" in table


def test_docs_carry_the_generated_table() -> None:
    """docs/sdk.md must not drift from the table the code uses (regenerate with python -m sluice.classify)."""
    assert markdown_table() in DOCS.read_text()
