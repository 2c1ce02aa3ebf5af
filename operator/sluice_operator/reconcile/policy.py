"""One BackpressurePolicy evaluation: signal -> engine -> decision document -> ConfigMap + status.

Writes happen only when what producers act on changes (timestamps and backlog do not count), plus a
refresh once a third of the document's TTL has passed, so a healthy operator never lets a decision
expire and a steady policy costs no API writes in between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from sluice.decision import DECISION_KEY, VOLATILE_FIELDS, CircuitState, Decision, fingerprint, to_json
from sluice_operator import engine
from sluice_operator.api.common import API_VERSION, PRIORITIES
from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.engine.document import REFRESH_FRACTION
from sluice_operator.kube import ApiError
from sluice_operator.metrics import ZONE_VALUE
from sluice_operator.publish.configmap import POLICY_LABEL, Owner
from sluice_operator.publish.events import Event
from sluice_operator.publish.names import policy_configmap
from sluice_operator.publish.outcome import PublishOutcome
from sluice_operator.reconcile.compliance import check_compliance
from sluice_operator.reconcile.conditions import Conditions, rfc3339
from sluice_operator.reconcile.cycle import Cycle
from sluice_operator.reconcile.policy_conditions import (
    control_condition,
    fmt_count,
    policy_event,
    publish_conditions,
    signal_conditions,
)
from sluice_operator.reconcile.rates import KafkaPosition, read_rates
from sluice_operator.scheduler import ScheduleEntry, jittered
from sluice_operator.sources.reading import Reading
from sluice_operator.validation import spec_or_none, validation_message

log = logging.getLogger(__name__)

#: Back off this long after the namespace refused writes (Terminating): no retry storm.
TERMINATING_BACKOFF = 60.0


#: The Decision fields `fingerprint` hashes (all but the volatile ones), by attribute name.
_STABLE_FIELDS = tuple(f for f, info in Decision.model_fields.items() if (info.alias or f) not in VOLATILE_FIELDS)
_STABLE_CIRCUIT_FIELDS = tuple(
    f for f, info in CircuitState.model_fields.items() if (info.alias or f) not in VOLATILE_FIELDS)


def _stable(doc: Decision) -> tuple[Any, ...]:
    """What `fingerprint(doc)` depends on, as a value that compares equal only when that is the same."""
    circuit = doc.circuit
    return (*(getattr(doc, f) for f in _STABLE_FIELDS if f != "circuit"),
            None if circuit is None else tuple(getattr(circuit, f) for f in _STABLE_CIRCUIT_FIELDS))


class FingerprintMemo:
    """`fingerprint()` of the last document, reused while its producer-facing content is the same.

    Hashing the canonical JSON of every candidate cost a steady cycle more than the evaluation;
    comparing the fields it covers (nested models compare field by field) is a few microseconds.
    """

    __slots__ = ("_basis", "_value")

    def __init__(self) -> None:
        self._basis: tuple[Any, ...] | None = None
        self._value = ""

    def of(self, doc: Decision) -> str:
        basis = _stable(doc)
        if basis != self._basis:
            self._basis, self._value = basis, fingerprint(doc)
        return self._value


@dataclass
class PolicyState:
    """What the operator remembers about one policy between cycles (restored from status)."""

    namespace: str
    name: str
    uid: str | None
    memory: engine.PolicyMemory | None = None
    conditions: Conditions = field(default_factory=Conditions)
    epoch: int = 0
    fingerprint: str | None = None
    published_at: float | None = None  # monotonic
    signal_ok: bool | None = None
    fallback: bool = False
    backoff_until: float = 0.0
    status: dict[str, Any] = field(default_factory=dict)
    status_dirty: bool = False  # the last status write failed: write again next cycle
    first_seen: float | None = None  # wall clock of the first evaluation (signal never readable yet)
    compliance: dict[str, Any] | None = None  # status.compliance (spec.compliance)
    compliance_due: float = 0.0  # monotonic
    kafka_position: KafkaPosition | None = None  # kafka mode's last committed position (DrainTime)
    fingerprints: FingerprintMemo = field(default_factory=FingerprintMemo, repr=False, compare=False)

    @classmethod
    def restore(cls, namespace: str, name: str, uid: str | None, status: Any) -> PolicyState:
        status = dict(status or {})
        state = cls(namespace=namespace, name=name, uid=uid)
        state.conditions = Conditions.from_status(status)
        state.epoch = int(status.get("epoch") or 0)
        if status.get("priorities"):
            try:
                state.memory = engine.policy_from_status(status)
            except (KeyError, TypeError, ValueError) as error:
                log.warning("ignoring unreadable status of %s/%s: %s", namespace, name, error)
        signal = state.conditions.get("SignalAvailable")
        state.signal_ok = None if signal is None else signal.get("status") == "True"
        return state


@dataclass(frozen=True)
class CycleResult:
    published: PublishOutcome | None
    status_written: bool
    decision: Decision | None
    reading: Reading


@dataclass(eq=False, kw_only=True)
class PolicyCycle(Cycle):
    """Runs one evaluation of a policy; shared by cluster and local mode."""

    circuits: Callable[[str], CircuitState | None] = lambda _name: None

    async def run(self, state: PolicyState, spec: BackpressurePolicySpec, generation: int | None) -> CycleResult:
        started = self.clock()
        reading, kind = await self.signals.read_policy(state.namespace, spec)
        emits: list[Event] = []
        conditions_changed = signal_conditions(state, reading, generation, emits)

        now_wall = self.wallclock()
        backlog = reading.value if reading.ok else None
        rates = None
        if spec.control.mode == "DrainTime" and reading.ok:
            rates, _problem, state.kafka_position = await read_rates(
                self.signals, state.namespace, state.name, spec, reading, state.kafka_position, self.clock()
            )
        outcome = engine.evaluate(spec, backlog, now_wall.timestamp(), state.memory, signal=kind, rates=rates)
        conditions_changed |= control_condition(state, spec, outcome, generation, emits)
        circuit = self.circuits(spec.circuit_breaker_ref) if spec.circuit_breaker_ref else None
        configmap = spec.output.config_map_name or policy_configmap(state.name)
        # Built at the epoch it keeps when nothing changed (the steady case: no copy); the fingerprint
        # ignores the epoch, and a change bumps it below.
        candidate = engine.build_decision(
            outcome, namespace=state.namespace, name=state.name, now=now_wall,
            ttl_seconds=spec.output.ttl_seconds, epoch=max(state.epoch, 1), circuit=circuit,
        )
        new_fingerprint = state.fingerprints.of(candidate)
        changed = new_fingerprint != state.fingerprint
        refresh_due = state.published_at is None or (
            self.clock() - state.published_at >= spec.output.ttl_seconds * REFRESH_FRACTION
        )
        epoch = state.epoch + 1 if changed else max(state.epoch, 1)
        decision = candidate if epoch == candidate.epoch else candidate.model_copy(update={"epoch": epoch})

        for priority, old, new in outcome.zone_changes:
            emits.append(policy_event(state, "Normal" if new == "green" else "Warning", "ZoneChanged",
                                f"{priority} priority: {old} -> {new} at backlog {fmt_count(backlog)}"))
        if outcome.fallback_engaged and not state.fallback:
            emits.append(policy_event(state, "Warning", "FallbackEngaged",
                                f"signal unavailable; {spec.fallback.mode} fallback: {outcome.reason}"))
        state.fallback = outcome.fallback_engaged

        published: PublishOutcome | None = None
        if (changed or refresh_due) and self.clock() >= state.backoff_until and self.leading():
            owner = Owner(API_VERSION, "BackpressurePolicy", state.name, state.uid, POLICY_LABEL)
            result = await self.sink.publish(state.namespace, configmap, owner, {DECISION_KEY: to_json(decision)})
            published = result.outcome
            self.metrics.configmap_writes.labels(outcome=result.outcome.value).inc()
            conditions_changed |= publish_conditions(state, result.outcome, result.message, generation, emits)
            if result.outcome.wrote:
                summary = ", ".join(_summary(p, decision) for p in PRIORITIES)
                log.info("published epoch %d (%s, backlog %s): %s", epoch, decision.source, fmt_count(backlog), summary,
                         extra={"kind": "BackpressurePolicy", "namespace": state.namespace, "object": state.name})
            elif not result.outcome.ok:
                log.warning("not published: %s %s", result.outcome.value, result.message,
                            extra={"kind": "BackpressurePolicy", "namespace": state.namespace, "object": state.name})
            if result.outcome.ok:
                state.fingerprint = new_fingerprint
                state.epoch = epoch
                state.published_at = self.clock()
                state.memory = outcome.memory
            elif result.outcome is PublishOutcome.TERMINATING:
                state.backoff_until = self.clock() + TERMINATING_BACKOFF
        else:
            state.memory = outcome.memory

        conditions_changed |= await self._compliance(state, spec, generation)

        status_written = False
        if (published is not None and published.ok) or conditions_changed or state.status_dirty:
            if self.leading():
                status = self._status(state, spec, decision, outcome, backlog, generation, configmap)
                try:
                    status_written = await self.sink.write_status(
                        "backpressurepolicies", state.namespace, state.name, status
                    )
                    state.status_dirty = False
                except (ApiError, OSError, TimeoutError) as error:
                    state.status_dirty = True  # never lose a status: retried on the next cycle
                    log.warning("status of %s/%s not written (retrying next cycle): %s", state.namespace,
                                state.name, error, extra={"namespace": state.namespace, "object": state.name})
                state.status = status
        for event in emits:
            await self.events.emit(event)

        self._observe(state, decision, backlog, reading, kind, self.clock() - started)
        self._observe_more(state, spec, outcome, reading)
        return CycleResult(published, status_written, decision, reading)

    async def _compliance(self, state: PolicyState, spec: BackpressurePolicySpec, generation: int | None) -> bool:
        """Check producer compliance when due (spec.compliance); True when status must be written."""
        if spec.compliance is None:
            state.compliance = None
            return state.conditions.remove("Compliant")
        if state.epoch < 1 or self.clock() < state.compliance_due or not self.leading():
            return False
        state.compliance_due = self.clock() + spec.compliance.interval_seconds
        result = await check_compliance(self.signals, state.namespace, state.name, spec, state.epoch,
                                        rfc3339(self.wallclock()))
        changed = state.conditions.set("Compliant", *result.condition, generation)
        if result.status is not None:
            def same(doc: dict[str, Any] | None) -> dict[str, Any] | None:
                return None if doc is None else {k: v for k, v in doc.items() if k != "checkedAt"}
            changed |= same(result.status) != same(state.compliance)
            state.compliance = result.status
        return changed

    def _status(self, state: PolicyState, spec: BackpressurePolicySpec, decision: Decision, outcome: engine.Outcome,
                backlog: float | None, generation: int | None, configmap: str) -> dict[str, Any]:
        status: dict[str, Any] = dict(engine.policy_to_status(outcome.memory))
        status.update({
            "observedGeneration": generation,
            "conditions": state.conditions.as_list(),
            "backlog": backlog,
            "source": decision.source,
            "epoch": state.epoch,
            "lastEvaluated": rfc3339(self.wallclock()),
            "configMapName": configmap,
            "enforcement": spec.enforcement,
        })
        if state.published_at is not None:
            status["publishedAt"] = rfc3339(decision.generated_at)
        if state.compliance is not None:
            status["compliance"] = state.compliance
        return status

    def _observe(self, state: PolicyState, decision: Decision, backlog: float | None, reading: Reading,
                 kind: str, elapsed: float) -> None:
        m = self.metrics
        m.bound(m.evaluations, "BackpressurePolicy", "ok" if reading.ok else reading.status.value).inc()
        m.bound(m.evaluation_seconds, "BackpressurePolicy").observe(elapsed)
        if not reading.ok:
            m.bound(m.source_errors, kind, reading.reason or "Unknown").inc()
        series = m.policy(state.namespace, state.name)
        if backlog is not None:
            series.set(m.backlog, backlog)
        for priority in PRIORITIES:
            entry = decision.priorities.get(priority)
            series.set(m.zone, ZONE_VALUE[entry.zone], priority)
            series.set(m.delay_ms, entry.delay_ms, priority)


    def _observe_more(self, state: PolicyState, spec: BackpressurePolicySpec, outcome: engine.Outcome,
                      reading: Reading) -> None:
        """The gauges the dashboards and alerts read (docs/runbooks.md)."""
        m, ns, name = self.metrics, state.namespace, state.name
        series = m.policy(ns, name)
        memory = outcome.memory
        if memory.smoothed_backlog is not None:
            series.set(m.smoothed_backlog, memory.smoothed_backlog)
        for i, priority in enumerate(("high", "medium", "low")):
            window = getattr(spec.thresholds, priority)
            for zone in ("green", "yellow", "red"):
                series.set(m.threshold, getattr(window, zone), priority, zone)
            series.set(m.shed, 1 if memory.shed[i] else 0, priority)
            if spec.control.mode == "DrainTime":
                series.set(m.admit_ratio, memory.control.admit[i] if memory.pacing else 1.0, priority)
                offered = memory.control.offered
                series.set(m.offered_rate, float("nan") if offered is None else offered[i], priority)
        if spec.control.mode == "DrainTime":
            allowed, mu = outcome.allowed_rate, outcome.consumption_rate
            series.set(m.allowed_rate, float("nan") if allowed is None else allowed)
            series.set(m.consumption_rate, float("nan") if mu is None else mu)
        series.set(m.signal_available, 1 if reading.ok else 0)
        series.set(m.fallback, 1 if outcome.fallback_engaged else 0)
        series.set(m.epoch, state.epoch)
        series.set(m.stale_after, spec.fallback.stale_after_seconds)
        if memory.last_good_at is not None:
            series.set(m.last_good, memory.last_good_at)
        elif state.first_seen is None:
            state.first_seen = self.wallclock().timestamp()
            series.set(m.last_good, state.first_seen)
        m.set_conditions(ns, name, state.conditions.items.values())
        if state.compliance is not None:
            series.set(m.compliance_producers, state.compliance["producers"])
            ratio = state.compliance["ratio"]
            series.set(m.compliance_ratio, float("nan") if ratio is None else ratio)


def _summary(priority: str, decision: Decision) -> str:
    entry = decision.priorities.get(priority)  # type: ignore[arg-type]
    text = f"{priority}={entry.zone}/{entry.delay_ms}ms"
    if entry.admit_ratio is not None:
        text += f"/admit {entry.admit_ratio:g}"
    return text + ("/shed" if entry.shed else "")


class PolicyReconciler:
    """BackpressurePolicies, keyed by uid: parse once per generation, evaluate on their interval, forget.

    The cluster manager and local mode both feed it from the one Scheduler; only the sink differs.
    """

    kind: Final = "BackpressurePolicy"

    def __init__(self, cycle: PolicyCycle, *, default_interval: float,
                 raw_query_allowed: Callable[[str], bool] = lambda _namespace: True,
                 on_forget: Callable[[str, str], None] = lambda _namespace, _name: None) -> None:
        self.cycle = cycle
        self.default_interval = default_interval
        self.raw_query_allowed = raw_query_allowed
        self.on_forget = on_forget
        self.states: dict[str, PolicyState] = {}

    def state(self, entry: ScheduleEntry) -> PolicyState:
        state = self.states.get(entry.uid)
        if state is None:
            state = PolicyState.restore(entry.namespace or "default", entry.name, entry.uid, entry.body.get("status"))
            self.states[entry.uid] = state
        return state

    def forget(self, entry: ScheduleEntry) -> None:
        self.states.pop(entry.uid, None)
        self.on_forget(entry.namespace or "default", entry.name)

    async def validate(self, entry: ScheduleEntry) -> BackpressurePolicySpec | None:
        """Parse the spec of a new object or generation; say at once (status, Event) when it is unusable."""
        state = self.state(entry)
        generation = entry.generation
        parsed: BackpressurePolicySpec | None
        try:
            parsed = BackpressurePolicySpec.model_validate(entry.body.get("spec") or {})
        except ValidationError as error:
            message = validation_message(error, BackpressurePolicySpec)
            changed = state.conditions.set("Valid", "False", "InvalidSpec", message, generation)
            changed |= state.conditions.set("Ready", "False", "InvalidSpec", "fix the spec; nothing is published",
                                            generation)
            if changed and self.cycle.leading():
                await self.cycle.sink.write_status("backpressurepolicies", state.namespace, state.name, {
                    "observedGeneration": generation, "conditions": state.conditions.as_list()})
                await self.cycle.events.emit(policy_event(state, "Warning", "InvalidSpec", message))
            parsed = None
        else:
            source = parsed.source.prometheus
            if source is not None and source.query is not None and not self.raw_query_allowed(state.namespace):
                log.info("policy %s/%s uses a raw query in a namespace that may not", state.namespace, state.name)
        entry.parsed = (generation, parsed)
        return parsed

    async def evaluate(self, entry: ScheduleEntry) -> float | None:
        """One cycle; the seconds until the next, or None when the spec is unusable (nothing evaluated)."""
        state = self.state(entry)
        if not entry.parsed_for_current_generation():
            entry.parsed = (entry.generation, spec_or_none(BackpressurePolicySpec, entry.body.get("spec") or {}))
        parsed: BackpressurePolicySpec | None = entry.parsed[1] if entry.parsed else None
        if parsed is None:
            return None
        try:
            await self.cycle.run(state, parsed, entry.generation)
        except (ApiError, OSError, TimeoutError) as error:
            log.warning("cycle of %s/%s failed: %s", state.namespace, state.name, error,
                        extra={"namespace": state.namespace, "object": state.name})
        return jittered(parsed.polling.interval_seconds, parsed.polling.jitter_seconds)
