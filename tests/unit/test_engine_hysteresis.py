"""Hysteresis: immediate upward moves, downward only past the margin and after the dwell."""

from __future__ import annotations

from typing import Any

import pytest

from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.engine import Outcome, PolicyMemory, compile_policy, evaluate, seed
from sluice_operator.engine.zones import plain

SOURCE = {"prometheus": {"query": "sum(lag)"}}
T0 = 1_700_000_000.0


def make_spec(**fields: Any) -> BackpressurePolicySpec:
    """A spec with the backlog EWMA off (alpha 1), so each step's zone follows its backlog exactly."""
    return BackpressurePolicySpec.model_validate({"source": SOURCE, "smoothing": {"alpha": 1}, **fields})


DEFAULT = make_spec()  # medium: 500/2000/5000, margin 0.1, dwell 30 s


def zones(outcome: Outcome) -> dict[str, str]:
    return {p.priority: p.zone for p in outcome.priorities}


def run(
    spec: BackpressurePolicySpec, steps: list[tuple[float, float]], memory: PolicyMemory | None = None
) -> list[Outcome]:
    out = []
    for t, backlog in steps:
        outcome = evaluate(spec, backlog, T0 + t, memory)
        memory = outcome.memory
        out.append(outcome)
    return out


def test_rise_is_immediate_through_yellow_and_red() -> None:
    a, b, c = run(DEFAULT, [(0, 0), (1, 1000), (2, 3000)])
    assert a.get("medium").zone == "green"
    assert b.get("medium").zone == "yellow"
    assert b.zone_changes == (("medium", "green", "yellow"), ("low", "green", "red"))
    assert c.get("medium").zone == "red" and ("medium", "yellow", "red") in c.zone_changes
    assert c.memory.get("medium").since == T0 + 2


def test_upward_move_ignores_dwell() -> None:
    a, b = run(DEFAULT, [(0, 1000), (0.5, 2001)])
    assert a.get("medium").zone == "yellow" and b.get("medium").zone == "red"


def test_red_is_held_by_margin_then_left_at_or_below_it() -> None:
    # medium red since T0; yellow * (1 - 0.1) = 1800
    outs = run(DEFAULT, [(0, 3000), (60, 1900), (61, 1800.0001), (62, 1800)])
    held = outs[1].get("medium")
    assert (held.zone, held.ratio, held.delay_ms) == ("red", 0.0, 500)  # bottom of red while held
    assert "medium held in red" in outs[1].reason and "1800" in outs[1].reason
    assert outs[2].get("medium").zone == "red"
    left = outs[3].get("medium")
    assert (left.zone, left.delay_ms) == ("yellow", plain_delay("medium", 1800))
    assert ("medium", "red", "yellow") in outs[3].zone_changes


def plain_delay(priority: str, backlog: float) -> int:
    return plain(compile_policy(DEFAULT).priorities[["high", "medium", "low"].index(priority)], backlog)[2]


def test_min_dwell_holds_even_below_the_margin() -> None:
    outs = run(DEFAULT, [(0, 3000), (10, 100), (29.999, 100), (30, 100)])
    assert [o.get("medium").zone for o in outs] == ["red", "red", "red", "green"]
    assert "after 20s more dwell" in outs[1].reason
    # red -> green at once: the backlog also satisfies yellow's exit (500 * 0.9 = 450)
    assert ("medium", "red", "green") in outs[3].zone_changes


def test_leaving_red_into_the_yellow_margin_band_stops_in_yellow() -> None:
    # 460 is <= green (500) but above green * 0.9 = 450: leave red, but only to yellow
    outs = run(DEFAULT, [(0, 3000), (40, 460), (200, 460), (201, 450)])
    assert [o.get("medium").zone for o in outs] == ["red", "yellow", "yellow", "green"]
    assert outs[1].get("medium").ratio == 0.0 and outs[1].get("medium").delay_ms == 10  # clamped at yellow bottom


def test_yellow_dwell_counts_from_entering_yellow() -> None:
    outs = run(DEFAULT, [(0, 3000), (40, 1000), (50, 100), (69.9, 100), (70, 100)])
    assert [o.get("medium").zone for o in outs] == ["red", "yellow", "yellow", "yellow", "green"]


def test_margin_and_dwell_zero_reproduce_the_plain_zones() -> None:
    spec = make_spec(hysteresis={"margin": 0, "minDwellSeconds": 0})
    backlogs = [0, 3000, 2000, 2000.5, 500, 500.5, 12000, 100, 5000, 1999, 0]
    outs = run(spec, [(i, b) for i, b in enumerate(backlogs)])
    params = compile_policy(spec)
    for backlog, outcome in zip(backlogs, outs, strict=True):
        for pp, po in zip(params.priorities, outcome.priorities, strict=True):
            zone, ratio, delay, shed = plain(pp, backlog)
            assert (po.zone, po.ratio, po.delay_ms, po.shed) == (zone, ratio, delay, shed)


def test_custom_margin_and_dwell() -> None:
    spec = make_spec(hysteresis={"margin": 0.5, "minDwellSeconds": 5})
    outs = run(spec, [(0, 3000), (5, 1001), (6, 1000)])  # exit red at 2000 * 0.5 = 1000
    assert [o.get("medium").zone for o in outs] == ["red", "red", "yellow"]


@pytest.mark.parametrize("previous", ["yellow", "red"])
def test_seeded_memory_long_ago_applies_only_the_margin(previous: str) -> None:
    memory = seed({"medium": previous})  # type: ignore[dict-item]
    assert evaluate(DEFAULT, 1900 if previous == "red" else 460, T0, memory).get("medium").zone == previous
    assert evaluate(DEFAULT, 1800 if previous == "red" else 450, T0, memory).get("medium").zone != previous


def test_seeded_memory_just_entered_holds_for_the_dwell() -> None:
    memory = seed({"medium": "red"}, since=T0)
    assert evaluate(DEFAULT, 0, T0 + 29, memory).get("medium").zone == "red"
    assert evaluate(DEFAULT, 0, T0 + 30, memory).get("medium").zone == "green"
