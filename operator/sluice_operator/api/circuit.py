"""CircuitBreaker: a cluster-wide switch that makes producers fail fast while a dependency is down."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, model_validator

from sluice_operator.api.common import (
    DNS1123_LABEL,
    KubeObject,
    ObjectStatus,
    PrometheusOrKafka,
    SecretRef,
    SpecModel,
    StatusModel,
    cel_rules,
)

CircuitStateName = Literal["closed", "open", "half-open", "forced-open", "forced-closed"]
#: Bounded strings and lists keep the API server's CEL cost estimate finite.
LabelValue = Annotated[str, Field(max_length=63)]
NamespaceName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS1123_LABEL)]


class FailWhen(SpecModel):
    """An evaluation fails when the signal is strictly above this value."""

    above: float = Field(ge=-1e15, le=1e15)


class PrometheusSignal(SpecModel):
    """A PromQL query (an error ratio or count) compared with `failWhen` at every evaluation."""

    query: str = Field(min_length=1, max_length=4096)
    fail_when: FailWhen
    aggregate: Literal["max", "sum"] | None = None
    timeout_seconds: float = Field(default=3, gt=0, le=60)


class KafkaSignal(SpecModel):
    """A health probe: an evaluation fails when a metadata request fails or times out."""

    bootstrap_servers: str = Field(min_length=1, max_length=2048)
    secret_ref: SecretRef | None = None
    secret_namespace: str | None = Field(default=None, pattern=DNS1123_LABEL, max_length=63)
    timeout_seconds: float = Field(default=3, gt=0, le=60)


class Signal(PrometheusOrKafka[PrometheusSignal, KafkaSignal]):
    """Exactly one failure signal."""

    field_name = "signal"


class LabelSelectorRequirement(SpecModel):
    """metav1.LabelSelectorRequirement."""

    key: str = Field(min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs a non-empty values list")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no values")
        return self


class LabelSelector(SpecModel):
    """metav1.LabelSelector."""

    match_labels: dict[str, LabelValue] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = Field(default=None, max_length=100)


class CircuitOverride(SpecModel):
    """A manual override; one whose `until` has passed is ignored."""

    mode: Literal["None", "ForceOpen", "ForceClosed"] = "None"
    until: datetime | None = None
    reason: str | None = Field(default=None, max_length=1024)


class CircuitBreakerSpec(SpecModel):
    """When to open, how to recover, and which namespaces see the state."""

    model_config = cel_rules(
        ("self.halfOpenProbeRatio > 0.0 && self.halfOpenProbeRatio <= 1.0", "halfOpenProbeRatio must be in (0, 1]"),
        ("has(self.namespaceSelector) || (has(self.namespaces) && size(self.namespaces) > 0)",
         "set namespaceSelector and/or namespaces: where the circuit state is published"),
    )

    signal: Signal
    failure_threshold: int = Field(default=5, ge=1, le=10000)
    trip_window_seconds: float = Field(default=30, gt=0, le=86400)
    recovery_timeout_seconds: float = Field(default=60, ge=0, le=86400)
    probe_interval_seconds: float = Field(default=5, ge=1, le=3600)
    recovery_threshold: int = Field(default=3, ge=1, le=10000)
    half_open_probe_ratio: float = Field(default=0.1, gt=0, le=1)
    namespace_selector: LabelSelector | None = None
    namespaces: list[NamespaceName] | None = Field(default=None, max_length=1000)
    override: CircuitOverride = CircuitOverride()
    ttl_seconds: float = Field(default=180, ge=30, le=86400)

    @model_validator(mode="after")
    def _publishes_somewhere(self) -> CircuitBreakerSpec:
        if self.namespace_selector is None and not self.namespaces:
            raise ValueError("set namespaceSelector and/or namespaces: where the circuit state is published")
        return self


class Transition(StatusModel):
    """One state change, kept in status for `kubectl describe`."""

    from_state: str = Field(alias="from")
    to_state: str = Field(alias="to")
    at: str
    reason: str


class CircuitBreakerStatus(ObjectStatus):
    """The circuit's state; the state machine restores itself from here after a restart."""

    state: CircuitStateName = "closed"
    since: str | None = None
    failure_count: int = 0
    success_count: int = 0
    recent_failures: list[str] = Field(default_factory=list)
    last_transitions: list[Transition] = Field(default_factory=list)
    epoch: int = 0
    last_evaluated: str | None = None
    published_namespaces: list[str] = Field(default_factory=list)


class CircuitBreaker(KubeObject[CircuitBreakerSpec]):
    """The whole object as `kubectl apply` sends it."""

    kind: Literal["CircuitBreaker"]
