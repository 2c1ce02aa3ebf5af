"""Sluice producer SDK: a confluent-kafka producer that obeys the operator's decisions.

``ThrottledProducer`` wraps ``confluent_kafka.Producer``; a decision source (``DirectoryDecisions``
for a mounted ConfigMap or local mode, ``ConfigMapDecisions`` for the Kubernetes API watch,
``StaticDecisions`` for tests) feeds it the operator's documents.

Only the decision documents are imported eagerly: the operator imports ``sluice.decision`` and must
not pay for confluent-kafka, prometheus-client or the kubernetes client. Everything else is
imported on first use (``from sluice import ThrottledProducer`` works as usual).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from sluice.decision import CircuitState, Decision, PriorityDecision

if TYPE_CHECKING:
    from sluice.classify import Route, classify_delivery, classify_error, in_doubt
    from sluice.dlq import DeadLetter
    from sluice.errors import (
        CircuitOpenError,
        FatalProducerError,
        PacedError,
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
    from sluice.producer import ThrottledProducer
    from sluice.retry import RetryPolicy
    from sluice.sources.base import DecisionSource, SourceView, StaticDecisions
    from sluice.sources.configmap import ConfigMapDecisions
    from sluice.sources.directory import DirectoryDecisions

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Route": "sluice.classify",
    "classify_delivery": "sluice.classify",
    "classify_error": "sluice.classify",
    "in_doubt": "sluice.classify",
    "DeadLetter": "sluice.dlq",
    "CircuitOpenError": "sluice.errors",
    "FatalProducerError": "sluice.errors",
    "PacedError": "sluice.errors",
    "PermanentMessageError": "sluice.errors",
    "ProduceError": "sluice.errors",
    "ProducerClosedError": "sluice.errors",
    "RetryBudgetExceededError": "sluice.errors",
    "ShedError": "sluice.errors",
    "SluiceError": "sluice.errors",
    "StaleDecisionError": "sluice.errors",
    "TopicUnavailableError": "sluice.errors",
    "Outcomes": "sluice.outcomes",
    "ThrottledProducer": "sluice.producer",
    "RetryPolicy": "sluice.retry",
    "DecisionSource": "sluice.sources.base",
    "SourceView": "sluice.sources.base",
    "StaticDecisions": "sluice.sources.base",
    "ConfigMapDecisions": "sluice.sources.configmap",
    "DirectoryDecisions": "sluice.sources.directory",
}

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
    "PacedError",
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
    "in_doubt",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sluice' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
