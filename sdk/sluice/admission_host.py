"""`AdmissionHost`: what an `sluice.admission.Admission` reads from its producer and asks it to do.

A protocol apart from the state machine: the producer meets it through `sluice.link.Link` (mypy
checks that where `Link` is passed), a unit test through a fake host; re-exported by
``sluice.admission``.
"""

from __future__ import annotations

from typing import Protocol

from confluent_kafka import KafkaError

from sluice.metrics import Counts
from sluice.pacing import Pacer
from sluice.retry import RetryPolicy

__all__ = ["AdmissionHost"]


class AdmissionHost(Protocol):
    """The producer state an admission reads and the bookkeeping it asks for (no I/O)."""

    @property
    def counts(self) -> Counts:
        """The producer's tallies."""

    @property
    def on_shed(self) -> str:
        """``raise`` or ``dlq``."""

    @property
    def dlq_topic(self) -> str | None:
        """Where dead letters go (None: nowhere)."""

    @property
    def retry(self) -> RetryPolicy:
        """The backoff budget."""

    @property
    def serializing(self) -> bool:
        """Serializers are configured."""

    @property
    def pacing_max_wait_s(self) -> float:
        """How long a paced message waits for a token at most."""

    def pacer(self, idx: int) -> Pacer:
        """The token bucket of priority ``idx``."""

    def closed(self) -> bool:
        """`close` was called: nothing more may be enqueued."""

    def blocked(self, topic: str, now: float) -> str | None:
        """Why ``topic`` fails closed at ``now`` (None: it does not)."""

    def throttled_until(self) -> float:
        """Monotonic time until which a broker asked us to hold back (KIP-219)."""

    def truncation(self, err: KafkaError) -> int | None:
        """How far a dead letter's value is cut for ``err``."""

    def observe_delay(self, priority: str, seconds: float) -> None:
        """Record an applied delay in the histogram."""

    def count_rejected(self, idx: int) -> None:
        """Count a message refused at produce time."""

    def block_topic(self, topic: str, err: KafkaError) -> None:
        """Fail closed on ``topic``."""

    def mark_fatal(self) -> None:
        """Recreate the underlying producer at the next opportunity."""
