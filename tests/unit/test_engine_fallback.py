"""Fallback modes, Observe, overrides, smoothing, and when the epoch moves."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.engine import Outcome, PolicyMemory, evaluate

SOURCE = {"prometheus": {"query": "sum(lag)"}}
T0 = 1_700_000_000.0


def make_spec(**fields: Any) -> BackpressurePolicySpec:
    """A spec with the backlog EWMA off (alpha 1), so each step's zone follows its backlog exactly."""
    return BackpressurePolicySpec.model_validate({"source": SOURCE, "smoothing": {"alpha": 1}, **fields})


def published(outcome: Outcome) -> dict[str, tuple[str, int, bool]]:
    return {p.priority: (p.zone, p.delay_ms, p.shed) for p in outcome.priorities}


AT_3000 = {"high": ("yellow", 255, False), "medium": ("red", 2000, False), "low": ("red", 7500, True)}
CONSERVATIVE = {"high": ("yellow", 100, False), "medium": ("yellow", 500, False), "low": ("yellow", 1000, False)}
ALL_GREEN = {"high": ("green", 0, False), "medium": ("green", 0, False), "low": ("green", 0, False)}


def good_then(spec: BackpressurePolicySpec, backlog: float = 3000) -> PolicyMemory:
    return evaluate(spec, backlog, T0, None).memory


def test_last_known_keeps_the_decision_until_stale_then_conservative() -> None:
    spec = make_spec()  # LastKnown, staleAfterSeconds 60
    memory = good_then(spec)
    kept = evaluate(spec, None, T0 + 10, memory)
    assert published(kept) == AT_3000
    assert kept.source == "fallback" and kept.fallback_engaged and kept.signal_lost
    assert "keeping the last decision" in kept.reason
    assert kept.changed and kept.epoch == 2  # the source changed
    still = evaluate(spec, None, T0 + 59.999, kept.memory)
    assert published(still) == AT_3000 and not still.changed and still.epoch == 2
    stale = evaluate(spec, None, T0 + 60, still.memory)
    assert published(stale) == CONSERVATIVE and stale.source == "fallback" and stale.epoch == 3
    assert "staleAfterSeconds 60" in stale.reason
    assert stale.memory.last_good_at == T0


def test_last_known_without_any_good_reading_is_conservative() -> None:
    outcome = evaluate(make_spec(), None, T0, None)
    assert published(outcome) == CONSERVATIVE and "no good reading" in outcome.reason


def test_custom_stale_after_and_conservative_delays() -> None:
    spec = make_spec(fallback={"staleAfterSeconds": 5, "conservative": {"high": 1, "medium": 2, "low": 3}})
    memory = good_then(spec)
    assert published(evaluate(spec, None, T0 + 4.9, memory)) == AT_3000
    got = published(evaluate(spec, None, T0 + 5, memory))
    assert got == {"high": ("yellow", 1, False), "medium": ("yellow", 2, False), "low": ("yellow", 3, False)}


def test_conservative_mode_applies_at_once() -> None:
    spec = make_spec(fallback={"mode": "Conservative"})
    outcome = evaluate(spec, None, T0 + 1, good_then(spec))
    assert published(outcome) == CONSERVATIVE and outcome.source == "fallback"


def test_permissive_mode_means_no_delay() -> None:
    spec = make_spec(fallback={"mode": "Permissive"})
    outcome = evaluate(spec, None, T0 + 1, good_then(spec))
    assert published(outcome) == ALL_GREEN and outcome.source == "fallback"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_backlog_is_unavailable(bad: float) -> None:
    outcome = evaluate(make_spec(fallback={"mode": "Permissive"}), bad, T0, None)
    assert outcome.signal_lost and outcome.backlog is None and published(outcome) == ALL_GREEN


def test_negative_backlog_counts_as_zero() -> None:
    outcome = evaluate(make_spec(), -5, T0, None)
    assert outcome.backlog == 0 and published(outcome) == ALL_GREEN and not outcome.signal_lost


def test_signal_return_continues_with_hysteresis() -> None:
    spec = make_spec(fallback={"mode": "Conservative"})
    # at 3000 high was already yellow (since T0); medium and low were red and enter yellow at T0+100
    memory = evaluate(spec, None, T0 + 100, good_then(spec)).memory
    assert memory.get("high").since == T0 and memory.get("medium").since == T0 + 100
    back = evaluate(spec, 0, T0 + 110, memory)
    assert back.source == "prometheus"
    assert [p.zone for p in back.priorities] == ["green", "yellow", "yellow"]  # dwell of medium/low not over
    assert evaluate(spec, 0, T0 + 130, back.memory).get("medium").zone == "green"


def test_observe_publishes_no_delay_and_says_what_it_would_do() -> None:
    spec = make_spec(enforcement="Observe")
    outcome = evaluate(spec, 3000, T0, None)
    for p in outcome.priorities:
        zone, delay, shed = AT_3000[p.priority]
        assert (p.zone, p.delay_ms, p.shed, p.would_delay_ms, p.would_shed) == (zone, 0, False, delay, shed)
    assert outcome.enforcement == "Observe" and "Observe" in outcome.reason
    assert outcome.memory.get("low").delay_ms == 7500  # the memory keeps what Enforce would do
    enforce = evaluate(make_spec(), 3000, T0, None)
    assert all(p.would_delay_ms is None and p.would_shed is None for p in enforce.priorities)


def test_observe_applies_to_fallback_too() -> None:
    spec = make_spec(enforcement="Observe", fallback={"mode": "Conservative"})
    outcome = evaluate(spec, None, T0, None)
    assert [(p.delay_ms, p.would_delay_ms) for p in outcome.priorities] == [(0, 100), (0, 500), (0, 1000)]


def until(seconds_from_t0: float) -> str:
    return datetime.fromtimestamp(T0 + seconds_from_t0, UTC).isoformat()


def test_override_disable_is_all_green() -> None:
    spec = make_spec(override={"mode": "Disable", "until": until(60), "reason": "incident 7"})
    outcome = evaluate(spec, 12000, T0, None)
    assert published(outcome) == ALL_GREEN and outcome.source == "override"
    assert outcome.reason.startswith("override Disable until ") and outcome.reason.endswith(": incident 7")


def test_override_force_red_is_red_at_ratio_one() -> None:
    spec = make_spec(override={"mode": "ForceRed"})
    outcome = evaluate(spec, 0, T0, None)
    expected = {"high": ("red", 2500, False), "medium": ("red", 5000, False), "low": ("red", 7500, True)}
    assert published(outcome) == expected
    assert {p.ratio for p in outcome.priorities} == {1.0} and outcome.source == "override"


def test_override_wins_over_fallback_and_signal_loss_is_still_reported() -> None:
    outcome = evaluate(make_spec(override={"mode": "ForceRed"}), None, T0, None)
    assert outcome.source == "override" and outcome.signal_lost and not outcome.fallback_engaged


def test_expired_override_is_ignored() -> None:
    spec = make_spec(override={"mode": "ForceRed", "until": until(0)})
    assert evaluate(spec, 3000, T0 - 0.001, None).source == "override"
    outcome = evaluate(spec, 3000, T0, None)  # until is exclusive
    assert outcome.source == "prometheus" and published(outcome) == AT_3000


def test_naive_until_is_utc() -> None:
    naive = datetime.fromtimestamp(T0 + 10, UTC).replace(tzinfo=None).isoformat()
    spec = make_spec(override={"mode": "Disable", "until": naive})
    assert evaluate(spec, 3000, T0 + 9, None).source == "override"
    assert evaluate(spec, 3000, T0 + 10, None).source == "prometheus"


def test_after_force_red_priorities_leave_red_through_hysteresis() -> None:
    spec = make_spec(override={"mode": "ForceRed", "until": until(100)})
    memory = evaluate(spec, 0, T0, None).memory
    after = evaluate(spec, 1900, T0 + 100, memory)
    assert after.source == "prometheus"
    assert after.get("medium").zone == "red"  # 1900 > 2000 * 0.9: the margin holds
    assert after.get("high").zone == "yellow" and after.get("low").zone == "red"


def test_epoch_moves_only_when_published_content_changes() -> None:
    spec = make_spec()
    a = evaluate(spec, 10, T0, None)
    assert a.epoch == 1 and a.changed
    b = evaluate(spec, 20, T0 + 5, a.memory)  # still all green, no delay: same content
    assert b.epoch == 1 and not b.changed and b.backlog == 20
    c = evaluate(spec, 20, T0 + 10, b.memory)
    assert c.epoch == 1
    d = evaluate(spec, 150, T0 + 15, c.memory)  # low turns yellow
    assert d.epoch == 2 and d.changed
    e = evaluate(spec, 160, T0 + 20, d.memory)  # low's delay changes
    assert e.epoch == 3
    f = evaluate(make_spec(enforcement="Observe"), 160, T0 + 25, e.memory)  # enforcement changes
    assert f.epoch == 4
    g = evaluate(make_spec(enforcement="Observe"), 160, T0 + 30, f.memory)
    assert g.epoch == 4


def test_ewma_smoothing() -> None:
    spec = make_spec(smoothing={"alpha": 0.5})
    a = evaluate(spec, 0, T0, None)
    b = evaluate(spec, 4000, T0 + 5, a.memory)
    assert b.smoothed_backlog == 2000 and b.backlog == 4000
    assert b.get("medium").zone == "yellow"  # decided on 2000, not 4000
    c = evaluate(spec, None, T0 + 10, b.memory)
    assert c.smoothed_backlog == 2000  # an unavailable reading does not move the average
    d = evaluate(spec, 4000, T0 + 15, c.memory)
    assert d.smoothed_backlog == 3000 and "smoothed 3000" in d.reason


def test_relax_cap_limits_how_fast_delays_fall() -> None:
    spec = make_spec(
        smoothing={"alpha": 1, "maxRelaxRatioPerInterval": 0.5}, hysteresis={"margin": 0, "minDwellSeconds": 0}
    )
    memory = evaluate(spec, 12000, T0, None).memory
    delays = []
    for i in range(1, 16):
        outcome = evaluate(spec, 0, T0 + i, memory)
        memory = outcome.memory
        delays.append(outcome.get("medium").delay_ms)
    assert delays[:5] == [2500, 1250, 625, 312, 156]
    assert delays[-1] == 0 and outcome.get("medium").zone == "green"
    # rising is never capped
    assert evaluate(spec, 12000, T0 + 20, memory).get("medium").delay_ms == 5000
