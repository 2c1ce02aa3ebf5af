"""The decision document of one evaluation (``decision.json``), built from an `Outcome`.

Pure: the caller passes the clock and the TTL. ``fallback`` carries ``spec.fallback.conservative``
(the delays a producer applies once the document goes stale); ``backlog`` is the raw reading.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sluice.decision import (
    DEFAULT_TTL_SECONDS,
    CircuitState,
    Decision,
    Excess,
    FallbackDelays,
    PolicyRef,
    Priorities,
    PriorityDecision,
    Zone,
    expiry,
)
from sluice_operator.engine.evaluate import Outcome, PriorityOutcome

__all__ = ["REFRESH_FRACTION", "build_decision"]

#: Republish a document once this share of its lifetime (`ttlSeconds`) has passed, unchanged or not, so
#: producers never see it expire while the operator is healthy.
REFRESH_FRACTION = 1 / 3


#: How many distinct parts each memo below keeps (about one per policy for PolicyRef; the others repeat
#: across policies: zones, delays and shares take few distinct values).
PART_MEMO_SIZE = 65_536


# Decision parts are immutable (frozen models), so equal parts are built once and shared: a steady
# cycle then builds one model, not seven, and leaves less for the garbage collector.

@functools.lru_cache(maxsize=PART_MEMO_SIZE)
def _priority(zone: Zone, delay_ms: int, shed: bool, would_delay_ms: int | None, would_shed: bool | None,
              admit_ratio: float | None, excess: Excess | None, would_admit_ratio: float | None) -> PriorityDecision:
    return PriorityDecision(zone=zone, delay_ms=delay_ms, shed=shed, would_delay_ms=would_delay_ms,
                            would_shed=would_shed, admit_ratio=admit_ratio, excess=excess,
                            would_admit_ratio=would_admit_ratio)


def _fields(po: PriorityOutcome) -> tuple[Any, ...]:
    return (po.zone, po.delay_ms, po.shed, po.would_delay_ms, po.would_shed, po.admit_ratio, po.excess,
            po.would_admit_ratio)


@functools.lru_cache(maxsize=PART_MEMO_SIZE)
def _priorities(high: tuple[Any, ...], medium: tuple[Any, ...], low: tuple[Any, ...]) -> Priorities:
    return Priorities(high=_priority(*high), medium=_priority(*medium), low=_priority(*low))


@functools.lru_cache(maxsize=PART_MEMO_SIZE)
def _fallback(high: int, medium: int, low: int) -> FallbackDelays:
    return FallbackDelays(high=high, medium=medium, low=low)


@functools.lru_cache(maxsize=PART_MEMO_SIZE)
def _policy_ref(namespace: str, name: str) -> PolicyRef:
    return PolicyRef(namespace=namespace, name=name)


def build_decision(
    outcome: Outcome,
    *,
    namespace: str,
    name: str,
    now: datetime,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
    epoch: int | None = None,
    circuit: CircuitState | None = None,
) -> Decision:
    """The document for `outcome`; `now` must be timezone-aware, `epoch` defaults to the outcome's."""
    high, medium, low = outcome.priorities
    return Decision(
        policy=_policy_ref(namespace, name),
        epoch=outcome.epoch if epoch is None else epoch,
        generated_at=now,
        expires_at=expiry(now, ttl_seconds),
        backlog=outcome.backlog,
        source=outcome.source,
        enforcement=outcome.enforcement,
        priorities=_priorities(_fields(high), _fields(medium), _fields(low)),
        fallback=_fallback(*outcome.fallback_delays),
        circuit=circuit,
        reason=outcome.reason,
    )
