"""The decision document of one evaluation (``decision.json``), built from an `Outcome`.

Pure: the caller passes the clock and the TTL. ``fallback`` carries ``spec.fallback.conservative``
(the delays a producer applies once the document goes stale); ``backlog`` is the raw reading.
"""

from __future__ import annotations

from datetime import datetime

from sluice.decision import (
    DEFAULT_TTL_SECONDS,
    CircuitState,
    Decision,
    FallbackDelays,
    PolicyRef,
    Priorities,
    PriorityDecision,
    expiry,
)
from sluice_operator.engine.evaluate import Outcome, PriorityOutcome

__all__ = ["REFRESH_FRACTION", "build_decision"]

#: Republish a document once this share of its lifetime (`ttlSeconds`) has passed, unchanged or not, so
#: producers never see it expire while the operator is healthy.
REFRESH_FRACTION = 1 / 3


def _priority(po: PriorityOutcome) -> PriorityDecision:
    return PriorityDecision(
        zone=po.zone,
        delay_ms=po.delay_ms,
        shed=po.shed,
        would_delay_ms=po.would_delay_ms,
        would_shed=po.would_shed,
        admit_ratio=po.admit_ratio,
        excess=po.excess,
        would_admit_ratio=po.would_admit_ratio,
    )


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
    fb_high, fb_medium, fb_low = outcome.fallback_delays
    return Decision(
        policy=PolicyRef(namespace=namespace, name=name),
        epoch=outcome.epoch if epoch is None else epoch,
        generated_at=now,
        expires_at=expiry(now, ttl_seconds),
        backlog=outcome.backlog,
        source=outcome.source,
        enforcement=outcome.enforcement,
        priorities=Priorities(high=_priority(high), medium=_priority(medium), low=_priority(low)),
        fallback=FallbackDelays(high=fb_high, medium=fb_medium, low=fb_low),
        circuit=circuit,
        reason=outcome.reason,
    )
