"""Pieces shared by both resources: naming, the camelCase base model, conditions, metadata."""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonValue

from sluice.decision import API_VERSION, GROUP, PRIORITIES, VERSION, ApiVersion, Priority

#: The Prometheus and the Kafka model of a `PrometheusOrKafka`, and the spec model of a `KubeObject`.
P = TypeVar("P", bound=BaseModel)
K = TypeVar("K", bound=BaseModel)
S = TypeVar("S", bound=BaseModel)

__all__ = ["API_VERSION", "GROUP", "PRIORITIES", "VERSION", "ApiVersion", "Priority"]  # the wire contract's

#: Largest backlog threshold we accept; anything above is a typo, not a real lag.
MAX_BACKLOG = 1e12
#: Longest delay we accept in a spec: an hour. Longer is never a throttle, it is an outage.
MAX_DELAY_MS = 3_600_000
#: Kubernetes object names (DNS-1123 subdomain, as ConfigMap names require).
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


def cel_rules(*rules: tuple[str, str]) -> ConfigDict:
    """The `model_config` of a model with CEL rules, each (rule, message): what a structural schema
    alone cannot say. Pydantic merges it with the base model's config."""
    entries: list[JsonValue] = [{"rule": rule, "message": message} for rule, message in rules]
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": entries})


class SpecModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class StatusModel(BaseModel):
    """Status parts: camelCase on the wire, tolerant of fields written by newer operator versions."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class PrometheusOrKafka(SpecModel, Generic[P, K]):
    """Exactly one of `prometheus` or `kafka`: a policy's backlog source, a circuit's failure signal."""

    model_config = cel_rules(("has(self.prometheus) != has(self.kafka)", "set exactly one of prometheus or kafka"))
    #: The field that holds this model in its spec (``source``, ``signal``), for the error message.
    field_name: ClassVar[str]

    prometheus: P | None = None
    kafka: K | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PrometheusOrKafka[P, K]:
        if (self.prometheus is None) == (self.kafka is None):
            raise ValueError(f"set exactly one of {self.field_name}.prometheus or {self.field_name}.kafka")
        return self


ConditionType = Literal[
    "Ready", "Valid", "SignalAvailable", "Conflict", "PartialData", "Published", "ControlDegraded"
]


class Condition(StatusModel):
    """A Kubernetes-style condition (metav1.Condition shape)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(default="", max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: str | None = None
    observed_generation: int | None = None


class ObjectStatus(StatusModel):
    """What every kind's status starts with: the generation the operator last saw, and its conditions."""

    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


class SecretRef(SpecModel):
    """A Secret in the resource's own namespace (or the operator's, for cluster-scoped resources)."""

    name: str = Field(pattern=DNS1123_SUBDOMAIN, max_length=253)


class ObjectMeta(BaseModel):
    """The slice of metadata Sluice reads; everything else passes through untouched."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None
    generation: int | None = None
    uid: str | None = None
    labels: dict[str, str] | None = None


def dump(model: BaseModel) -> dict[str, Any]:
    """Serialize the way Kubernetes stores it: camelCase, no nulls."""
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


class KubeObject(SpecModel, Generic[S]):
    """The whole object as `kubectl apply` sends it; each kind narrows `kind` and types `spec`."""

    model_config = ConfigDict(alias_generator=None, extra="ignore", frozen=True)

    api_version: ApiVersion = Field(alias="apiVersion")
    kind: str
    metadata: ObjectMeta
    spec: S
