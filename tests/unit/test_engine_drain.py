"""DrainTime control: the allocation's properties, the rate loop, and its place in `evaluate`."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.decision import parse_decision, to_json
from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.engine import Rates, build_decision, evaluate, policy_from_status, policy_to_status
from sluice_operator.engine.drain import (
    INITIAL_CONTROL,
    MAX_CORRECTION,
    DrainParams,
    admit_ratios,
    allocate,
    control,
)

T0 = 1_700_000_000.0
rates_st = st.floats(0, 1e6, allow_nan=False)
shares = st.floats(0, 1, allow_nan=False)


@st.composite
def floors_st(draw: st.DrawFn) -> tuple[float, float, float]:
    a, b, c = draw(shares), draw(shares), draw(shares)
    total = a + b + c
    if total > 1:
        a, b, c = a / total, b / total, c / total
    return (a, b, c)


def spec(**control: Any) -> BackpressurePolicySpec:
    return BackpressurePolicySpec.model_validate(
        {"source": {"prometheus": {"query": "sum(lag)"}},
         "control": {"mode": "DrainTime", "drainSeconds": 60, **control}}
    )


PARAMS = DrainParams(
    target_lag=500, drain_seconds=60, integral_seconds=300, rate_smoothing=1.0, deadband=0.0,
    floors=(0.0, 0.0, 0.0), excess=("wait", "wait", "shed"),
)


# -- the allocation ------------------------------------------------------------------------------------


@given(total=rates_st, offered=st.tuples(rates_st, rates_st, rates_st), floors=floors_st())
@settings(max_examples=500)
def test_allocation_never_exceeds_the_allowed_rate_nor_any_offer(
    total: float, offered: tuple[float, float, float], floors: tuple[float, float, float]
) -> None:
    given_ = allocate(total, offered, floors)
    assert sum(given_) <= total * (1 + 1e-9) + 1e-9
    for g, o in zip(given_, offered, strict=True):
        assert 0.0 <= g <= o * (1 + 1e-12) + 1e-12
    # nothing is left unused while someone still wants more
    assert math.isclose(sum(given_), min(total, sum(offered)), rel_tol=1e-9, abs_tol=1e-6)


@given(total=rates_st, offered=st.tuples(rates_st, rates_st, rates_st), floors=floors_st())
@settings(max_examples=500)
def test_allocation_is_strict_priority_above_the_floors(
    total: float, offered: tuple[float, float, float], floors: tuple[float, float, float]
) -> None:
    given_ = allocate(total, offered, floors)
    for i in range(3):
        floor = min(offered[i], floors[i] * total)
        assert given_[i] >= floor * (1 - 1e-9) - 1e-9  # a floor is always honoured
        if given_[i] < offered[i] * (1 - 1e-9) - 1e-6:  # priority i is throttled ...
            for j in range(i + 1, 3):  # ... so every lower one gets no more than its floor
                assert given_[j] <= min(offered[j], floors[j] * total) * (1 + 1e-9) + 1e-6


@given(total=rates_st, offered=st.tuples(rates_st, rates_st, rates_st), floors=floors_st())
def test_admit_ratios_stay_in_zero_one(
    total: float, offered: tuple[float, float, float], floors: tuple[float, float, float]
) -> None:
    for r in admit_ratios(allocate(total, offered, floors), offered):
        assert 0.0 <= r <= 1.0


def test_a_low_floor_keeps_low_alive_when_high_alone_overloads() -> None:
    given_ = allocate(1000, (1300, 0, 400), (0.0, 0.0, 0.1))
    assert given_ == (900, 0, 100)
    assert admit_ratios(given_, (1300, 0, 400)) == pytest.approx((900 / 1300, 1.0, 0.25))


# -- the rate loop ---------------------------------------------------------------------------------------


@given(mu=st.floats(1, 1e6), demand=st.floats(0, 0.999), backlog=st.floats(0, 499.9))
def test_no_throttling_while_the_offer_is_below_mu_and_the_backlog_below_target(
    mu: float, demand: float, backlog: float
) -> None:
    offered = (mu * demand / 3, mu * demand / 3, mu * demand / 3)
    step = control(PARAMS, INITIAL_CONTROL, backlog, Rates(mu, offered), 5.0)
    assert step.degraded is None
    assert step.memory.admit == (1.0, 1.0, 1.0)


@given(mu=st.floats(1, 1e5), high=st.floats(0, 0.99))
def test_high_is_admitted_in_full_while_its_own_offer_is_below_mu(mu: float, high: float) -> None:
    offered = (mu * high, mu * 2, mu * 2)
    step = control(PARAMS, INITIAL_CONTROL, 500.0, Rates(mu, offered), 5.0)  # at the target lag
    assert step.memory.admit[0] == 1.0
    assert step.memory.allowed == pytest.approx(mu)


def test_above_target_the_excess_is_worked_off_over_drain_seconds() -> None:
    step = control(PARAMS, INITIAL_CONTROL, 500 + 60 * 100, Rates(1000, (0, 0, 3000)), 0.0)
    assert step.memory.allowed == pytest.approx(1000 - 100)
    assert step.memory.admit[2] == pytest.approx(900 / 3000, abs=1e-4)


def test_a_consumer_that_stopped_admits_nothing_above_target() -> None:
    step = control(PARAMS, INITIAL_CONTROL, 5000, Rates(0.0, (10, 10, 10)), 5.0)
    assert step.memory.allowed == 0.0
    assert step.memory.admit == (0.0, 0.0, 0.0)


def test_the_integral_is_bounded_and_does_not_wind_up_while_pinned_at_zero() -> None:
    memory = INITIAL_CONTROL
    for _ in range(10_000):
        memory = control(PARAMS, memory, 1e9, Rates(100.0, (50, 50, 50)), 5.0).memory
        assert abs(memory.integral) <= MAX_CORRECTION * 100.0 + 1e-9
    assert memory.integral == 0.0  # R was pinned at 0 with the backlog above target the whole time
    # and a long quiet spell lets a past correction go
    memory = memory._replace(integral=-40.0)
    for _ in range(400):  # 2,000 s: e^(-2000/300) of it is left
        memory = control(PARAMS, memory, 0.0, Rates(100.0, (10, 10, 10)), 5.0).memory
    assert abs(memory.integral) < 0.1


def test_the_integral_corrects_a_biased_drain_rate() -> None:
    """mu reads 5 % high: a P-only loop settles with a standing error, the PI loop reaches L*."""
    true_mu, offered = 1000.0, (400.0, 400.0, 800.0)

    def settle(params: DrainParams) -> float:
        memory, backlog = INITIAL_CONTROL, 500.0
        for _ in range(8000):
            memory = control(params, memory, backlog, Rates(true_mu * 1.05, offered), 1.0).memory
            admitted = sum(r * o for r, o in zip(memory.admit, offered, strict=True))
            backlog = max(0.0, backlog + admitted - true_mu)
        return backlog

    p_only = dataclasses.replace(PARAMS, integral_seconds=0.0)
    assert settle(p_only) > 500 + 0.9 * 60 * 50  # standing error: T_d * bias
    assert settle(PARAMS) == pytest.approx(500, abs=50)


def test_the_deadband_holds_a_ratio_against_noise() -> None:
    params = DrainParams(500, 60, 0, 1.0, 0.05, (0.0, 0.0, 0.0), ("wait", "wait", "shed"))
    memory = control(params, INITIAL_CONTROL, 500.0, Rates(1000.0, (0, 0, 2000)), 0.0).memory
    assert memory.admit[2] == 0.5
    for mu in (1010.0, 990.0, 1020.0, 980.0):  # +-2 %: inside a 5 % deadband
        step = control(params, memory, 500.0, Rates(mu, (0, 0, 2000)), 5.0)
        assert not step.changed
        memory = step.memory
    step = control(params, memory, 500.0, Rates(1200.0, (0, 0, 2000)), 5.0)
    assert step.changed and step.memory.admit[2] == 0.6


@pytest.mark.parametrize(
    ("backlog", "rates", "needle"),
    [
        (None, Rates(1000.0, (1.0, 1.0, 1.0)), "no backlog reading"),
        (100.0, None, "no consumption rate"),
        (100.0, Rates(None, (1.0, 1.0, 1.0)), "no consumption rate"),
        (100.0, Rates(math.nan, (1.0, 1.0, 1.0)), "no consumption rate"),
        (100.0, Rates(-5.0, (1.0, 1.0, 1.0)), "no consumption rate"),
        (100.0, Rates(1000.0, None), "no offered rate"),
        (100.0, Rates(1000.0, (1.0, math.inf, 1.0)), "no offered rate"),
    ],
)
def test_a_missing_signal_degrades_and_says_why(backlog: float | None, rates: Rates | None, needle: str) -> None:
    step = control(PARAMS, INITIAL_CONTROL, backlog, rates, 5.0)
    assert step.degraded is not None and needle in step.degraded


# -- in evaluate ---------------------------------------------------------------------------------------------


def test_drain_mode_publishes_admit_ratios_and_no_delays() -> None:
    out = evaluate(spec(), 3000.0, T0, None, rates=Rates(1000.0, (200.0, 600.0, 800.0)))
    assert out.pacing and out.control_degraded is None
    high, medium, low = out.priorities
    assert [p.delay_ms for p in out.priorities] == [0, 0, 0]
    assert (high.zone, medium.zone, low.zone) == ("yellow", "red", "red")  # zones are still shown
    assert low.shed  # and shedding still follows them (3000 is deep in low's red)
    allowed = 1000 - 2500 / 60
    assert out.allowed_rate == pytest.approx(allowed)
    assert high.admit_ratio == 1.0 and high.excess == "wait"
    assert medium.admit_ratio == 1.0 and medium.excess == "wait"
    assert low.admit_ratio == 0.0 and low.excess == "shed"  # the zones shed it: nothing, and it says so
    doc = parse_decision(
        to_json(build_decision(out, namespace="ns", name="p", now=datetime.fromtimestamp(T0, UTC)))
    )
    assert doc.priorities.low.admit_ratio == low.admit_ratio
    assert doc.priorities.low.excess == "shed"
    assert "DrainTime: admitting" in out.reason


@pytest.mark.parametrize("rates", [None, Rates(None, (1.0, 1.0, 1.0)), Rates(1000.0, None)])
def test_drain_mode_without_rates_falls_back_to_zones(rates: Rates | None) -> None:
    zones = evaluate(spec(mode="Zones"), 3000.0, T0, None, rates=rates)
    out = evaluate(spec(), 3000.0, T0, None, rates=rates)
    assert not out.pacing and out.control_degraded is not None
    assert [p.delay_ms for p in out.priorities] == [p.delay_ms for p in zones.priorities]
    assert all(p.admit_ratio is None for p in out.priorities)
    assert "DrainTime degraded to Zones" in out.reason


def test_observe_publishes_would_admit_ratio_only() -> None:
    s = spec().model_copy(update={"enforcement": "Observe"})
    out = evaluate(s, 3000.0, T0, None, rates=Rates(1000.0, (200.0, 600.0, 800.0)))
    for p in out.priorities:
        assert p.admit_ratio is None and p.excess is None and p.delay_ms == 0
    would = out.priorities[2].would_admit_ratio
    assert would is not None and would < 1


def test_zones_mode_ignores_rates() -> None:
    out = evaluate(spec(mode="Zones"), 3000.0, T0, None, rates=Rates(1000.0, (200.0, 600.0, 800.0)))
    assert not out.pacing and out.control_degraded is None
    assert all(p.admit_ratio is None for p in out.priorities)


def test_a_change_of_admit_ratio_moves_the_epoch_and_noise_does_not() -> None:
    rates = Rates(1000.0, (200.0, 600.0, 800.0))
    first = evaluate(spec(), 600.0, T0, None, rates=rates)
    same = evaluate(spec(), 600.0, T0 + 5, first.memory, rates=rates)
    assert same.epoch == first.epoch
    moved = evaluate(spec(), 600.0, T0 + 10, same.memory, rates=Rates(1500.0, (200.0, 600.0, 800.0)))
    assert moved.epoch == first.epoch + 1


def test_the_loop_survives_a_restart_through_status() -> None:
    rates = Rates(1000.0, (200.0, 600.0, 800.0))
    s = spec()
    a = evaluate(s, 900.0, T0, None, rates=rates)
    b = evaluate(s, 950.0, T0 + 5, a.memory, rates=rates)
    restored = policy_from_status(policy_to_status(b.memory))
    assert restored is not None
    c1 = evaluate(s, 1000.0, T0 + 10, b.memory, rates=rates)
    c2 = evaluate(s, 1000.0, T0 + 10, restored, rates=rates)
    assert c1.priorities == c2.priorities and c1.epoch == c2.epoch
    assert c1.memory.control.integral == pytest.approx(c2.memory.control.integral)


def test_a_priority_the_zones_shed_leaves_its_share_to_the_others() -> None:
    """Allocating R to a shed priority would admit less than R in all and drain below target."""
    offered = (100.0, 2000.0, 800.0)
    kept = control(PARAMS, INITIAL_CONTROL, 500.0, Rates(1000.0, offered), 0.0).memory
    shed = control(PARAMS, INITIAL_CONTROL, 500.0, Rates(1000.0, offered), 0.0, (False, False, True)).memory
    assert kept.admit[1] == pytest.approx(900 / 2000) and shed.admit[1] == pytest.approx(900 / 2000)
    offered = (100.0, 500.0, 800.0)
    kept = control(PARAMS, INITIAL_CONTROL, 500.0, Rates(1000.0, offered), 0.0).memory
    shed = control(PARAMS, INITIAL_CONTROL, 500.0, Rates(1000.0, offered), 0.0, (False, False, True)).memory
    assert kept.admit == pytest.approx((1.0, 1.0, 400 / 800))
    assert shed.admit == (1.0, 1.0, 0.0)
