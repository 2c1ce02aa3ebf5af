"""Hypothesis properties of the engine (pure functions, so hundreds of cases run in a second)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice_operator.api.circuit import CircuitBreakerSpec
from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.engine import CircuitMemory, CircuitResult, PolicyMemory, compile_policy, evaluate, seed, step
from sluice_operator.engine.zones import ZONE_INDEX

T0 = 1_700_000_000.0
PRIORITIES = ("high", "medium", "low")
ZONES = ("green", "yellow", "red")


@st.composite
def windows(draw: st.DrawFn) -> dict[str, float]:
    green = draw(st.floats(0, 1e6, allow_nan=False))
    yellow = green + draw(st.floats(0.01, 1e6))
    red = yellow + draw(st.floats(0.01, 1e6))
    return {"green": green, "yellow": yellow, "red": red}


@st.composite
def delay_ranges(draw: st.DrawFn) -> dict[str, int]:
    a, b = sorted(draw(st.lists(st.integers(0, 3_600_000), min_size=2, max_size=2)))
    return {"minMs": a, "maxMs": b}


@st.composite
def policy_specs(draw: st.DrawFn, *, default_shedding: bool = False) -> BackpressurePolicySpec:
    fields: dict[str, Any] = {
        "source": {"prometheus": {"query": "sum(lag)"}},
        "thresholds": {p: draw(windows()) for p in PRIORITIES},
        "delays": {"yellow": draw(delay_ranges()), "red": draw(delay_ranges())},
        "priorityScale": {p: draw(st.floats(0, 100)) for p in PRIORITIES},
        "hysteresis": {"margin": draw(st.floats(0, 0.99)), "minDwellSeconds": draw(st.floats(0, 600))},
    }
    if not default_shedding:
        fields["shedding"] = {
            "priorities": draw(st.lists(st.sampled_from(PRIORITIES), unique=True)),
            "redRatioAbove": draw(st.floats(0, 1)),
        }
    return BackpressurePolicySpec.model_validate(fields)


backlogs = st.floats(0, 4e6, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(spec=policy_specs(), a=backlogs, b=backlogs)
def test_delay_never_decreases_as_backlog_grows(spec: BackpressurePolicySpec, a: float, b: float) -> None:
    low, high = sorted((a, b))
    at_low = evaluate(spec, low, T0, None)
    at_high = evaluate(spec, high, T0, None)
    for x, y in zip(at_low.priorities, at_high.priorities, strict=True):
        assert x.delay_ms <= y.delay_ms, (x, y)
        assert ZONE_INDEX[x.zone] <= ZONE_INDEX[y.zone]
        assert x.ratio <= y.ratio or ZONE_INDEX[x.zone] < ZONE_INDEX[y.zone]
        assert not x.shed or y.shed


@settings(max_examples=200, deadline=None)
@given(
    spec=policy_specs(default_shedding=True),
    readings=st.lists(st.one_of(st.none(), backlogs), min_size=1, max_size=30),
    steps=st.lists(st.floats(0, 120), min_size=30, max_size=30),
    override=st.sampled_from(["None", "Disable", "ForceRed"]),
)
def test_high_priority_is_never_shed_with_default_shedding(
    spec: BackpressurePolicySpec, readings: list[float | None], steps: list[float], override: str
) -> None:
    spec = spec.model_copy(update={"override": spec.override.model_copy(update={"mode": override})})
    memory: PolicyMemory | None = None
    now = T0
    for reading, dt in zip(readings, steps, strict=False):
        now += dt
        outcome = evaluate(spec, reading, now, memory)
        memory = outcome.memory
        assert outcome.get("high").shed is False and outcome.get("high").would_shed in (None, False)


@settings(max_examples=300, deadline=None)
@given(
    spec=policy_specs(),
    backlog=backlogs,
    previous=st.dictionaries(st.sampled_from(PRIORITIES), st.sampled_from(ZONES)),
    since=st.one_of(st.none(), st.floats(-1000, 1000)),
    steps=st.lists(st.floats(0, 300), min_size=1, max_size=60),
)
def test_constant_backlog_never_changes_zone_twice(
    spec: BackpressurePolicySpec,
    backlog: float,
    previous: dict[Any, Any],
    since: float | None,
    steps: list[float],
) -> None:
    memory: PolicyMemory | None = seed(previous, since=None if since is None else T0 + since) if previous else None
    params = compile_policy(spec)
    changes = {p: 0 for p in PRIORITIES}
    now = T0
    for dt in steps:
        now += dt
        outcome = evaluate(params, backlog, now, memory)
        memory = outcome.memory
        for priority, _, _ in outcome.zone_changes:
            changes[priority] += 1
    assert max(changes.values()) <= 1, changes


results = st.sampled_from(["ok", "fail", "unknown"])


@st.composite
def circuit_specs(draw: st.DrawFn) -> CircuitBreakerSpec:
    fields: dict[str, Any] = {
        "signal": {"prometheus": {"query": "errors", "failWhen": {"above": 0}}},
        "namespaces": ["shop"],
        "failureThreshold": draw(st.integers(1, 6)),
        "tripWindowSeconds": draw(st.floats(0.5, 60)),
        "recoveryTimeoutSeconds": draw(st.floats(0, 100)),
        "recoveryThreshold": draw(st.integers(1, 5)),
    }
    mode = draw(st.sampled_from(["None", "ForceOpen", "ForceClosed"]))
    if mode != "None":
        until = draw(st.one_of(st.none(), st.floats(0, 2000)))
        fields["override"] = {
            "mode": mode,
            "until": None if until is None else datetime.fromtimestamp(T0 + until, UTC).isoformat(),
        }
    return CircuitBreakerSpec.model_validate(fields)


@settings(max_examples=300, deadline=None)
@given(
    specs=st.lists(circuit_specs(), min_size=1, max_size=3),
    sequence=st.lists(st.tuples(st.floats(0, 90), results), min_size=1, max_size=80),
)
def test_circuit_never_goes_from_closed_to_half_open(
    specs: list[CircuitBreakerSpec], sequence: list[tuple[float, CircuitResult]]
) -> None:
    memory: CircuitMemory | None = None
    now = T0
    for i, (dt, result) in enumerate(sequence):
        now += dt
        spec = specs[i * len(specs) // len(sequence)]  # the spec may change (overrides come and go)
        s = step(spec, memory, now, result)
        if s.transition is not None:
            assert s.transition.from_state != s.transition.to_state
            assert (s.transition.from_state, s.transition.to_state) not in {
                ("closed", "half-open"),
                ("forced-closed", "half-open"),
                ("forced-open", "half-open"),
            }
            assert s.transition.reason
        else:
            assert memory is None or s.memory.state == memory.state
        memory = s.memory
