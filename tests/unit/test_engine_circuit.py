"""The circuit state machine: every transition, the unknown rule, the trip window, restarts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sluice_operator.api.circuit import CircuitBreakerSpec, CircuitBreakerStatus
from sluice_operator.engine import (
    CircuitMemory,
    CircuitResult,
    CircuitStep,
    circuit_document,
    circuit_from_status,
    circuit_to_status,
    step,
)

T0 = 1_700_000_000.0
SIGNAL = {"prometheus": {"query": "rate(errors[1m])", "failWhen": {"above": 0.1}}}


def make_spec(**fields: Any) -> CircuitBreakerSpec:
    return CircuitBreakerSpec.model_validate({"signal": SIGNAL, "namespaces": ["shop"], **fields})


DEFAULT = make_spec()  # 5 failures / 30 s, recovery 60 s, 3 healthy probes


def run(
    spec: CircuitBreakerSpec, steps: list[tuple[float, CircuitResult]], memory: CircuitMemory | None = None
) -> list[CircuitStep]:
    out = []
    for t, result in steps:
        s = step(spec, memory, T0 + t, result)
        memory = s.memory
        out.append(s)
    return out


def states(steps: list[CircuitStep]) -> list[str]:
    return [s.memory.state for s in steps]


def open_circuit(spec: CircuitBreakerSpec = DEFAULT) -> CircuitMemory:
    steps = run(spec, [(i * 5.0, "fail") for i in range(5)])
    assert steps[-1].memory.state == "open"
    return steps[-1].memory  # opened at T0 + 20


def test_first_step_is_closed_with_epoch_one() -> None:
    s = step(DEFAULT, None, T0, "ok")
    assert s.memory.state == "closed" and s.transition is None and s.memory.epoch == 1


def test_closed_opens_after_threshold_failures_within_the_window() -> None:
    steps = run(DEFAULT, [(i * 5.0, "fail") for i in range(5)])
    assert states(steps) == ["closed"] * 4 + ["open"]
    assert [s.memory.failures for s in steps][3] == (T0, T0 + 5, T0 + 10, T0 + 15)
    t = steps[-1].transition
    assert t is not None and (t.from_state, t.to_state, t.at) == ("closed", "open", T0 + 20)
    assert t.reason == "5 failures within 30s"
    assert steps[-1].memory.epoch == 2 and steps[-1].memory.failures == ()


def test_window_is_inclusive_and_old_failures_age_out() -> None:
    # spanning exactly 30 s: all five count
    assert states(run(DEFAULT, [(i * 7.5, "fail") for i in range(5)]))[-1] == "open"
    # one step wider: the first failure has aged out
    steps = run(DEFAULT, [(i * 7.6, "fail") for i in range(5)])
    assert states(steps)[-1] == "closed" and len(steps[-1].memory.failures) == 4
    later = step(DEFAULT, steps[-1].memory, T0 + 200, "unknown")
    assert later.memory.failures == () and later.memory.state == "closed"


def test_healthy_and_unknown_results_do_not_erase_failures_in_closed() -> None:
    results: list[CircuitResult] = ["fail", "ok", "fail", "unknown", "fail", "ok", "fail", "unknown", "fail"]
    steps = run(DEFAULT, [(i * 2.0, r) for i, r in enumerate(results)])
    assert states(steps)[-1] == "open" and states(steps)[-2] == "closed"


def test_unknown_never_counts_as_failure() -> None:
    steps = run(DEFAULT, [(i * 1.0, "unknown") for i in range(50)])
    assert set(states(steps)) == {"closed"} and steps[-1].memory.failures == ()


def test_open_goes_half_open_after_recovery_timeout_even_on_unknown() -> None:
    memory = open_circuit()
    assert step(DEFAULT, memory, T0 + 79.9, "unknown").memory.state == "open"
    s = step(DEFAULT, memory, T0 + 80, "unknown")
    assert s.memory.state == "half-open" and s.transition is not None
    assert s.transition.reason == "recovery timeout 60s elapsed"
    # the step that moves to half-open does not count its result as a probe
    assert step(DEFAULT, memory, T0 + 80, "fail").memory.state == "half-open"
    assert step(DEFAULT, memory, T0 + 80, "ok").memory.successes == 0


def test_failures_while_open_are_not_recorded() -> None:
    memory = open_circuit()
    s = step(DEFAULT, memory, T0 + 30, "fail")
    assert s.memory.state == "open" and s.memory.failures == () and s.transition is None


def test_half_open_closes_after_consecutive_healthy_probes_unknown_neutral() -> None:
    half = step(DEFAULT, open_circuit(), T0 + 80, "unknown").memory
    steps = run(DEFAULT, [(85, "ok"), (90, "unknown"), (95, "ok"), (100, "ok")], half)
    assert states(steps) == ["half-open", "half-open", "half-open", "closed"]
    assert [s.memory.successes for s in steps] == [1, 1, 2, 0]
    t = steps[-1].transition
    assert t is not None and t.reason == "3 consecutive healthy probes"


def test_half_open_reopens_on_any_failure_and_waits_again() -> None:
    half = step(DEFAULT, open_circuit(), T0 + 80, "unknown").memory
    steps = run(DEFAULT, [(85, "ok"), (90, "ok"), (95, "fail"), (154.9, "ok"), (155, "ok")], half)
    assert states(steps) == ["half-open", "half-open", "open", "open", "half-open"]
    assert steps[2].transition is not None and steps[2].transition.reason == "probe failed in half-open"


def until(seconds_from_t0: float) -> str:
    return datetime.fromtimestamp(T0 + seconds_from_t0, UTC).isoformat()


def test_force_open_then_back_through_open_and_half_open() -> None:
    spec = make_spec(override={"mode": "ForceOpen", "until": until(100)})
    steps = run(spec, [(0, "ok"), (50, "ok"), (100, "ok"), (159, "ok"), (160, "ok")])
    assert states(steps) == ["forced-open", "forced-open", "open", "open", "half-open"]
    first, ended = steps[0].transition, steps[2].transition
    assert first is not None and first.reason == "override ForceOpen until 2023-11-14T22:15:00.000000Z"
    assert ended is not None and ended.reason.startswith("override ForceOpen expired at 2023-11-14T22:15:00")


def test_force_closed_holds_and_trips_at_once_when_it_ends_on_a_failing_dependency() -> None:
    spec = make_spec(override={"mode": "ForceClosed", "until": until(20), "reason": "maintenance"})
    steps = run(spec, [(i * 5.0, "fail") for i in range(5)], open_circuit(make_spec()))
    assert states(steps) == ["forced-closed"] * 4 + ["open"]
    assert steps[0].transition is not None and steps[0].transition.reason.endswith(": maintenance")
    last = steps[-1].transition
    assert last is not None and last.from_state == "forced-closed"
    assert last.reason == "override ForceClosed expired at 2023-11-14T22:13:40.000000Z; 5 failures within 30s"


def test_force_closed_ends_in_closed_when_healthy_and_removed_override_is_named() -> None:
    memory = step(make_spec(override={"mode": "ForceClosed"}), None, T0, "ok").memory
    s = step(DEFAULT, memory, T0 + 1, "ok")
    assert s.memory.state == "closed" and s.transition is not None
    assert s.transition.reason == "override ForceClosed removed"


def test_override_switch_between_forced_states() -> None:
    memory = step(make_spec(override={"mode": "ForceOpen"}), None, T0, "ok").memory
    s = step(make_spec(override={"mode": "ForceClosed"}), memory, T0 + 1, "ok")
    assert s.transition is not None and (s.transition.from_state, s.transition.to_state) == (
        "forced-open",
        "forced-closed",
    )


def test_last_ten_transitions_are_kept() -> None:
    spec = make_spec(failureThreshold=1, recoveryTimeoutSeconds=0, recoveryThreshold=1)
    memory = None
    for i in range(30):
        memory = step(spec, memory, T0 + i, "fail" if i % 2 == 0 else "ok").memory
    assert memory is not None and len(memory.transitions) == 10 and memory.epoch > 10


def through_the_api(memory: CircuitMemory) -> CircuitMemory | None:
    status = json.loads(json.dumps(circuit_to_status(memory)))
    CircuitBreakerStatus.model_validate(status)
    return circuit_from_status(status)


def test_restart_with_an_open_circuit_stays_open() -> None:
    memory = open_circuit()
    restored = through_the_api(memory)
    assert restored == memory
    assert restored is not None
    assert step(DEFAULT, restored, T0 + 79, "ok").memory.state == "open"
    assert step(DEFAULT, restored, T0 + 80, "ok") == step(DEFAULT, memory, T0 + 80, "ok")


def test_status_round_trip_over_a_whole_life() -> None:
    fail: list[CircuitResult] = ["fail"]
    unknown: list[CircuitResult] = ["unknown"]
    ok: list[CircuitResult] = ["ok"]
    results = fail * 5 + unknown * 10 + ok + fail + unknown * 10 + ok * 4
    memory: CircuitMemory | None = None
    for i, result in enumerate(results):
        now = T0 + 6.1 * i
        restored = through_the_api(memory) if memory is not None else None
        assert restored == memory
        original = step(DEFAULT, memory, now, result)
        assert step(DEFAULT, restored, now, result) == original
        memory = original.memory
    assert memory is not None
    assert [t.to_state for t in memory.transitions] == ["open", "half-open", "open", "half-open", "closed"]


def test_status_layout() -> None:
    memory = run(DEFAULT, [(0, "fail"), (1, "fail")])[-1].memory
    status = circuit_to_status(memory)
    assert status["state"] == "closed" and status["failureCount"] == 2 and status["successCount"] == 0
    assert status["recentFailures"] == ["2023-11-14T22:13:20.000000Z", "2023-11-14T22:13:21.000000Z"]
    opened = circuit_to_status(open_circuit())
    assert opened["lastTransitions"][-1] == {
        "from": "closed",
        "to": "open",
        "at": "2023-11-14T22:13:40.000000Z",
        "reason": "5 failures within 30s",
    }
    assert circuit_from_status({}) is None
    assert circuit_from_status({"conditions": []}) is None


def test_circuit_document() -> None:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    doc = circuit_document(make_spec(halfOpenProbeRatio=0.25), open_circuit(), "kafka-main", now, 120)
    assert (doc.name, doc.state, doc.probe_ratio, doc.epoch) == ("kafka-main", "open", 0.25, 2)
    assert doc.expires_at == now + timedelta(seconds=120) and doc.reason == "5 failures within 30s"
    assert doc.rejects_all
    fresh = circuit_document(DEFAULT, None, "x", now)
    assert fresh.state == "closed" and fresh.expires_at == now + timedelta(seconds=180)
