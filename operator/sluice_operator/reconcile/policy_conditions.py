"""The conditions a policy cycle sets (Valid, SignalAvailable, PartialData, Conflict, Ready,
ControlDegraded) and the Events that go with their transitions.

Kept apart from the cycle so each rule reads on its own; every function returns True when the
conditions changed (the cycle then writes status).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sluice_operator import engine
from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.publish.events import Event
from sluice_operator.publish.outcome import PublishOutcome
from sluice_operator.sources.reading import Reading, SignalStatus

if TYPE_CHECKING:
    from sluice_operator.reconcile.policy import PolicyState

__all__ = ["control_condition", "fmt_count", "policy_event", "publish_conditions", "signal_conditions"]


def policy_event(state: PolicyState, type_: str, reason: str, message: str) -> Event:
    """An Event about the policy `state` tracks."""
    return Event("BackpressurePolicy", state.namespace, state.name, state.uid,
                 "Warning" if type_ == "Warning" else "Normal", reason, message)


def fmt_count(value: float | None) -> str:
    """A backlog for humans ("unknown" when there is none)."""
    return "unknown" if value is None else f"{value:g}"


def signal_conditions(state: PolicyState, reading: Reading, generation: int | None,
                       emits: list[Event]) -> bool:
    changed = False
    if reading.status is SignalStatus.SPEC_ERROR:
        changed |= state.conditions.set("Valid", "False", reading.reason, reading.message, generation)
    else:
        changed |= state.conditions.set("Valid", "True", "SpecValid", "the spec is valid", generation)
    if reading.ok:
        changed |= state.conditions.set("SignalAvailable", "True", "SignalRead",
                                    f"backlog {fmt_count(reading.value)}", generation)
        if state.signal_ok is False:
            emits.append(policy_event(state, "Normal", "SignalRestored",
                                      f"backlog {fmt_count(reading.value)} read again"))
        state.signal_ok = True
    else:
        changed |= state.conditions.set("SignalAvailable", "False", reading.reason or "Unavailable",
                                    reading.message, generation)
        if state.signal_ok is not False:
            emits.append(policy_event(state, "Warning", "SignalLost", f"{reading.reason}: {reading.message}"))
        state.signal_ok = False
    if reading.partial:
        changed |= state.conditions.set("PartialData", "True", "PrometheusWarnings", reading.message, generation)
    else:
        changed |= state.conditions.remove("PartialData")
    return changed

def control_condition(state: PolicyState, spec: BackpressurePolicySpec, outcome: engine.Outcome,
                       generation: int | None, emits: list[Event]) -> bool:
    """ControlDegraded, for DrainTime policies only (a stable message: no status write per poll)."""
    if spec.control.mode != "DrainTime":
        return state.conditions.remove("ControlDegraded")
    degraded = outcome.control_degraded
    was = state.conditions.is_true("ControlDegraded")
    if degraded is not None:
        if not was:
            emits.append(policy_event(state, "Warning", "ControlDegraded",
                                      f"DrainTime falls back to Zones: {degraded}"))
        return state.conditions.set("ControlDegraded", "True", "RatesUnavailable",
                                f"DrainTime falls back to Zones: {degraded}", generation)
    if outcome.source == "override":
        return state.conditions.set("ControlDegraded", "False", "Override",
                                "an override decides; the rate loop waits", generation)
    if was:
        emits.append(policy_event(state, "Normal", "ControlRestored", "drain and offered rates read again"))
    return state.conditions.set("ControlDegraded", "False", "RatesRead",
                            "drain rate and offered rates read; admitting by priority", generation)

def publish_conditions(state: PolicyState, outcome: PublishOutcome, message: str,
                    generation: int | None, emits: list[Event]) -> bool:
    changed = False
    if outcome is PublishOutcome.CONFLICT:
        if not state.conditions.is_true("Conflict"):
            emits.append(policy_event(state, "Warning", "ConfigMapConflict", message))
        changed |= state.conditions.set("Conflict", "True", "UnmanagedConfigMap", message, generation)
        changed |= state.conditions.set("Ready", "False", "ConfigMapConflict", message, generation)
    elif outcome is PublishOutcome.TERMINATING:
        changed |= state.conditions.set("Ready", "False", "NamespaceTerminating",
                                    f"not publishing: {message}", generation)
    elif outcome is PublishOutcome.FAILED:
        changed |= state.conditions.set("Ready", "False", "PublishFailed", message, generation)
    else:
        changed |= state.conditions.remove("Conflict")
        valid = state.conditions.is_true("Valid")
        changed |= state.conditions.set(
            "Ready", "True" if valid else "False", "Published" if valid else "InvalidSpec",
            "decision published" if valid else "decision published from fallback; fix the spec", generation,
        )
    return changed

