"""The policy memory survives a restart: evaluate, to_status, from_status, evaluate again."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from sluice_operator.api.policy import BackpressurePolicySpec, BackpressurePolicyStatus
from sluice_operator.engine import (
    PolicyMemory,
    evaluate,
    policy_from_status,
    policy_to_status,
)
from sluice_operator.engine.clock import from_rfc3339, quantize, to_rfc3339

SOURCE = {"prometheus": {"query": "sum(lag)"}}
T0 = 1_700_000_000.123457


def make_spec(**fields: Any) -> BackpressurePolicySpec:
    return BackpressurePolicySpec.model_validate({"source": SOURCE, **fields})


def through_the_api(memory: PolicyMemory) -> PolicyMemory | None:
    """What a restarted operator reads back: the status as JSON, as the API server stores it."""
    status = json.loads(json.dumps(policy_to_status(memory)))
    BackpressurePolicyStatus.model_validate(status)  # the status shape is the declared one
    return policy_from_status(status)


SCENARIOS: dict[str, tuple[dict[str, Any], list[float | None]]] = {
    "rise-and-fall": ({}, [0, 1200, 3000, 12000, 1900, 1700, None, 400, 100, 0]),
    "fallback-stale": ({"fallback": {"staleAfterSeconds": 7}}, [3000, None, None, None, 10, None]),
    "observe-smoothed": (
        {"enforcement": "Observe", "smoothing": {"alpha": 0.3, "maxRelaxRatioPerInterval": 0.2}},
        [5000, 0, 0, 800.5, None, 2000, 0],
    ),
    "force-red": ({"override": {"mode": "ForceRed", "until": "2023-11-14T22:13:30Z"}}, [0, 10, 10, 1900, 0, 0]),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_restart_continues_exactly(name: str) -> None:
    fields, backlogs = SCENARIOS[name]
    spec = make_spec(**fields)
    memory: PolicyMemory | None = None
    for i, backlog in enumerate(backlogs):
        now = T0 + 3.3 * i
        restored = through_the_api(memory) if memory is not None else None
        assert restored == memory
        original = evaluate(spec, backlog, now, memory)
        again = evaluate(spec, backlog, now, restored)
        assert again == original
        memory = original.memory


def test_status_layout() -> None:
    outcome = evaluate(make_spec(), 3000, T0, None)
    status = policy_to_status(outcome.memory)
    assert status["priorities"]["medium"] == {
        "zone": "red",
        "delayMs": 2000,
        "shed": False,
        "ratio": pytest.approx(1 / 3),
        "since": "2023-11-14T22:13:20.123457Z",
    }
    assert status["epoch"] == 1 and status["source"] == "prometheus" and status["backlog"] == 3000
    assert status["lastGoodAt"] == status["lastEvaluated"] == "2023-11-14T22:13:20.123457Z"


def test_never_evaluated_status_is_no_memory() -> None:
    assert policy_from_status(None) is None
    assert policy_from_status({}) is None
    assert policy_from_status({"conditions": [{"type": "Valid", "status": "True"}]}) is None


def test_status_with_epoch_but_no_priorities_keeps_the_epoch() -> None:
    memory = policy_from_status({"epoch": 7})
    assert memory is not None and memory.epoch == 7
    assert evaluate(make_spec(), 0, T0, memory).epoch == 8  # nothing published since the restart yet


def test_times_round_trip_exactly() -> None:
    for t in (0.0, 1.5, T0, 1_999_999_999.999999, quantize(1_712_345_678.1234567)):
        assert from_rfc3339(to_rfc3339(t)) == t
    assert from_rfc3339("2024-05-01T12:00:00Z") == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
