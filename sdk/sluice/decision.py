"""The decision documents: the versioned wire contract between the operator and producers.

The operator writes a `Decision` (``decision.json``) per BackpressurePolicy and a `CircuitState`
(``circuit.json``) per CircuitBreaker into ConfigMaps; producers in any language read them. The JSON
Schemas in ``sluice/schemas/`` are generated from these models (a test fails on drift).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

#: The wire contract's names, defined here once; the operator imports them.
GROUP: Final = "sluice.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "sluice.dev/v1alpha1"
ApiVersion = Literal["sluice.dev/v1alpha1"]
KINDS: Final = ("BackpressurePolicy", "CircuitBreaker")
DECISION_KEY = "decision.json"
CIRCUIT_KEY = "circuit.json"
#: Must stay well above the kubelet's 60-90 s refresh of mounted ConfigMaps.
DEFAULT_TTL_SECONDS = 180.0

Priority = Literal["high", "medium", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "medium", "low")
Zone = Literal["green", "yellow", "red"]
CircuitStateName = Literal["closed", "open", "half-open", "forced-open", "forced-closed"]
DecisionSource = Literal["prometheus", "kafka", "fallback", "override"]
Enforcement = Literal["Enforce", "Observe"]
#: What a paced producer does with a message over its admitted rate (DrainTime control).
Excess = Literal["wait", "shed"]

#: Conservative delays (ms) a producer applies when it holds no fresh document at all.
BUILTIN_CONSERVATIVE_MS: dict[Priority, int] = {"high": 100, "medium": 500, "low": 1000}

#: Fields that change between evaluations without changing what a producer does.
VOLATILE_FIELDS = frozenset({"epoch", "generatedAt", "expiresAt", "backlog", "reason"})


class _Doc(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class PolicyRef(_Doc):
    namespace: str
    name: str


class PriorityDecision(_Doc):
    """What producers of one priority do now; `would*` say what Observe mode would have done.

    ``admitRatio`` (DrainTime control; absent means 1): each producer admits this fraction of its
    own offered rate of this priority, through a local token bucket. ``excess`` says what happens
    to a message that finds no token: ``wait`` (bounded by the producer's pacing deadline) or
    ``shed``. Both are additive in v1alpha1: an SDK that does not know them ignores them.
    """

    zone: Zone = "green"
    delay_ms: int = Field(default=0, ge=0)
    shed: bool = False
    would_delay_ms: int | None = Field(default=None, ge=0)
    would_shed: bool | None = None
    admit_ratio: float | None = Field(default=None, ge=0, le=1)
    excess: Excess | None = None
    would_admit_ratio: float | None = Field(default=None, ge=0, le=1)


class Priorities(_Doc):
    high: PriorityDecision = PriorityDecision()
    medium: PriorityDecision = PriorityDecision()
    low: PriorityDecision = PriorityDecision()

    def get(self, priority: Priority) -> PriorityDecision:
        """The decision of `priority` (a typed getattr)."""
        if priority == "high":
            return self.high
        if priority == "medium":
            return self.medium
        return self.low


class FallbackDelays(_Doc):
    """Delays (ms) a producer applies when this document has gone stale."""

    high: int = Field(default=BUILTIN_CONSERVATIVE_MS["high"], ge=0)
    medium: int = Field(default=BUILTIN_CONSERVATIVE_MS["medium"], ge=0)
    low: int = Field(default=BUILTIN_CONSERVATIVE_MS["low"], ge=0)

    def get(self, priority: Priority) -> int:
        return int(getattr(self, priority))


class CircuitState(_Doc):
    """A CircuitBreaker's state as producers see it (`circuit.json`, or embedded in a Decision)."""

    api_version: ApiVersion = API_VERSION
    kind: Literal["CircuitState"] = "CircuitState"
    name: str
    state: CircuitStateName
    probe_ratio: float = Field(default=0.1, ge=0, le=1)
    epoch: int = Field(default=0, ge=0)
    generated_at: AwareDatetime | None = None
    expires_at: AwareDatetime
    reason: str | None = None

    @property
    def rejects_all(self) -> bool:
        """Open circuits reject every message at once."""
        return self.state in ("open", "forced-open")


class Decision(_Doc):
    """One BackpressurePolicy's decision for every priority."""

    api_version: ApiVersion = API_VERSION
    kind: Literal["Decision"] = "Decision"
    policy: PolicyRef
    epoch: int = Field(ge=0)
    generated_at: AwareDatetime
    expires_at: AwareDatetime
    backlog: float | None = None
    source: DecisionSource
    enforcement: Enforcement = "Enforce"
    priorities: Priorities = Priorities()
    fallback: FallbackDelays = FallbackDelays()
    circuit: CircuitState | None = None
    reason: str | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def expiry(now: datetime, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> datetime:
    return now + timedelta(seconds=ttl_seconds)


def to_json(doc: Decision | CircuitState) -> str:
    """Canonical JSON: the same document always gives the same bytes (no needless ConfigMap writes)."""
    data = doc.model_dump(by_alias=True, exclude_none=True, mode="json")
    return json.dumps(data, sort_keys=True, indent=2) + "\n"


def parse_decision(text: str | bytes) -> Decision:
    """Parse `decision.json`; raises pydantic.ValidationError or ValueError on a bad document."""
    return Decision.model_validate_json(text)


def parse_circuit(text: str | bytes) -> CircuitState:
    """Parse `circuit.json`."""
    return CircuitState.model_validate_json(text)


def fingerprint(doc: Decision | CircuitState) -> str:
    """A hash of what a producer acts on: the document minus epoch and timestamps."""
    data: dict[str, Any] = doc.model_dump(by_alias=True, exclude_none=True, mode="json")
    for key in VOLATILE_FIELDS:
        data.pop(key, None)
    circuit = data.get("circuit")
    if isinstance(circuit, dict):
        for key in VOLATILE_FIELDS:
            circuit.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


SCHEMA_DIR = Path(__file__).parent / "schemas"
SCHEMA_FILES: dict[str, type[BaseModel]] = {
    "decision.schema.json": Decision,
    "circuit.schema.json": CircuitState,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schemas of both documents, as shipped for producers in other languages."""
    out: dict[str, dict[str, Any]] = {}
    for filename, model in SCHEMA_FILES.items():
        schema = model.model_json_schema(by_alias=True, mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://sluice.dev/schemas/{API_VERSION}/{filename}"
        out[filename] = schema
    return out


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Regenerate the committed schema files."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, schema in json_schemas().items():
        path = directory / filename
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_schemas():
        print(written_path)
