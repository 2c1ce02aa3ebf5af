"""DrainTime pacing: the pure token bucket and rate estimator, and the admission path with pacing.

Driven by hand with an injected clock: no Kafka, no sleeping.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.admission import RECHECK_WAIT_S, Admission, Step
from sluice.decision import PRIORITIES
from sluice.errors import CircuitOpenError, PacedError, ShedError
from sluice.metrics import Counts
from sluice.pacing import BUCKET_DEPTH_S, SLOTS_PER_WINDOW, Pacer, RateEstimator
from sluice.plan import Plan, build_plans
from sluice.sources.base import SourceView
from sluice.stale import track
from tests.support.sdk_helpers import make_decision
from tests.unit.test_sdk_admission import FakeHost

WINDOW = 2.0


def _offer(pacer: Pacer, rate: float, start: float, seconds: float, ratio: float, total: int = 0) -> tuple[int, int]:
    """Uniform arrivals at ``rate`` for ``seconds``, each asking for a token; (offered, admitted)."""
    admitted = 0
    n = round(rate * seconds)
    for k in range(n):
        now = start + k / rate
        total += 1
        pacer.observe(now, total)
        admitted += pacer.try_take(now, ratio, total)
    return total, admitted


# ============================================================== the rate estimator


def test_the_rate_estimate_of_a_steady_counter_is_exact() -> None:
    est = RateEstimator(WINDOW, 0.0)
    for k in range(1, 1001):  # 200/s for 5 s
        est.observe(k / 200, k)
    assert est.rate(5.0, 1000) == pytest.approx(200.0, rel=1e-9)
    assert len(est._samples) <= SLOTS_PER_WINDOW + 2


def test_the_rate_follows_a_change_within_a_window_and_a_slot() -> None:
    est = RateEstimator(WINDOW, 0.0)
    total = 0
    for k in range(1, 501):  # 100/s for 5 s, then 300/s
        total += 1
        est.observe(k / 100, total)
    for k in range(1, 3 * 300 + 1):
        total += 1
        est.observe(5.0 + k / 300, total)
    assert est.rate(8.0, total) == pytest.approx(300.0, rel=1e-9)


def test_after_an_idle_period_the_estimate_ramps_up_over_one_window() -> None:
    est = RateEstimator(WINDOW, 0.0)
    # 60 s of silence, then 100 calls in 1 s: not diluted by 60 s, but spread over one window + a slot
    for k in range(1, 101):
        est.observe(60 + k / 100, k)
    assert est.rate(61.0, 100) == pytest.approx(100 / (WINDOW + est.slot_s))


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window"):
        RateEstimator(0.0, 0.0)


# ============================================================== the token bucket


def _warm(rate: float = 100.0, until: float = 5.0) -> tuple[Pacer, int]:
    """A pacer whose estimator has seen ``rate`` calls/s until ``until`` (no tokens asked for yet)."""
    pacer = Pacer(WINDOW, 0.0)
    total = 0
    for k in range(1, round(rate * until) + 1):
        total += 1
        pacer.observe(k / rate, total)
    return pacer, total


def test_token_accounting_is_exact_at_a_steady_offered_rate() -> None:
    """ratio 0.4 of 100/s for 10 s: a full bucket (0.2 s of tokens, 8) plus 40/s x 10 s."""
    pacer, total = _warm()
    offered, admitted = _offer(pacer, 100.0, 5.0 + 0.01, 10.0, 0.4, total)
    depth = 0.4 * 100 * BUCKET_DEPTH_S
    assert admitted == pytest.approx(depth + 0.4 * 100 * 10.0, abs=1.5)
    assert offered - total == 1000


def test_ratio_one_admits_a_steady_offer_in_full() -> None:
    pacer, total = _warm()
    _, admitted = _offer(pacer, 100.0, 5.01, 5.0, 1.0, total)
    assert admitted == 500


def test_ratio_zero_never_gives_a_token_not_even_a_stored_one() -> None:
    pacer, total = _warm()
    assert pacer.try_take(5.0, 1.0, total)  # a full bucket under ratio 1...
    _, admitted = _offer(pacer, 100.0, 5.01, 3.0, 0.0, total)
    assert admitted == 0  # ...is emptied by ratio 0
    ticket = pacer.reserve(9.0, 0.0, total)
    assert pacer.wait_for(ticket, 100.0, 0.0, total) == math.inf
    assert pacer.rate(9.0, 0.0, total) == 0.0


def test_a_ratio_change_applies_from_the_next_refill() -> None:
    pacer, total = _warm()
    total, first = _offer(pacer, 100.0, 5.01, 5.0, 0.5, total)
    total, second = _offer(pacer, 100.0, 10.01, 5.0, 0.2, total)
    assert first == pytest.approx(0.5 * 500 + 0.5 * 100 * BUCKET_DEPTH_S, abs=2)
    assert second == pytest.approx(0.2 * 500, abs=2)


def test_a_low_rate_still_accumulates_one_whole_token() -> None:
    pacer = Pacer(WINDOW, 0.0)  # 1 call per second: r = 0.5/s, 0.2 s of it is 0.1 token -> depth 1
    assert pacer.try_take(0.5, 0.5, 1)
    assert not pacer.try_take(1.0, 0.5, 2)
    assert pacer.try_take(3.5, 0.5, 4)


def test_tickets_are_served_in_order_and_a_cancelled_one_moves_the_rest_forward() -> None:
    pacer, total = _warm()  # r = 50/s at ratio 0.5, bucket of 10
    for _ in range(10):
        assert pacer.try_take(5.0, 0.5, total)
    tickets = [pacer.reserve(5.0, 0.5, total) for _ in range(3)]
    waits = [pacer.wait_for(t, 5.0, 0.5, total) for t in tickets]
    assert waits == pytest.approx([1 / 50, 2 / 50, 3 / 50], rel=0.02)
    pacer.cancel(tickets[0], 5.0, 0.5, total)
    assert pacer.wait_for(tickets[2], 5.0, 0.5, total) == pytest.approx(2 / 50, rel=0.02)
    assert not pacer.try_take(5.0, 0.5, total)  # a message that may not wait never jumps the queue


@settings(max_examples=200, deadline=None)
@given(
    ratio=st.floats(min_value=0.0, max_value=1.0),
    ops=st.lists(st.tuples(st.floats(min_value=0.0, max_value=0.05), st.sampled_from(["take", "reserve", "cancel"])),
                 max_size=300),
)
def test_property_the_bucket_never_overflows_and_tickets_stay_in_order(
    ratio: float, ops: list[tuple[float, str]]
) -> None:
    pacer = Pacer(WINDOW, 0.0)
    now, total, admitted = 0.0, 0, 0
    held: list[int] = []
    for dt, op in ops:
        now += dt
        total += 1
        pacer.observe(now, total)
        if op == "take":
            admitted += pacer.try_take(now, ratio, total)
        elif op == "reserve":
            held.append(pacer.reserve(now, ratio, total))
        elif held:
            pacer.cancel(held.pop(0), now, ratio, total)
        assert pacer.wait_for(0, now, ratio, total) == 0  # (refills)
        rate = pacer.rate(now, ratio, total)
        assert pacer.available <= max(1.0, rate * BUCKET_DEPTH_S) + 1e-9
        ready = [pacer.wait_for(t, now, ratio, total) == 0 for t in sorted(held)]
        assert ready == sorted(ready, reverse=True)  # never a later ticket before an earlier one
    assert admitted <= total
    if ratio == 0:
        assert admitted == 0


# ============================================================== the admission path with pacing


class PacedHost(FakeHost):
    def __init__(self, max_wait: float = 1.0) -> None:
        super().__init__()
        self.pacing_max_wait_s = max_wait
        self.pacers = [Pacer(WINDOW, 0.0) for _ in PRIORITIES]

    def pacer(self, idx: int) -> Pacer:
        return self.pacers[idx]


def _paced(ratio: float, excess: str = "wait", **kwargs: object) -> Plan:
    return Plan(priority="medium", idx=1, admit_ratio=ratio, excess=excess, **kwargs)  # type: ignore[arg-type]


def _drain_tokens(host: PacedHost, now: float, ratio: float) -> None:
    while host.pacers[1].try_take(now, ratio, host.counts.offered_of(1)):
        pass


def test_every_admission_counts_one_offered_call() -> None:
    host = PacedHost()
    with pytest.raises(CircuitOpenError):
        Admission(host, _paced(1.0, reject=("kafka", "open")), "t", b"v", None, None, None).begin(0.0)
    adm = Admission(host, _paced(1.0), "t", b"v", None, None, None)
    assert adm.begin(0.0) is Step.ENQUEUE and adm.enqueued() is Step.DONE
    assert host.counts.offered == [0, 2, 0] and host.counts.sent == [0, 1, 0]


def test_a_paced_shed_is_a_shed_with_its_own_counter() -> None:
    host = PacedHost()
    plan = _paced(0.5, "shed")
    assert Admission(host, plan, "t", b"v", None, None, None).begin(0.0) is Step.ENQUEUE  # the one token
    with pytest.raises(ShedError) as info:
        Admission(host, plan, "t", b"v", None, None, None).begin(0.0)
    assert info.value.paced and "pacing" in str(info.value)
    assert host.counts.shed == [0, 1, 0] and host.counts.paced == {"wait": [0, 0, 0], "shed": [0, 1, 0]}
    host.on_shed, host.dlq_topic = "dlq", "dlq"
    adm = Admission(host, plan, "t", b"v", None, None, None)
    assert adm.begin(0.0) is Step.DEAD_LETTER
    assert adm.letter is not None and adm.letter.reason == "shed" and "admitRatio 0.5" in adm.letter.error_reason


def test_a_waiting_message_gets_its_token_and_is_counted_once() -> None:
    host = PacedHost(max_wait=5.0)
    plan = _paced(0.5)
    _drain_tokens(host, 0.0, 0.5)
    adm = Admission(host, plan, "t", b"v", None, None, None)
    step, now, waits = adm.begin(0.0), 0.0, 0
    while step is Step.WAIT:
        assert 0 < adm.wait_s <= RECHECK_WAIT_S
        now += adm.wait_s
        waits += 1
        step = adm.waited(now, dataclasses.replace(plan))  # a rebuilt plan, same content
    assert step is Step.ENQUEUE and waits > 1
    assert host.counts.paced["wait"] == [0, 1, 0] and host.counts.delayed == [0, 0, 0] and host.delays == []


def test_the_pacing_deadline_refuses_and_gives_the_ticket_back() -> None:
    host = PacedHost(max_wait=0.5)
    plan = _paced(0.0)
    adm = Admission(host, plan, "t", b"v", None, None, None)
    step, now = adm.begin(10.0), 10.0
    with pytest.raises(PacedError) as info:
        while step is Step.WAIT:
            now += adm.wait_s
            step = adm.waited(now, plan)
    assert now == pytest.approx(10.5) and info.value.waited_s == pytest.approx(0.5)
    assert host.counts.rejected_paced == [0, 1, 0] and host.counts.paced["wait"] == [0, 1, 0]
    assert host.pacers[1].available == 0  # the ticket went back


def test_a_circuit_opening_during_a_pacing_wait_rejects_and_returns_the_ticket() -> None:
    host = PacedHost()
    plan = _paced(0.0)
    adm = Admission(host, plan, "t", b"v", None, None, None)
    assert adm.begin(0.0) is Step.WAIT
    with pytest.raises(CircuitOpenError):
        adm.waited(0.1, _paced(0.0, reject=("kafka", "open")))
    assert host.counts.rejected_open == [0, 1, 0] and host.pacers[1].available == 0


@pytest.mark.parametrize("change", ["unpaced", "ratio", "shed"])
def test_a_new_plan_during_a_pacing_wait_takes_effect(change: str) -> None:
    host = PacedHost(max_wait=5.0)
    adm = Admission(host, _paced(0.0), "t", b"v", None, None, None)
    assert adm.begin(0.0) is Step.WAIT
    if change == "unpaced":
        assert adm.waited(0.1, _paced(1.0)) is Step.ENQUEUE
    elif change == "ratio":  # from no token ever to a ratio that makes tokens: the ticket comes soon
        now, step = 0.1, adm.waited(0.1, _paced(0.99))
        while step is Step.WAIT:
            now += adm.wait_s
            step = adm.waited(now, _paced(0.99))
        assert step is Step.ENQUEUE and now < 0.5
    else:
        with pytest.raises(ShedError):
            adm.waited(0.1, _paced(0.0, "shed"))
        assert host.counts.paced == {"wait": [0, 1, 0], "shed": [0, 1, 0]}
    assert host.pacers[1].available >= 0


def test_a_delay_then_pacing_observes_the_delay_once() -> None:
    host = PacedHost(max_wait=5.0)
    _drain_tokens(host, 0.0, 0.5)
    plan = _paced(0.5, delay_s=0.3)
    adm = Admission(host, plan, "t", b"v", None, None, None)
    step, now = adm.begin(0.0), 0.0
    while step is Step.WAIT:
        now += adm.wait_s
        step = adm.waited(now, plan)
    assert step is Step.ENQUEUE and len(host.delays) == 1 and host.counts.delayed == [0, 1, 0]


def test_abandon_gives_back_a_held_ticket_once() -> None:
    host = PacedHost()
    adm = Admission(host, _paced(0.0), "t", b"v", None, None, None)
    assert adm.begin(0.0) is Step.WAIT and host.pacers[1].available == -1
    adm.abandon(0.05)
    adm.abandon(0.06)
    assert host.pacers[1].available == 0


# ============================================================== plans from documents


def _plans(**kwargs: object) -> dict[str, Plan]:
    doc = make_decision(**kwargs)  # type: ignore[arg-type]
    return dict(build_plans(_view(doc), 0.0, "allow").plans)


def _view(doc: object) -> SourceView:
    return SourceView(version=1, decision=track(doc, None, 0.0, "test"), circuits=(), errors=0,  # type: ignore[type-var]
                      last_error=None, connected=True, description="test")


def test_admit_ratio_and_excess_reach_the_plans() -> None:
    plans = _plans(admit_ratio={"medium": 0.4, "low": 0.4}, excess={"medium": "wait", "low": "shed"})
    assert plans["high"].passthrough and not plans["high"].paced
    assert plans["medium"].paced and plans["medium"].excess == "wait" and not plans["medium"].passthrough
    assert plans["low"].admit_ratio == 0.4 and plans["low"].excess == "shed"
    assert _plans(admit_ratio={"low": 1.0})["low"].passthrough
    assert _plans(admit_ratio={"low": 0.5})["low"].excess == "wait"  # no excess given: nothing is dropped


def test_observe_mode_paces_nothing_and_counts_pace() -> None:
    plans = _plans(enforcement="Observe", admit_ratio={"low": 0.3})
    assert not plans["low"].paced and plans["low"].observe == ("pace",)
    host = PacedHost()
    low = plans["low"]
    assert Admission(host, low, "t", b"v", None, None, None).begin(0.0) is Step.ENQUEUE
    assert host.counts.observed["pace"] == [0, 0, 1] and host.counts.paced["wait"] == [0, 0, 0]


def test_a_stale_decision_does_not_pace() -> None:
    doc = make_decision(admit_ratio={"low": 0.1}, ttl=1.0)
    assert not build_plans(_view(doc), 1000.0, "allow").plans["low"].paced


def test_counts_sums_are_the_passthrough_plus_the_admissions() -> None:
    counts = Counts()
    counts.fast_sent[0] += 3
    counts.slow_offered[0] += 2
    counts.slow_sent[0] += 1
    assert counts.sent == [4, 0, 0] and counts.offered == [5, 0, 0] and counts.offered_of(0) == 5
