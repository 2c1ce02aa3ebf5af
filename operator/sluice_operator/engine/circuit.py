"""The circuit breaker state machine (pure; time passed in as epoch seconds).

States and moves, one move at most per `step`:

* ``closed`` -> ``open`` when ``failureThreshold`` failing evaluations fall within
  ``tripWindowSeconds`` (a failure counts while ``now - t <= tripWindowSeconds``; older ones age out).
  Healthy evaluations do not erase earlier failures: only time does.
* ``open`` -> ``half-open`` once ``recoveryTimeoutSeconds`` have passed since it opened. Checked on
  every step, whatever the result; the result of that step is not counted as a probe (producers
  were still fully blocked when it was taken).
* ``half-open`` -> ``closed`` after ``recoveryThreshold`` consecutive healthy evaluations;
  -> ``open`` on any failing one. ``closed`` never moves to ``half-open``.
* ``unknown`` (the signal is unavailable) is neither success nor failure: it neither counts toward
  a trip nor breaks or extends a run of healthy probes. Time-based moves still happen.
* An unexpired override (``now < until``, or no ``until``) moves to ``forced-open`` /
  ``forced-closed`` at once. When it ends, the machine does not return to the pre-override state,
  it takes the safer road back: ``forced-open`` -> ``open`` (the recovery timeout starts when the
  override ends, then half-open probing, so traffic never jumps from none to all);
  ``forced-closed`` -> ``closed``, keeping the failures seen during the override, so a dependency
  still failing trips the circuit on that very step (``forced-closed`` -> ``open``).

Every transition carries a reason; status keeps the last 10. The epoch increases on every
transition (the first memory has epoch 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sluice.decision import CircuitState, CircuitStateName
from sluice_operator.api.circuit import CircuitBreakerSpec, CircuitBreakerStatus, CircuitOverride
from sluice_operator.engine.clock import from_rfc3339, quantize, timestamp, to_rfc3339

__all__ = [
    "MAX_TRANSITIONS",
    "CircuitMemory",
    "CircuitResult",
    "CircuitStep",
    "CircuitTransition",
    "active_override",
    "circuit_document",
    "from_status",
    "step",
    "to_status",
]

CircuitResult = Literal["ok", "fail", "unknown"]
#: Transitions kept in memory and status.
MAX_TRANSITIONS = 10


@dataclass(frozen=True, slots=True)
class CircuitTransition:
    """One state change and why."""

    from_state: CircuitStateName
    to_state: CircuitStateName
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class CircuitMemory:
    """The whole state of one circuit; round-trips through CircuitBreakerStatus."""

    state: CircuitStateName
    since: float | None  # None only in a status written without it: taken as "now" on the next step
    failures: tuple[float, ...]  # failing evaluations still inside the trip window, oldest first
    successes: int  # consecutive healthy evaluations in half-open
    transitions: tuple[CircuitTransition, ...]  # the last MAX_TRANSITIONS, oldest first
    epoch: int
    last_evaluated: float | None


@dataclass(frozen=True, slots=True)
class CircuitStep:
    """The memory after a step and the transition it made, if any."""

    memory: CircuitMemory
    transition: CircuitTransition | None


def active_override(override: CircuitOverride, now: float) -> Literal["ForceOpen", "ForceClosed"] | None:
    """The override in force at `now`, if any."""
    if override.mode == "None":
        return None
    if override.until is not None and now >= timestamp(override.until):
        return None
    return override.mode


def _override_reason(override: CircuitOverride) -> str:
    text = f"override {override.mode}"
    if override.until is not None:
        text += f" until {to_rfc3339(timestamp(override.until))}"
    return f"{text}: {override.reason}" if override.reason else text


def _override_end_reason(override: CircuitOverride, was: str) -> str:
    if override.mode == was and override.until is not None:
        return f"override {was} expired at {to_rfc3339(timestamp(override.until))}"
    return f"override {was} removed"


def step(
    spec: CircuitBreakerSpec, memory: CircuitMemory | None, now: float, result: CircuitResult
) -> CircuitStep:
    """Advance the circuit by one evaluation whose outcome was `result` at `now`."""
    now = quantize(now)
    if memory is None:
        memory = CircuitMemory("closed", now, (), 0, (), 1, None)
    since = memory.since if memory.since is not None else now
    window = spec.trip_window_seconds
    threshold = spec.failure_threshold
    failures = tuple(t for t in memory.failures if now - t <= window)
    successes = memory.successes
    state: CircuitStateName = memory.state
    new_state: CircuitStateName = state
    reason = ""

    forced = active_override(spec.override, now)
    if forced is not None:
        if result == "fail":
            failures = (*failures, now)[-threshold:]
        target: CircuitStateName = "forced-open" if forced == "ForceOpen" else "forced-closed"
        if state != target:
            new_state, reason, successes = target, _override_reason(spec.override), 0
    elif state == "forced-open":
        new_state, failures, successes = "open", (), 0
        reason = _override_end_reason(spec.override, "ForceOpen") + "; recovery timeout starts now"
    elif state in ("closed", "forced-closed"):
        if result == "fail":
            failures = (*failures, now)[-threshold:]
        if result == "fail" and len(failures) >= threshold:
            new_state, reason = "open", f"{len(failures)} failures within {window:g}s"
            failures, successes = (), 0
        elif state == "forced-closed":
            new_state = "closed"
        if state == "forced-closed":
            ended = _override_end_reason(spec.override, "ForceClosed")
            reason = f"{ended}; {reason}" if reason else ended
    elif state == "open":
        if now - since >= spec.recovery_timeout_seconds:
            new_state, reason = "half-open", f"recovery timeout {spec.recovery_timeout_seconds:g}s elapsed"
            failures, successes = (), 0
    elif result == "ok":  # half-open
        successes += 1
        if successes >= spec.recovery_threshold:
            new_state, reason = "closed", f"{successes} consecutive healthy probes"
            failures, successes = (), 0
    elif result == "fail":
        new_state, reason, failures, successes = "open", "probe failed in half-open", (), 0

    transition = None
    transitions = memory.transitions
    epoch = memory.epoch
    if new_state != state:
        transition = CircuitTransition(state, new_state, now, reason)
        transitions = (*transitions, transition)[-MAX_TRANSITIONS:]
        since = now
        epoch += 1
    return CircuitStep(
        CircuitMemory(
            state=new_state,
            since=since,
            failures=failures,
            successes=successes,
            transitions=transitions,
            epoch=epoch,
            last_evaluated=now,
        ),
        transition,
    )


def to_status(memory: CircuitMemory) -> dict[str, Any]:
    """The CircuitBreakerStatus fields that hold `memory` (merge them into the status)."""
    return {
        "state": memory.state,
        "since": None if memory.since is None else to_rfc3339(memory.since),
        "failureCount": len(memory.failures),
        "successCount": memory.successes,
        "recentFailures": [to_rfc3339(t) for t in memory.failures],
        "lastTransitions": [
            {"from": t.from_state, "to": t.to_state, "at": to_rfc3339(t.at), "reason": t.reason}
            for t in memory.transitions
        ],
        "epoch": memory.epoch,
        "lastEvaluated": None if memory.last_evaluated is None else to_rfc3339(memory.last_evaluated),
    }


def _state_name(text: str) -> CircuitStateName:
    names: tuple[CircuitStateName, ...] = ("closed", "open", "half-open", "forced-open", "forced-closed")
    for name in names:
        if text == name:
            return name
    raise ValueError(f"unknown circuit state {text!r}")


def from_status(status: Mapping[str, Any] | None) -> CircuitMemory | None:
    """The memory held in `status`; None for a circuit never evaluated.

    Raises pydantic.ValidationError or ValueError when the status is malformed.
    """
    if not status:
        return None
    st = CircuitBreakerStatus.model_validate(dict(status))
    if "state" not in status and st.epoch == 0:
        return None
    return CircuitMemory(
        state=st.state,
        since=None if st.since is None else from_rfc3339(st.since),
        failures=tuple(from_rfc3339(t) for t in st.recent_failures),
        successes=st.success_count,
        transitions=tuple(
            CircuitTransition(_state_name(t.from_state), _state_name(t.to_state), from_rfc3339(t.at), t.reason)
            for t in st.last_transitions
        )[-MAX_TRANSITIONS:],
        epoch=st.epoch,
        last_evaluated=None if st.last_evaluated is None else from_rfc3339(st.last_evaluated),
    )


def circuit_document(
    spec: CircuitBreakerSpec,
    memory: CircuitMemory | None,
    name: str,
    now: datetime,
    ttl_seconds: float | None = None,
) -> CircuitState:
    """The ``circuit.json`` document; `now` must be timezone-aware, TTL defaults to spec.ttlSeconds."""
    ttl = spec.ttl_seconds if ttl_seconds is None else ttl_seconds
    return CircuitState(
        name=name,
        state=memory.state if memory is not None else "closed",
        probe_ratio=spec.half_open_probe_ratio,
        epoch=memory.epoch if memory is not None else 0,
        generated_at=now,
        expires_at=now + timedelta(seconds=ttl),
        reason=memory.transitions[-1].reason if memory is not None and memory.transitions else None,
    )
