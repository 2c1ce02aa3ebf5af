"""The producer's health report: is it safe to route traffic through this producer right now?

Kept apart from the producer so a readiness probe, a log line and a test all read the same dict.
Healthy means: the circuit is not open, the decision is fresh, and the recent error rate is under
the threshold (and the producer is not closed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sluice.plan import PlanSet
from sluice.sources.base import SourceView

__all__ = ["health_report"]


def health_report(
    view: SourceView,
    planset: PlanSet,
    *,
    in_flight: int,
    error_rate: float,
    error_rate_threshold: float,
    blocked_topics: Iterable[str],
    recreated: int,
    closed: bool,
) -> dict[str, Any]:
    """The dict `ThrottledProducer.health` returns."""
    decision = view.decision
    healthy = (
        planset.circuit_state != "open"
        and planset.decision_status == "fresh"
        and error_rate <= error_rate_threshold
        and not closed
    )
    return {
        "healthy": healthy,
        "decision": {
            "source": view.description,
            "connected": view.connected,
            "status": planset.decision_status,
            "age_seconds": planset.decision_age,
            "ttl_seconds": decision.ttl if decision is not None else None,
            "epoch": planset.epoch,
            "enforcement": planset.enforcement,
            "stale": list(planset.stale),
            "errors": view.errors,
            "last_error": view.last_error,
        },
        "circuit": {"state": planset.circuit_state, "names": sorted(set(planset.circuit_names))},
        "in_flight": in_flight,
        "error_rate": error_rate,
        "error_rate_threshold": error_rate_threshold,
        "blocked_topics": sorted(blocked_topics),
        "producer_recreated": recreated,
        "closed": closed,
    }
