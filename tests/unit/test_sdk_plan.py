"""Per-priority plans and staleness: pure functions of (documents held, monotonic time, on_stale)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sluice.decision import BUILTIN_CONSERVATIVE_MS, CircuitState, Decision
from sluice.plan import Probe, build_plans
from sluice.sources import SourceView, StaticDecisions
from sluice.stale import MAX_TTL_SECONDS, Tracked, operator_ttl, track
from tests.support.sdk_helpers import make_circuit, make_decision

T0 = 1000.0


def view(decision: Decision | None = None, *circuits: CircuitState, at: float = T0) -> SourceView:
    return SourceView(
        version=1,
        decision=track(decision, None, at, "test") if decision is not None else None,
        circuits=tuple(track(c, None, at, c.name) for c in circuits),
        errors=0,
        last_error=None,
        connected=True,
        description="test",
    )


def test_green_decision_is_passthrough_for_every_priority() -> None:
    ps = build_plans(view(make_decision()), T0, "allow")
    assert ps.decision_status == "fresh"
    assert all(plan.passthrough for plan in ps.plans.values())
    assert ps.recheck_at == pytest.approx(T0 + 180.0)
    assert ps.circuit_state == "closed"


def test_enforced_delay_and_shed_per_priority() -> None:
    doc = make_decision(delay_ms={"high": 250, "medium": 500, "low": 750}, shed=("low",), zone="red", epoch=7)
    plans = build_plans(view(doc), T0, "allow").plans
    assert (plans["high"].delay_s, plans["high"].shed) == (0.25, False)
    assert plans["medium"].delay_s == 0.5
    assert plans["low"].shed and plans["low"].zone == "red" and plans["low"].epoch == 7
    assert not any(plan.passthrough for plan in plans.values())


def test_observe_applies_nothing_and_lists_what_would_happen() -> None:
    doc = make_decision(delay_ms=300, shed=("low",), enforcement="Observe")
    plans = build_plans(view(doc), T0, "allow").plans
    assert plans["low"].delay_s == 0 and not plans["low"].shed
    assert plans["low"].observe == ("delay", "shed")
    assert plans["high"].observe == ("delay",)
    assert not plans["high"].passthrough  # it must still count


def test_observe_embedded_open_circuit_is_only_counted() -> None:
    doc = make_decision(enforcement="Observe", circuit=make_circuit("brokers", "open"))
    plan = build_plans(view(doc), T0, "allow").plans["medium"]
    assert plan.reject is None and "reject_open" in plan.observe


@pytest.mark.parametrize("state", ["open", "forced-open"])
def test_open_circuit_rejects_every_priority(state: str) -> None:
    ps = build_plans(view(make_decision(), make_circuit("brokers", state)), T0, "allow")
    assert all(plan.reject == ("brokers", state) for plan in ps.plans.values())
    assert ps.circuit_state == "open"


@pytest.mark.parametrize("state", ["closed", "forced-closed"])
def test_closed_circuits_change_nothing(state: str) -> None:
    ps = build_plans(view(make_decision(), make_circuit("brokers", state)), T0, "allow")
    assert all(plan.passthrough for plan in ps.plans.values())


def test_half_open_probes_with_the_smallest_ratio_and_keeps_its_counter_across_rebuilds() -> None:
    v = view(make_decision(), make_circuit("a", "half-open", probe_ratio=0.5), make_circuit("b", "half-open",
                                                                                           probe_ratio=0.25))
    first = build_plans(v, T0, "allow")
    probe = first.plans["medium"].probe
    assert probe is not None and probe.ratio == 0.25 and probe.circuit == "b"
    assert first.circuit_state == "half-open"
    again = build_plans(v, T0 + 1, "allow", probes=first.probes)
    assert again.plans["medium"].probe is probe


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.25, 1 / 3, 0.5, 0.9, 1.0])
def test_probe_admits_exactly_the_ratio(ratio: float) -> None:
    probe = Probe("c", ratio)
    admitted = sum(probe.admit() for _ in range(3000))
    assert admitted == int(3000 * ratio + 1e-9)


def test_decision_goes_stale_by_monotonic_time_only() -> None:
    # Expired 90 s ago by our wall clock (a skewed operator clock, or kubelet lag), within the
    # default max_clock_skew of 120 s: the TTL still counts from when we received it.
    doc = make_decision(ttl=60, generated_ago=150)
    v = view(doc)
    assert build_plans(v, T0 + 59.9, "block").decision_status == "fresh"
    stale = build_plans(v, T0 + 60.1, "block")
    assert stale.decision_status == "stale"
    assert all(plan.stale_block == "decision" for plan in stale.plans.values())
    assert stale.plans["low"].stale_age == pytest.approx(60.1)


def test_on_stale_allow_produces_without_throttling() -> None:
    doc = make_decision(ttl=10, delay_ms=900, shed=("low",))
    plans = build_plans(view(doc), T0 + 11, "allow").plans
    assert all(plan.passthrough for plan in plans.values())


def test_on_stale_conservative_uses_the_documents_fallback() -> None:
    doc = make_decision(ttl=10, fallback={"high": 11, "medium": 22, "low": 33})
    plans = build_plans(view(doc), T0 + 11, "conservative").plans
    assert [plans[p].delay_s for p in ("high", "medium", "low")] == [0.011, 0.022, 0.033]
    assert not plans["low"].shed


def test_no_document_at_all_is_stale_and_conservative_uses_builtin_delays() -> None:
    ps = build_plans(view(None), T0, "conservative")
    assert ps.decision_status == "missing" and ps.stale == ("decision",)
    assert {p: plan.delay_s * 1000 for p, plan in ps.plans.items()} == pytest.approx(BUILTIN_CONSERVATIVE_MS)
    assert build_plans(view(None), T0, "block").plans["high"].stale_block == "decision"
    assert build_plans(view(None), T0, "allow").plans["high"].passthrough


def test_a_stale_circuit_follows_on_stale_but_a_fresh_decision_still_applies() -> None:
    v = view(make_decision(delay_ms=40), make_circuit("brokers", "open", ttl=5))
    allow = build_plans(v, T0 + 6, "allow")
    assert allow.plans["medium"].reject is None and allow.plans["medium"].delay_s == 0.04
    assert allow.stale == ("circuit brokers",)
    assert build_plans(v, T0 + 6, "block").plans["medium"].stale_block == "circuit brokers"
    assert build_plans(v, T0 + 6, "conservative").plans["medium"].delay_s == 0.5


def test_recheck_at_is_the_first_moment_an_answer_changes() -> None:
    v = view(make_decision(ttl=100), make_circuit("brokers", "open", ttl=30))
    assert build_plans(v, T0, "allow").recheck_at == pytest.approx(T0 + 30)


def test_a_document_for_another_policy_is_ignored() -> None:
    doc = make_decision(delay_ms=500, policy=("other", "policy"))
    ps = build_plans(view(doc), T0, "allow", policy="default/orders")
    assert ps.decision_status == "mismatch"
    assert ps.plans["medium"].passthrough
    assert build_plans(view(doc), T0, "allow", policy="other/policy").plans["medium"].delay_s == 0.5


def test_operator_ttl_is_expires_minus_generated_capped() -> None:
    doc = make_decision(ttl=42)
    assert operator_ttl(doc) == pytest.approx(42)
    huge = doc.model_copy(update={"expires_at": doc.generated_at + timedelta(days=30)})
    assert operator_ttl(huge) == MAX_TTL_SECONDS
    backwards = doc.model_copy(update={"expires_at": doc.generated_at - timedelta(seconds=5)})
    assert operator_ttl(backwards) == 0.0
    circuit = make_circuit().model_copy(update={"generated_at": None})
    assert operator_ttl(circuit) == 180.0


def test_rereading_the_same_document_keeps_its_receipt_time() -> None:
    doc = make_decision()
    first = track(doc, None, 5.0, "f")
    assert track(Decision.model_validate_json(doc.model_dump_json(by_alias=True)), first, 50.0, "f") is first
    newer = track(make_decision(epoch=2), first, 50.0, "f")
    assert isinstance(newer, Tracked) and newer.received_at == 50.0


def test_static_source_versions_every_change() -> None:
    source = StaticDecisions()
    v0 = source.version
    source.set_decision(make_decision())
    source.set_circuit(make_circuit("x", "open"))
    assert source.version == v0 + 2
    source.set_decision(source.view().decision.doc)  # type: ignore[union-attr]
    assert source.version == v0 + 2  # unchanged document: no new version
    source.remove_circuit("x")
    assert source.view().circuits == ()
    source.clear()
    assert source.view().decision is None
