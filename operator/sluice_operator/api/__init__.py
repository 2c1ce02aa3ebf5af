"""The two custom resources as pydantic models: the single source of truth for the CRDs."""

from sluice_operator.api.circuit import CircuitBreaker, CircuitBreakerSpec, CircuitBreakerStatus
from sluice_operator.api.common import GROUP, PRIORITIES, VERSION, Condition, Priority
from sluice_operator.api.policy import BackpressurePolicy, BackpressurePolicySpec, BackpressurePolicyStatus

__all__ = [
    "GROUP",
    "PRIORITIES",
    "VERSION",
    "BackpressurePolicy",
    "BackpressurePolicySpec",
    "BackpressurePolicyStatus",
    "CircuitBreaker",
    "CircuitBreakerSpec",
    "CircuitBreakerStatus",
    "Condition",
    "Priority",
]
