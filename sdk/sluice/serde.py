"""Serialization on the produce path: any confluent-kafka ``Serializer`` (Schema Registry ones included).

Serializers are called with a ``SerializationContext`` like ``SerializingProducer`` does, so Avro,
JSON Schema and Protobuf serializers find their subject. A failure is wrapped with the field it
concerns, so the producer can tell a registry outage (transient: retry with backoff) from data the
schema rejects (permanent: dead-letter or raise, never retried).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError
from confluent_kafka.serialization import MessageField, SerializationContext

__all__ = ["SerializationFailure", "Serializer", "serialize"]

Serializer = Callable[..., Any]


class SerializationFailure(Exception):
    """A serializer raised; ``field`` is ``"key"`` or ``"value"``, ``cause`` the original exception."""

    def __init__(self, field: str, cause: BaseException) -> None:
        super().__init__(f"{field} serialization failed: {cause}")
        self.field = field
        self.cause = cause

    @property
    def code(self) -> int:
        """librdkafka's matching error code (``_KEY_SERIALIZATION`` / ``_VALUE_SERIALIZATION``)."""
        return KafkaError._KEY_SERIALIZATION if self.field == "key" else KafkaError._VALUE_SERIALIZATION

    def kafka_error(self) -> KafkaError:
        """The failure as a KafkaError (what on_delivery and the DLQ headers carry)."""
        return KafkaError(self.code, f"{type(self.cause).__name__}: {self.cause}")


def serialize(
    topic: str,
    key: Any,
    value: Any,
    headers: Any,
    key_serializer: Serializer | None,
    value_serializer: Serializer | None,
) -> tuple[Any, Any]:
    """Key and value as bytes; raises `SerializationFailure`."""
    if key_serializer is not None:
        try:
            key = key_serializer(key, SerializationContext(topic, MessageField.KEY, headers))
        except Exception as exc:
            raise SerializationFailure("key", exc) from exc
    if value_serializer is not None:
        try:
            value = value_serializer(value, SerializationContext(topic, MessageField.VALUE, headers))
        except Exception as exc:
            raise SerializationFailure("value", exc) from exc
    return key, value
