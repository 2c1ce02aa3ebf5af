"""Exceptions the SDK raises to callers.

Every refusal has its own type so callers can treat them differently: an open circuit or a shed is
the operator asking producers to back off (retry later, or drop), a stale decision under
``on_stale="block"`` is a configuration choice, and a `ProduceError` is Kafka itself refusing.
When `ThrottledProducer.produce` raises, the message was *not* accepted: it will not be delivered,
dead-lettered or reported later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from confluent_kafka import KafkaError

    from sluice.classify import Route

__all__ = [
    "CircuitOpenError",
    "FatalProducerError",
    "PacedError",
    "PermanentMessageError",
    "ProduceError",
    "ProducerClosedError",
    "RetryBudgetExceededError",
    "ShedError",
    "SluiceError",
    "StaleDecisionError",
    "TopicUnavailableError",
]


class SluiceError(Exception):
    """Base class of every error the SDK raises."""


class CircuitOpenError(SluiceError):
    """A circuit breaker is open (or half-open and this message was not a probe): nothing was sent."""

    def __init__(self, circuit: str, state: str, priority: str) -> None:
        super().__init__(f"circuit {circuit!r} is {state}: {priority}-priority message rejected")
        self.circuit = circuit
        self.state = state
        self.priority = priority


class ShedError(SluiceError):
    """The decision sheds this priority: the message was dropped before reaching Kafka.

    ``paced`` is True for a shed by DrainTime pacing (``excess: shed``, no token free) rather than
    by the zone's ``shed``.
    """

    def __init__(self, priority: str, zone: str, epoch: int, *, paced: bool = False) -> None:
        why = "no pacing token" if paced else f"zone {zone}"
        super().__init__(f"{priority}-priority message shed ({why}, decision epoch {epoch})")
        self.priority = priority
        self.zone = zone
        self.epoch = epoch
        self.paced = paced


class PacedError(SluiceError):
    """DrainTime pacing: the message waited ``pacing_max_wait_s`` for a token and got none; not sent.

    The operator admits only ``admitRatio`` of this producer's offered rate of the priority; retry
    later (or drop). Counted in ``sluice_producer_messages_total{outcome="rejected_paced"}``.
    """

    def __init__(self, priority: str, waited_s: float, admit_ratio: float, epoch: int) -> None:
        super().__init__(
            f"{priority}-priority message found no pacing token in {waited_s:.2f}s "
            f"(admitRatio {admit_ratio:g}, decision epoch {epoch})"
        )
        self.priority = priority
        self.waited_s = waited_s
        self.admit_ratio = admit_ratio
        self.epoch = epoch


class StaleDecisionError(SluiceError):
    """``on_stale="block"`` and the decision (or a circuit document) is missing or expired."""

    def __init__(self, what: str, age_seconds: float | None) -> None:
        age = "never received" if age_seconds is None else f"{age_seconds:.1f}s old"
        super().__init__(f"{what} is stale ({age}); on_stale='block' refuses to produce")
        self.what = what
        self.age_seconds = age_seconds


class ProducerClosedError(SluiceError):
    """`produce` after `close`."""


class ProduceError(SluiceError):
    """Kafka (or serialization) refused the message; ``error`` is librdkafka's error when there is one."""

    def __init__(
        self,
        message: str,
        *,
        topic: str,
        route: Route,
        error: KafkaError | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.route = route
        self.error = error
        self.attempts = attempts


class RetryBudgetExceededError(ProduceError):
    """Local backpressure or a transient error outlasted the RetryPolicy; the message was not enqueued."""


class PermanentMessageError(ProduceError):
    """This message can never be produced (too large, invalid, unserializable) and no DLQ is set."""


class TopicUnavailableError(ProduceError):
    """Every message to this topic fails (unknown topic, not authorized): the SDK fails closed."""


class FatalProducerError(ProduceError):
    """librdkafka raised a fatal (idempotence) error; the SDK replaced the underlying producer."""
