"""One CircuitBreaker evaluation: probe -> state machine -> status, Events, circuit.json everywhere.

The state lives in the CR status, so a restarted operator continues an open circuit instead of
closing it. Circuit ConfigMaps carry an ownerReference to the (cluster-scoped) CircuitBreaker, so the
garbage collector removes them with it; a namespace that stops being selected gets its ConfigMap
deleted by name. With watchNamespaces the operator publishes only where the chart grants it ConfigMaps
(`scope`), and says in the `Published` condition which selected namespaces it skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from sluice.decision import CIRCUIT_KEY, CircuitState, fingerprint, to_json
from sluice_operator import engine
from sluice_operator.api.circuit import CircuitBreakerSpec, LabelSelector
from sluice_operator.api.common import API_VERSION
from sluice_operator.engine.document import REFRESH_FRACTION
from sluice_operator.kube import ApiError
from sluice_operator.metrics import CIRCUIT_VALUE, transition_cause
from sluice_operator.publish.configmap import CIRCUIT_LABEL, Owner, owner_name
from sluice_operator.publish.events import Event
from sluice_operator.publish.names import circuit_configmap
from sluice_operator.publish.outcome import PublishOutcome
from sluice_operator.reconcile.conditions import Conditions, rfc3339
from sluice_operator.reconcile.cycle import Cycle
from sluice_operator.scheduler import ScheduleEntry
from sluice_operator.validation import validation_message

log = logging.getLogger(__name__)


def selector_matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics; a missing selector matches nothing (namespaces list only)."""
    if selector is None:
        return False
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.match_expressions or []:
        present = expression.key in labels
        found = labels.get(expression.key)
        if expression.operator == "In" and found not in (expression.values or []):
            return False
        if expression.operator == "NotIn" and present and found in (expression.values or []):
            return False
        if expression.operator == "Exists" and not present:
            return False
        if expression.operator == "DoesNotExist" and present:
            return False
    return True


def target_namespaces(spec: CircuitBreakerSpec, namespaces: Mapping[str, Mapping[str, str]],
                      terminating: Iterable[str] = ()) -> frozenset[str]:
    """Namespaces that exist, are not terminating, and are listed or selected."""
    gone = set(terminating)
    listed = set(spec.namespaces or [])
    return frozenset(
        ns for ns, labels in namespaces.items()
        if ns not in gone and (ns in listed or selector_matches(spec.namespace_selector, labels))
    )


def _counters(memory: engine.CircuitMemory | None) -> tuple[str, int, int] | None:
    return None if memory is None else (memory.state, len(memory.failures), memory.successes)


@dataclass
class CircuitBreakerState:
    """Per-circuit memory between probes (restored from status on start)."""

    name: str
    uid: str | None
    memory: engine.CircuitMemory | None = None
    conditions: Conditions = field(default_factory=Conditions)
    published: dict[str, tuple[str, float]] = field(default_factory=dict)  # ns -> (fingerprint, monotonic)
    signal_ok: bool | None = None
    swept: bool = False  # leftovers from before a restart removed once
    status_dirty: bool = False  # the last status write failed: write again next probe

    @classmethod
    def restore(cls, name: str, uid: str | None, status: Any) -> CircuitBreakerState:
        status = dict(status or {})
        runtime = cls(name=name, uid=uid)
        runtime.conditions = Conditions.from_status(status)
        if status.get("state"):
            try:
                runtime.memory = engine.circuit_from_status(status)
            except (KeyError, TypeError, ValueError) as error:
                log.warning("ignoring unreadable status of circuit %s: %s", name, error)
        return runtime


@dataclass(eq=False, kw_only=True)
class CircuitCycle(Cycle):
    """Runs one probe of a circuit and publishes its state where it is selected."""

    namespaces: Callable[[], tuple[Mapping[str, Mapping[str, str]], frozenset[str]]]
    scope: frozenset[str] | None = None  # namespaces we may write ConfigMaps in; None: all (a ClusterRole)

    @staticmethod
    def owner(name: str, uid: str | None) -> Owner:
        return Owner(API_VERSION, "CircuitBreaker", name, uid, CIRCUIT_LABEL)

    async def run(self, runtime: CircuitBreakerState, spec: CircuitBreakerSpec, generation: int | None) -> CircuitState:
        started = self.clock()
        result, detail = await self.signals.probe_circuit(spec)
        now = self.wallclock()
        step = engine.step(spec, runtime.memory, now.timestamp(), result)
        previous = runtime.memory
        runtime.memory = step.memory
        emits: list[Event] = []
        changed = self._conditions(runtime, result, detail, generation, emits)
        transition = step.transition
        if transition is not None:
            old, new, reason = transition.from_state, transition.to_state, transition.reason
            log.warning("circuit %s -> %s: %s", old, new, reason,
                        extra={"kind": "CircuitBreaker", "namespace": "", "object": runtime.name})
            self.metrics.circuit_transitions.labels(
                circuit=runtime.name, cause=transition_cause(reason), **{"from": old, "to": new}
            ).inc()
            emits.append(Event("CircuitBreaker", None, runtime.name, runtime.uid,
                               "Warning" if new in ("open", "forced-open") else "Normal",
                               "CircuitOpened" if new in ("open", "forced-open") else
                               "CircuitHalfOpen" if new == "half-open" else "CircuitClosed",
                               f"{old} -> {new}: {reason}"))
            changed = True
        elif _counters(previous) != _counters(step.memory):
            changed = True

        document = engine.circuit_document(spec, step.memory, runtime.name, now, spec.ttl_seconds)
        self.metrics.circuit_state.labels(circuit=runtime.name).set(CIRCUIT_VALUE.get(document.state, 0))
        self.metrics.circuit_failures.labels(circuit=runtime.name).set(len(step.memory.failures))
        self.metrics.circuit_failure_threshold.labels(circuit=runtime.name).set(spec.failure_threshold)

        if self.leading():
            changed |= await self._publish(runtime, spec, document, generation)
            if changed or runtime.status_dirty:
                status = dict(engine.circuit_to_status(step.memory))
                status.update({
                    "observedGeneration": generation,
                    "conditions": runtime.conditions.as_list(),
                    "lastEvaluated": rfc3339(now),
                    "publishedNamespaces": sorted(runtime.published),
                })
                try:
                    await self.sink.write_status("circuitbreakers", None, runtime.name, status)
                    runtime.status_dirty = False
                except (ApiError, OSError, TimeoutError) as error:
                    runtime.status_dirty = True  # the state must reach the status: an operator restart reads it
                    log.warning("status of circuit %s not written (retrying next probe): %s", runtime.name, error,
                                extra={"kind": "CircuitBreaker", "namespace": "", "object": runtime.name})
            for event in emits:
                await self.events.emit(event)
        self.metrics.evaluations.labels(kind="CircuitBreaker", result=result).inc()
        self.metrics.evaluation_seconds.labels(kind="CircuitBreaker").observe(self.clock() - started)
        return document

    def _conditions(self, runtime: CircuitBreakerState, result: str, detail: str, generation: int | None,
                    emits: list[Event]) -> bool:
        changed = runtime.conditions.set("Valid", "True", "SpecValid", "the spec is valid", generation)
        if result == "unknown":
            changed |= runtime.conditions.set("SignalAvailable", "False", "Unavailable", detail, generation)
            if runtime.signal_ok is not False:
                emits.append(Event("CircuitBreaker", None, runtime.name, runtime.uid, "Warning", "SignalLost",
                                   f"{detail}; the circuit holds its state until the signal returns"))
            runtime.signal_ok = False
        else:
            changed |= runtime.conditions.set("SignalAvailable", "True", "SignalRead", "", generation)
            if runtime.signal_ok is False:
                emits.append(Event("CircuitBreaker", None, runtime.name, runtime.uid, "Normal", "SignalRestored",
                                   detail))
            runtime.signal_ok = True
        changed |= runtime.conditions.set("Ready", "True", "Evaluating", "", generation)
        return changed

    async def _publish(self, runtime: CircuitBreakerState, spec: CircuitBreakerSpec, document: CircuitState,
                       generation: int | None) -> bool:
        """Write circuit.json where the circuit applies; True when the Published condition changed."""
        labels, terminating = self.namespaces()
        selected = target_namespaces(spec, labels, terminating)
        targets = selected if self.scope is None else selected & self.scope
        owner = self.owner(runtime.name, runtime.uid)
        configmap = circuit_configmap(runtime.name)
        text = to_json(document)
        doc_fp = fingerprint(document)
        now = self.clock()
        failed: list[str] = []
        for namespace in sorted(targets):
            last = runtime.published.get(namespace)
            if last is not None and last[0] == doc_fp and now - last[1] < spec.ttl_seconds * REFRESH_FRACTION:
                continue
            result = await self.sink.publish(namespace, configmap, owner, {CIRCUIT_KEY: text})
            self.metrics.configmap_writes.labels(outcome=result.outcome.value).inc()
            if result.outcome.ok:
                runtime.published[namespace] = (doc_fp, now)
            else:
                failed.append(f"{namespace}: {result.message}")
                if result.outcome is PublishOutcome.CONFLICT:
                    log.warning("circuit %s: %s", runtime.name, result.message)
        await self._unpublish(runtime, owner, configmap, targets)
        return self._published_condition(runtime, targets, selected - targets, failed, generation)

    async def _unpublish(self, runtime: CircuitBreakerState, owner: Owner, configmap: str,
                         targets: frozenset[str]) -> None:
        """Remove circuit.json where the circuit no longer applies; a failure is retried next probe."""
        stale = frozenset(set(runtime.published) - targets)
        try:
            if stale:
                await self.sink.unpublish_circuit(owner, configmap, stale)
                runtime.published = {ns: seen for ns, seen in runtime.published.items() if ns in targets}
            if not runtime.swept:  # leftovers from before a restart, which `published` does not know
                await self.sink.sweep_circuit(owner, targets, self.scope)
                runtime.swept = True
        except (ApiError, OSError, TimeoutError) as error:
            log.warning("circuit %s: could not remove stale ConfigMaps (retrying next probe): %s", runtime.name,
                        error, extra={"kind": "CircuitBreaker", "namespace": "", "object": runtime.name})

    @staticmethod
    def _published_condition(runtime: CircuitBreakerState, targets: frozenset[str], skipped: frozenset[str],
                             failed: list[str], generation: int | None) -> bool:
        if failed:
            return runtime.conditions.set("Published", "False", "PublishFailed", "; ".join(failed), generation)
        if skipped:
            return runtime.conditions.set(
                "Published", "False", "NamespaceNotWatched",
                f"selected namespaces outside watchNamespaces/circuitNamespaces were skipped: "
                f"{', '.join(sorted(skipped))}; add them to the chart's circuitNamespaces", generation)
        return runtime.conditions.set("Published", "True", "Published",
                                      f"circuit.json in {len(targets)} namespace(s)", generation)

    async def cleanup(self, name: str) -> list[str]:
        """After a deletion: the garbage collector removes owned ConfigMaps; this catches label-only ones."""
        return await self.sink.sweep_circuit(self.owner(name, None), frozenset(), self.scope)


class CircuitReconciler:
    """CircuitBreakers, keyed by uid: probe on their interval, publish where selected, clean up.

    It also holds the one copy of each circuit's current document, which policies that embed the
    circuit (`circuitBreakerRef`) read through `document()`.
    """

    kind: Final = "CircuitBreaker"

    def __init__(self, cycle: CircuitCycle, *, default_interval: float) -> None:
        self.cycle = cycle
        self.default_interval = default_interval
        self.states: dict[str, CircuitBreakerState] = {}
        self.documents: dict[str, CircuitState] = {}

    def document(self, name: str) -> CircuitState | None:
        return self.documents.get(name)

    def state(self, entry: ScheduleEntry) -> CircuitBreakerState:
        state = self.states.get(entry.uid)
        if state is None:
            state = CircuitBreakerState.restore(entry.name, entry.uid, entry.body.get("status"))
            self.states[entry.uid] = state
        return state

    def seen(self, entry: ScheduleEntry) -> None:
        """Seed policies' view of the circuit from its status before the first probe (after a restart)."""
        status = entry.body.get("status") or {}
        if entry.name in self.documents or not status.get("state"):
            return
        try:
            spec = CircuitBreakerSpec.model_validate(entry.body.get("spec") or {})
            memory = engine.circuit_from_status(status)
        except (ValidationError, KeyError, TypeError, ValueError):
            return
        self.documents[entry.name] = engine.circuit_document(spec, memory, entry.name, self.cycle.wallclock(),
                                                             spec.ttl_seconds)

    async def forget(self, entry: ScheduleEntry) -> list[str]:
        """After a deletion: drop the memory; the garbage collector removes owned ConfigMaps."""
        self.states.pop(entry.uid, None)
        self.documents.pop(entry.name, None)
        if not self.cycle.leading():
            return []
        removed = await self.cycle.cleanup(entry.name)
        log.info("circuit %s deleted; removed label-only ConfigMaps %s", entry.name, ", ".join(removed) or "(none)")
        return removed

    async def validate(self, entry: ScheduleEntry) -> CircuitBreakerSpec | None:
        state = self.state(entry)
        parsed: CircuitBreakerSpec | None
        try:
            parsed = CircuitBreakerSpec.model_validate(entry.body.get("spec") or {})
        except ValidationError as error:
            message = validation_message(error, CircuitBreakerSpec)
            if state.conditions.set("Valid", "False", "InvalidSpec", message, entry.generation) \
                    and self.cycle.leading():
                await self.cycle.sink.write_status("circuitbreakers", None, entry.name, {
                    "observedGeneration": entry.generation, "conditions": state.conditions.as_list()})
                await self.cycle.events.emit(Event("CircuitBreaker", None, entry.name, entry.uid, "Warning",
                                                   "InvalidSpec", message))
            parsed = None
        entry.parsed = (entry.generation, parsed)
        return parsed

    async def evaluate(self, entry: ScheduleEntry) -> float | None:
        """One probe; the seconds until the next, or None when the spec is unusable."""
        state = self.state(entry)
        if not entry.parsed_for_current_generation():
            await self.validate(entry)
        spec: CircuitBreakerSpec | None = entry.parsed[1] if entry.parsed else None
        if spec is None:
            return None
        try:
            self.documents[entry.name] = await self.cycle.run(state, spec, entry.generation)
        except (ApiError, OSError, TimeoutError) as error:
            log.warning("cycle of circuit %s failed: %s", entry.name, error, extra={"object": entry.name})
        return spec.probe_interval_seconds

    async def sweep_orphans(self, client_list: Callable[[str | None], Awaitable[list[Mapping[str, Any]]]],
                            exists: Callable[[str], Awaitable[bool | None]]) -> list[str]:
        """Remove label-only circuit ConfigMaps whose CircuitBreaker was deleted while no operator ran.

        `client_list(namespace)` lists circuit ConfigMaps (None: cluster-wide); `exists(name)` says
        whether that CircuitBreaker exists (None: could not tell, so leave it).
        """
        scope = self.cycle.scope
        items: list[Mapping[str, Any]] = []
        for namespace in [None] if scope is None else sorted(scope):
            items += await client_list(namespace)
        owners = {owner_name(item, CIRCUIT_LABEL) for item in items} - {None, ""}
        known = {state.name for state in self.states.values()}
        removed: list[str] = []
        for circuit in sorted(str(n) for n in owners if n not in known):
            if await exists(circuit) is not False:
                continue  # it exists (its own cycle publishes or cleans up), or we could not tell
            removed += await self.cycle.cleanup(circuit)
        if removed:
            log.info("removed ConfigMaps of deleted circuits: %s", ", ".join(removed))
        return removed
