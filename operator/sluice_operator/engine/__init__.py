"""The decision engine: pure functions of (spec, signal, time, memory), no I/O.

Nothing here imports kopf, kubernetes or a network client; time is passed in as epoch seconds.
That keeps the engine testable in microseconds and shared by the operator, `sluice decide`, the
simulator and the demo.

Policies::

    outcome = evaluate(spec_or_params, backlog_or_None, now, memory_or_None, signal="prometheus",
                       rates=Rates(consumed=mu_or_None, offered=(high, medium, low) or None))
    memory = outcome.memory                      # keep it; pass it to the next evaluate
    status_patch = policy_to_status(memory)      # ... and back: policy_from_status(status)
    doc = build_decision(outcome, namespace=..., name=..., now=aware_datetime, ttl_seconds=...)

Circuits::

    s = step(cb_spec, memory_or_None, now, "ok" | "fail" | "unknown")   # s.memory, s.transition
    circuit_to_status(s.memory); circuit_from_status(status)
    circuit_document(cb_spec, s.memory, name, aware_datetime)

One module per concern: zones (formulas), drain (the DrainTime rate loop), hysteresis, fallback,
smoothing, policy_state (memory and status), evaluate, document, circuit, params (spec compiled
once), clock (time resolution).
"""

from sluice_operator.engine.circuit import (
    CircuitMemory,
    CircuitResult,
    CircuitStep,
    CircuitTransition,
    circuit_document,
    step,
)
from sluice_operator.engine.circuit import from_status as circuit_from_status
from sluice_operator.engine.circuit import to_status as circuit_to_status
from sluice_operator.engine.document import build_decision
from sluice_operator.engine.drain import ControlMemory, Rates
from sluice_operator.engine.evaluate import Outcome, PriorityOutcome, ZoneChange, evaluate
from sluice_operator.engine.params import PolicyParams, compile_policy
from sluice_operator.engine.policy_state import PolicyMemory, PriorityMemory, seed
from sluice_operator.engine.policy_state import from_status as policy_from_status
from sluice_operator.engine.policy_state import to_status as policy_to_status

__all__ = [
    "CircuitMemory",
    "CircuitResult",
    "CircuitStep",
    "CircuitTransition",
    "ControlMemory",
    "Outcome",
    "PolicyMemory",
    "PolicyParams",
    "PriorityMemory",
    "PriorityOutcome",
    "Rates",
    "ZoneChange",
    "build_decision",
    "circuit_document",
    "circuit_from_status",
    "circuit_to_status",
    "compile_policy",
    "evaluate",
    "policy_from_status",
    "policy_to_status",
    "seed",
    "step",
]
