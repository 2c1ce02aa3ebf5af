"""The decision document built from an evaluation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sluice.decision import parse_decision, to_json
from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.engine import build_decision, evaluate

SOURCE = {"prometheus": {"query": "sum(lag)"}}
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_spec(**fields: Any) -> BackpressurePolicySpec:
    return BackpressurePolicySpec.model_validate({"source": SOURCE, **fields})


def test_document_carries_the_outcome() -> None:
    spec = make_spec(fallback={"conservative": {"high": 11, "medium": 22, "low": 33}})
    outcome = evaluate(spec, 3000, NOW.timestamp(), None)
    doc = build_decision(outcome, namespace="shop", name="orders", now=NOW, ttl_seconds=90)
    assert doc.policy.namespace == "shop" and doc.policy.name == "orders"
    assert doc.epoch == 1 and doc.generated_at == NOW and doc.expires_at == NOW + timedelta(seconds=90)
    assert doc.source == "prometheus" and doc.enforcement == "Enforce" and doc.backlog == 3000
    assert (doc.priorities.high.zone, doc.priorities.high.delay_ms) == ("yellow", 255)
    assert doc.priorities.low.shed is True and doc.priorities.low.would_delay_ms is None
    assert (doc.fallback.high, doc.fallback.medium, doc.fallback.low) == (11, 22, 33)
    assert doc.reason == outcome.reason
    assert parse_decision(to_json(doc)) == doc
    assert build_decision(outcome, namespace="shop", name="orders", now=NOW, epoch=9).epoch == 9


def test_observe_document_has_would_fields() -> None:
    outcome = evaluate(make_spec(enforcement="Observe"), 3000, NOW.timestamp(), None)
    doc = build_decision(outcome, namespace="shop", name="orders", now=NOW)
    medium = doc.priorities.medium
    assert (medium.zone, medium.delay_ms, medium.shed, medium.would_delay_ms, medium.would_shed) == (
        "red",
        0,
        False,
        2000,
        False,
    )
    assert doc.priorities.low.would_shed is True and doc.enforcement == "Observe"
    assert '"wouldDelayMs": 2000' in to_json(doc)


def test_fallback_document() -> None:
    outcome = evaluate(make_spec(fallback={"mode": "Conservative"}), None, NOW.timestamp(), None)
    doc = build_decision(outcome, namespace="a", name="b", now=NOW)
    assert doc.source == "fallback" and doc.backlog is None
    assert doc.priorities.medium.zone == "yellow" and doc.priorities.medium.delay_ms == 500
