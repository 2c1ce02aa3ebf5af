"""Sluice producer SDK: a confluent-kafka producer that obeys the operator's decisions.

``ThrottledProducer`` wraps ``confluent_kafka.Producer``; a decision source (``DirectoryDecisions``
for a mounted ConfigMap or local mode, ``ConfigMapDecisions`` for the Kubernetes API watch,
``StaticDecisions`` for tests) feeds it the operator's documents.
"""

from typing import TYPE_CHECKING, Any

from sluice.classify import Route, classify_delivery, classify_error
from sluice.decision import CircuitState, Decision, PriorityDecision
from sluice.dlq import DeadLetter
from sluice.errors import (
    CircuitOpenError,
    FatalProducerError,
    PermanentMessageError,
    ProduceError,
    ProducerClosedError,
    RetryBudgetExceededError,
    ShedError,
    SluiceError,
    StaleDecisionError,
    TopicUnavailableError,
)
from sluice.outcomes import Outcomes
from sluice.retry import RetryPolicy
from sluice.watch import DecisionSource, SourceView, StaticDecisions
from sluice.watch_dir import DirectoryDecisions

if TYPE_CHECKING:
    from sluice.producer import ThrottledProducer
    from sluice.watch_api import ConfigMapDecisions

__version__ = "0.1.0"

__all__ = [
    "CircuitOpenError",
    "CircuitState",
    "ConfigMapDecisions",
    "DeadLetter",
    "Decision",
    "DecisionSource",
    "DirectoryDecisions",
    "FatalProducerError",
    "Outcomes",
    "PermanentMessageError",
    "PriorityDecision",
    "ProduceError",
    "ProducerClosedError",
    "RetryBudgetExceededError",
    "RetryPolicy",
    "Route",
    "ShedError",
    "SluiceError",
    "SourceView",
    "StaleDecisionError",
    "StaticDecisions",
    "ThrottledProducer",
    "TopicUnavailableError",
    "__version__",
    "classify_delivery",
    "classify_error",
]


def __getattr__(name: str) -> Any:
    """Lazy imports: ``import sluice`` must not need confluent-kafka's producer setup or kubernetes."""
    if name == "ThrottledProducer":
        from sluice.producer import ThrottledProducer

        return ThrottledProducer
    if name == "ConfigMapDecisions":
        from sluice.watch_api import ConfigMapDecisions

        return ConfigMapDecisions
    raise AttributeError(f"module 'sluice' has no attribute {name!r}")
