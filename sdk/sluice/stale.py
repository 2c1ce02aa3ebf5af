"""Staleness judged by the producer's own monotonic clock.

Nodes' wall clocks disagree; a producer whose clock runs ahead must not see a fresh decision as
expired. So the SDK never compares ``expiresAt`` with its own wall clock. It notes *when it
received* a document (``time.monotonic()``) and how long the operator meant it to live
(``expiresAt - generatedAt``: both stamped by the operator's clock, so their difference is
skew-free), capped at `MAX_TTL_SECONDS`. A document is stale once it has been held longer than that
without a newer one arriving. Re-reading an unchanged file does not refresh it: only a document that
differs (the operator re-stamps it on every refresh) counts as newly received.

One exception uses the wall clock: a document whose ``expiresAt`` lies more than ``max_clock_skew``
(default `DEFAULT_MAX_CLOCK_SKEW_S`) in the producer's past *when it arrives* is stale on arrival. No
plausible skew explains that; the operator stopped talking long ago, and a pod started since must
not enforce its last word (a shed, an open circuit) for a full TTL while calling it fresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sluice.decision import DEFAULT_TTL_SECONDS, CircuitState, Decision, utcnow

__all__ = ["DEFAULT_MAX_CLOCK_SKEW_S", "MAX_TTL_SECONDS", "Tracked", "expired_on_arrival", "operator_ttl", "track"]

#: The operator accepts output.ttlSeconds up to a day; nothing the SDK holds lives longer.
MAX_TTL_SECONDS = 86400.0
#: Wall-clock disagreement between the operator's node and the producer's that is still plausible.
DEFAULT_MAX_CLOCK_SKEW_S = 120.0

D = TypeVar("D", Decision, CircuitState)


@dataclass(frozen=True, slots=True)
class Tracked(Generic[D]):
    """A document with the monotonic time it arrived and how long it may be trusted from then."""

    doc: D
    received_at: float
    ttl: float
    origin: str
    #: The wall clock said it had expired more than ``max_clock_skew`` ago when it arrived.
    expired: bool = False

    @property
    def fresh_until(self) -> float:
        """Monotonic time after which the document is stale."""
        return self.received_at + self.ttl

    def age(self, now: float) -> float:
        """Seconds since the document arrived."""
        return now - self.received_at

    def is_fresh(self, now: float) -> bool:
        """True while ``now - received_at <= ttl`` (never for a document that arrived expired)."""
        return not self.expired and now - self.received_at <= self.ttl


def operator_ttl(doc: Decision | CircuitState, max_ttl: float = MAX_TTL_SECONDS) -> float:
    """``expiresAt - generatedAt`` in seconds, within ``[0, max_ttl]``.

    A document without ``generatedAt`` (circuit documents may omit it) gets the default TTL.
    """
    generated = doc.generated_at
    ttl = DEFAULT_TTL_SECONDS if generated is None else (doc.expires_at - generated).total_seconds()
    return min(max(ttl, 0.0), max_ttl)


def expired_on_arrival(doc: Decision | CircuitState, wall_now: datetime, max_clock_skew: float) -> bool:
    """True when ``expiresAt`` is more than ``max_clock_skew`` seconds before ``wall_now``."""
    return (wall_now - doc.expires_at).total_seconds() > max_clock_skew


def track(
    doc: D,
    previous: Tracked[D] | None,
    now: float,
    origin: str,
    max_ttl: float = MAX_TTL_SECONDS,
    *,
    max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW_S,
    wall_now: datetime | None = None,
) -> Tracked[D]:
    """Wrap a freshly read document; an unchanged re-read keeps its original receipt time."""
    if previous is not None and previous.doc == doc:
        return previous
    expired = expired_on_arrival(doc, wall_now or utcnow(), max_clock_skew)
    return Tracked(doc=doc, received_at=now, ttl=operator_ttl(doc, max_ttl), origin=origin, expired=expired)
