"""The decision engine: pure functions of (spec, signal, time, memory), no I/O.

Nothing here imports kopf, kubernetes or a network client; time is passed in as epoch seconds.
That keeps the engine testable in microseconds and shared by the operator, `sluice decide`, the
simulator and the demo.
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
    "Outcome",
    "PolicyMemory",
    "PolicyParams",
    "PriorityMemory",
    "PriorityOutcome",
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
