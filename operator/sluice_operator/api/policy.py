"""BackpressurePolicy: where the backlog signal comes from and how it maps to throttle decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, model_validator

from sluice_operator.api.common import (
    DNS1123_SUBDOMAIN,
    MAX_BACKLOG,
    MAX_DELAY_MS,
    KubeObject,
    ObjectStatus,
    Priority,
    PrometheusOrKafka,
    SecretRef,
    SpecModel,
    StatusModel,
    cel_rules,
)
from sluice_operator.api.control import Control

Aggregate = Literal["max", "sum"]
EmptyResult = Literal["unavailable", "zero"]
Zone = Literal["green", "yellow", "red"]
#: A Kafka topic name; the bound also keeps the API server's CEL cost estimate finite.
TopicName = Annotated[str, Field(min_length=1, max_length=249)]


class PrometheusSource(SpecModel):
    """Backlog from PromQL: a raw `query`, or `consumerGroup` + `topics` built from the admin's template."""

    model_config = cel_rules(
        ("has(self.query) != (has(self.consumerGroup) && has(self.topics))",
         "set either query, or consumerGroup and topics (not both)"),
        ("has(self.consumerGroup) == has(self.topics)", "consumerGroup and topics go together"),
    )

    query: str | None = Field(default=None, min_length=1, max_length=4096)
    consumer_group: str | None = Field(default=None, min_length=1, max_length=249)
    topics: list[TopicName] | None = Field(default=None, min_length=1, max_length=100)
    aggregate: Aggregate | None = None
    empty_result: EmptyResult = "unavailable"
    #: PromQL for the consumer's drain rate in msgs/s (DrainTime control). Default, with
    #: consumerGroup + topics: the admin's consumption template (kafka-exporter: the rate of the
    #: group's committed offsets). A raw query follows SLUICE_RAW_QUERY_NAMESPACES.
    consumption_query: str | None = Field(default=None, min_length=1, max_length=4096)

    @model_validator(mode="after")
    def _one_form(self) -> PrometheusSource:
        structured = self.consumer_group is not None or self.topics is not None
        if self.query is not None and structured:
            raise ValueError("set either query, or consumerGroup and topics, not both")
        if self.query is None and not (self.consumer_group and self.topics):
            raise ValueError("set either query, or both consumerGroup and topics")
        return self


class KafkaSource(SpecModel):
    """Backlog straight from Kafka: high watermarks minus the group's committed offsets."""

    bootstrap_servers: str = Field(min_length=1, max_length=2048)
    consumer_group: str = Field(min_length=1, max_length=249)
    topics: list[TopicName] = Field(min_length=1, max_length=100)
    secret_ref: SecretRef | None = None
    timeout_seconds: float = Field(default=3.0, gt=0, le=60)


class Source(PrometheusOrKafka[PrometheusSource, KafkaSource]):
    """Exactly one signal source."""

    field_name = "source"


class Window(SpecModel):
    """Backlog thresholds of one priority: green < yellow < red."""

    model_config = cel_rules(
        ("self.green < self.yellow && self.yellow < self.red", "thresholds must increase: green < yellow < red")
    )

    green: float = Field(ge=0, le=MAX_BACKLOG)
    yellow: float = Field(ge=0, le=MAX_BACKLOG)
    red: float = Field(ge=0, le=MAX_BACKLOG)

    @model_validator(mode="after")
    def _increasing(self) -> Window:
        if not (self.green < self.yellow < self.red):
            raise ValueError(
                f"thresholds must increase: green ({self.green:g}) < yellow ({self.yellow:g}) "
                f"< red ({self.red:g})"
            )
        return self


class Thresholds(SpecModel):
    """Per-priority windows; higher priorities tolerate more backlog before they slow down."""

    high: Window = Window(green=1000, yellow=5000, red=10000)
    medium: Window = Window(green=500, yellow=2000, red=5000)
    low: Window = Window(green=100, yellow=500, red=1000)


class DelayRange(SpecModel):
    """Delay interpolated from minMs at the bottom of a zone to maxMs at its top."""

    model_config = cel_rules(("self.minMs <= self.maxMs", "minMs must be <= maxMs"))

    min_ms: int = Field(ge=0, le=MAX_DELAY_MS)
    max_ms: int = Field(ge=0, le=MAX_DELAY_MS)

    @model_validator(mode="after")
    def _ordered(self) -> DelayRange:
        if self.min_ms > self.max_ms:
            raise ValueError(f"minMs ({self.min_ms}) must be <= maxMs ({self.max_ms})")
        return self


class Delays(SpecModel):
    """Delay ranges of the yellow and red zones (red is further scaled per priority)."""

    yellow: DelayRange = DelayRange(min_ms=10, max_ms=500)
    red: DelayRange = DelayRange(min_ms=500, max_ms=5000)


class PriorityScale(SpecModel):
    """Multiplier on red-zone delays per priority."""

    high: float = Field(default=0.5, ge=0, le=100)
    medium: float = Field(default=1.0, ge=0, le=100)
    low: float = Field(default=1.5, ge=0, le=100)


class Shedding(SpecModel):
    """Which priorities are dropped, and how deep into red before they are."""

    priorities: list[Priority] = Field(default_factory=lambda: list[Priority](["low"]), max_length=3)
    red_ratio_above: float = Field(default=0.8, ge=0, le=1)


class Hysteresis(SpecModel):
    """Leave a zone downward only below its threshold minus margin, and after a minimum dwell."""

    margin: float = Field(default=0.1, ge=0, lt=1)
    min_dwell_seconds: float = Field(default=30, ge=0, le=86400)


class Smoothing(SpecModel):
    """Damping of the control loop: an EWMA on the backlog and a cap on how fast delays relax."""

    # A mild EWMA by default (a backlog step is 91 % through after two polls): it keeps a backlog that
    # hovers at a threshold from flapping zones; bench/control_quality.py measures the trade-off.
    alpha: float = Field(default=0.7, gt=0, le=1)
    max_relax_ratio_per_interval: float = Field(default=1.0, gt=0, le=1)


class Polling(SpecModel):
    """How often the signal is read; the timeout must stay below the interval."""

    model_config = cel_rules(
        ("self.timeoutSeconds < self.intervalSeconds", "timeoutSeconds must be < intervalSeconds")
    )

    interval_seconds: float = Field(default=5, ge=1, le=3600)
    jitter_seconds: float = Field(default=1, ge=0, le=600)
    timeout_seconds: float = Field(default=3, gt=0, le=600)

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> Polling:
        if self.timeout_seconds >= self.interval_seconds:
            raise ValueError(
                f"timeoutSeconds ({self.timeout_seconds:g}) must be < intervalSeconds ({self.interval_seconds:g})"
            )
        return self


class ConservativeDelays(SpecModel):
    """Delays applied while the signal is unknown (and by producers holding a stale document)."""

    high: int = Field(default=100, ge=0, le=MAX_DELAY_MS)
    medium: int = Field(default=500, ge=0, le=MAX_DELAY_MS)
    low: int = Field(default=1000, ge=0, le=MAX_DELAY_MS)


class Fallback(SpecModel):
    """What to publish while the signal is unavailable."""

    mode: Literal["LastKnown", "Conservative", "Permissive"] = "LastKnown"
    stale_after_seconds: float = Field(default=60, ge=0, le=86400)
    conservative: ConservativeDelays = ConservativeDelays()


class PolicyOverride(SpecModel):
    """A manual override; one whose `until` has passed is ignored."""

    mode: Literal["None", "Disable", "ForceRed"] = "None"
    until: datetime | None = None
    reason: str | None = Field(default=None, max_length=1024)


class Output(SpecModel):
    """Where the decision is published (always the policy's own namespace)."""

    config_map_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    ttl_seconds: float = Field(default=180, ge=30, le=86400)


class Compliance(SpecModel):
    """Check that producers apply the current decision, from their metrics in Prometheus."""

    #: PromQL with one series per producer whose value is the epoch it applies. Default: the SDK's
    #: sluice_producer_applied_epoch of this policy. A raw query follows SLUICE_RAW_QUERY_NAMESPACES.
    query: str | None = Field(default=None, min_length=1, max_length=4096)
    interval_seconds: float = Field(default=30, ge=1, le=3600)


class BackpressurePolicySpec(SpecModel):
    """The desired throttling behaviour of one consumer group's producers."""

    source: Source
    thresholds: Thresholds = Thresholds()
    delays: Delays = Delays()
    priority_scale: PriorityScale = PriorityScale()
    shedding: Shedding = Shedding()
    hysteresis: Hysteresis = Hysteresis()
    smoothing: Smoothing = Smoothing()
    polling: Polling = Polling()
    fallback: Fallback = Fallback()
    enforcement: Literal["Enforce", "Observe"] = "Enforce"
    override: PolicyOverride = PolicyOverride()
    output: Output = Output()
    circuit_breaker_ref: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN, max_length=253)
    compliance: Compliance | None = None
    control: Control = Control()


class PriorityStatus(StatusModel):
    """The published decision of one priority, and since when it has been in its zone."""

    zone: Zone = "green"
    delay_ms: int = 0
    shed: bool = False
    ratio: float = 0.0
    since: str | None = None


class PolicyPriorities(StatusModel):
    high: PriorityStatus = PriorityStatus()
    medium: PriorityStatus = PriorityStatus()
    low: PriorityStatus = PriorityStatus()


class ComplianceStatus(StatusModel):
    """How many producers report on the policy, and how many apply its current epoch."""

    producers: int = 0
    on_current_epoch: int = 0
    ratio: float | None = None
    oldest_epoch: int | None = None
    epoch: int = 0
    summary: str | None = None
    checked_at: str | None = None


class PriorityRates(StatusModel):
    high: float = 1.0
    medium: float = 1.0
    low: float = 1.0


class ControlStatus(StatusModel):
    """The DrainTime loop's measurements and state (also its memory across restarts)."""

    mode: Literal["Zones", "DrainTime"] = "Zones"
    consumption_rate: float | None = None  # mu-hat, smoothed (msgs/s)
    allowed_rate: float | None = None  # R (msgs/s)
    integral: float = 0.0  # the PI integral term (msgs/s)
    degraded: str | None = None  # why DrainTime fell back to Zones (None: it did not)
    pacing: bool = False  # the decision carries admitRatio
    admit_ratios: PriorityRates | None = None  # the published admitRatio per priority
    offered_rates: PriorityRates | None = None  # lambda-hat per priority (msgs/s)


class BackpressurePolicyStatus(ObjectStatus):
    """What the operator last decided; also the engine's memory across restarts."""

    priorities: PolicyPriorities | None = None
    backlog: float | None = None
    smoothed_backlog: float | None = None
    source: Literal["prometheus", "kafka", "fallback", "override"] | None = None
    epoch: int = 0
    last_evaluated: str | None = None
    last_good_at: str | None = None
    published_at: str | None = None
    config_map_name: str | None = None
    enforcement: Literal["Enforce", "Observe"] | None = None
    compliance: ComplianceStatus | None = None
    control: ControlStatus | None = None


class BackpressurePolicy(KubeObject[BackpressurePolicySpec]):
    """The whole object as `kubectl apply` sends it."""

    kind: Literal["BackpressurePolicy"]
