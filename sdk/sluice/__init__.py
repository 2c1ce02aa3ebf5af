"""Sluice producer SDK: a confluent-kafka producer that obeys the operator's decisions."""

from sluice.decision import CircuitState, Decision, PriorityDecision

__version__ = "0.1.0"

__all__ = ["CircuitState", "Decision", "PriorityDecision", "__version__"]
