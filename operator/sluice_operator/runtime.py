"""The operator's shared state and its main loop: leader election, Kopf, HTTP endpoints.

Handlers call into `OperatorRuntime`; it owns the clients, the cycles and the per-object memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import BaseModel, ValidationError

from sluice.decision import CircuitState
from sluice_operator import engine
from sluice_operator.api.circuit import CircuitBreakerSpec
from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.health import Health, serve
from sluice_operator.kube import ApiError, Connection, KubeClient, resource_path
from sluice_operator.leader import LeaderElector
from sluice_operator.metrics import OperatorMetrics
from sluice_operator.publish.configmap import CIRCUIT_LABEL, MANAGED_BY, owner_name
from sluice_operator.publish.events import Event, KubeEvents
from sluice_operator.reconcile.circuit import CircuitCycle, CircuitRuntime
from sluice_operator.reconcile.policy import PolicyCycle, PolicyState
from sluice_operator.reconcile.signals import Signals
from sluice_operator.reconcile.sinks import ClusterSink
from sluice_operator.scheduler import Scheduler, Tracked, jittered
from sluice_operator.settings import Settings
from sluice_operator.validation import explain, format_path

log = logging.getLogger(__name__)


def plain(value: Any) -> Any:
    """Deep-copy Kopf's live views into plain dicts and lists (pydantic and json want those)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def validation_message(error: ValidationError, model: type[BaseModel]) -> str:
    """Pydantic's errors as one line a person can act on, worded as `sluice validate` words them."""
    return "; ".join(
        f"{format_path(('spec', *item['loc']))}: {explain(item, model)}" for item in error.errors()[:5]
    )


class OperatorRuntime:
    """Everything the handlers share; one per operator instance."""

    def __init__(
        self, settings: Settings, connection: Connection, *, signals: Signals,
        metrics: OperatorMetrics | None = None, identity: str | None = None,
    ) -> None:
        self.settings = settings
        self.connection = connection
        self.client = KubeClient(connection, qps=settings.api_qps, burst=settings.api_burst)
        self.metrics = metrics or OperatorMetrics()
        self.health = Health(max_age=settings.liveness_max_age_seconds)
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}"
        self.elector = LeaderElector(
            self.client, namespace=settings.lease_namespace, name=settings.lease_name, identity=self.identity,
            duration=settings.lease_duration_seconds, renew_every=settings.lease_renew_seconds,
        )
        self.signals = signals
        self.sink = ClusterSink(self.client)
        self.events = KubeEvents(self.client, default_namespace=settings.lease_namespace)
        leading = self.is_leading
        self.policy_cycle = PolicyCycle(signals, self.sink, self.events, self.metrics,
                                        circuits=self.circuit_document, leading=leading)
        self.circuit_cycle = CircuitCycle(signals, self.sink, self.events, self.metrics,
                                          namespaces=self.namespace_view, scope=settings.configmap_scope(),
                                          leading=leading)
        self.policies: dict[str, PolicyState] = {}
        self.circuits: dict[str, CircuitRuntime] = {}
        self.circuit_docs: dict[str, CircuitState] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        self.terminating: set[str] = set()
        self.scheduler = Scheduler(self.evaluate, concurrency=max(8, settings.max_concurrent_queries * 8))
        self.cycles = 0
        self.election_enabled = settings.leader_election

    # -- leadership ------------------------------------------------------------------------------

    def is_leading(self) -> bool:
        return not self.election_enabled or self.elector.leading

    def kopf_connection(self) -> kopf.ConnectionInfo:
        """Kopf's credentials; its re-login after a 401 comes here and reads the token file afresh."""
        c = self.connection
        return kopf.ConnectionInfo(
            server=c.server, token=c.current_token(), ca_path=c.ca_path, ca_data=c.ca_data, insecure=c.insecure,
            certificate_path=c.certificate_path, private_key_path=c.private_key_path,
            default_namespace=c.default_namespace,
        )

    # -- scheduling ------------------------------------------------------------------------------

    def poke_circuits(self) -> None:
        self.scheduler.poke(lambda t: t.kind == "CircuitBreaker")

    def _count(self) -> None:
        self.health.active_objects = len(self.scheduler.objects)

    async def evaluate(self, tracked: Tracked) -> float:
        """One evaluation of a tracked object; returns the seconds until the next."""
        spec = tracked.body.get("spec") or {}
        if tracked.kind == "BackpressurePolicy":
            state = self.policy_state(tracked.namespace or "default", tracked.name, tracked.uid,
                                      tracked.body.get("status"))
            if not tracked.parsed_for_current_generation():
                tracked.parsed = (tracked.generation, self.parse_policy(spec))
            parsed: BackpressurePolicySpec | None = tracked.parsed[1] if tracked.parsed else None
            if parsed is None:
                return self.settings.default_interval_seconds
            await self.run_policy(state, parsed, tracked.generation)
            return jittered(parsed.polling.interval_seconds, parsed.polling.jitter_seconds)
        runtime = self.circuit_state(tracked.name, tracked.uid, tracked.body.get("status"))
        if not tracked.parsed_for_current_generation():
            tracked.parsed = (tracked.generation,
                              await self.parse_circuit(tracked.name, tracked.uid, spec, tracked.generation))
        circuit: CircuitBreakerSpec | None = tracked.parsed[1] if tracked.parsed else None
        if circuit is None:
            return self.settings.default_interval_seconds
        await self.run_circuit(runtime, circuit, tracked.generation)
        return circuit.probe_interval_seconds

    async def policy_event(self, type_: str, namespace: str, name: str, uid: str, obj: Mapping[str, Any]) -> None:
        """A policy appeared, changed or went away."""
        if type_ == "DELETED":
            self.scheduler.remove(uid)
            self.forget_policy(namespace, name, uid)
            self._count()
            return
        known = self.scheduler.objects.get(uid)
        generation = (obj.get("metadata") or {}).get("generation")
        tracked = self.scheduler.upsert("BackpressurePolicy", namespace, name, uid, dict(obj))
        self._count()
        if known is None or known.generation != generation or generation is None:
            parsed = await self.validate_policy(namespace, name, uid, obj.get("spec") or {}, generation,
                                                obj.get("status"))
            tracked.parsed = (generation, parsed)

    # -- policies --------------------------------------------------------------------------------

    def policy_state(self, namespace: str, name: str, uid: str, status: Any) -> PolicyState:
        state = self.policies.get(uid)
        if state is None:
            state = PolicyState.restore(namespace, name, uid, status)
            self.policies[uid] = state
        return state

    def forget_policy(self, namespace: str, name: str, uid: str) -> None:
        self.policies.pop(uid, None)
        self.metrics.forget_policy(namespace, name)

    def parse_policy(self, spec: Mapping[str, Any]) -> BackpressurePolicySpec | None:
        try:
            return BackpressurePolicySpec.model_validate(spec)
        except ValidationError:
            return None

    async def validate_policy(self, namespace: str, name: str, uid: str, spec: Mapping[str, Any],
                              generation: int | None, status: Any) -> BackpressurePolicySpec | None:
        """On a new object or generation: say at once whether the spec is usable; the parsed spec or None."""
        state = self.policy_state(namespace, name, uid, status)
        try:
            parsed = BackpressurePolicySpec.model_validate(spec)
        except ValidationError as error:
            message = validation_message(error, BackpressurePolicySpec)
            if state.conditions.set("Valid", "False", "InvalidSpec", message, generation) | \
                    state.conditions.set("Ready", "False", "InvalidSpec", "fix the spec; nothing is published",
                                         generation):
                if self.is_leading():
                    await self.sink.write_status("backpressurepolicies", namespace, name, {
                        "observedGeneration": generation, "conditions": state.conditions.as_list()})
                    await self.events.emit(Event("BackpressurePolicy", namespace, name, uid, "Warning",
                                                 "InvalidSpec", message))
            return None
        if parsed.source.prometheus is not None and parsed.source.prometheus.query is not None \
                and not self.settings.raw_query_allowed(namespace):
            log.info("policy %s/%s uses a raw query in a namespace that may not", namespace, name)
        return parsed

    async def run_policy(self, state: PolicyState, spec: BackpressurePolicySpec, generation: int | None) -> None:
        try:
            await self.policy_cycle.run(state, spec, generation)
        except (ApiError, OSError, TimeoutError) as error:
            log.warning("cycle of %s/%s failed: %s", state.namespace, state.name, error,
                        extra={"namespace": state.namespace, "object": state.name})
        self.cycles += 1
        self.health.evaluated()
        self.metrics.last_cycle.set_to_current_time()

    # -- circuits --------------------------------------------------------------------------------

    def circuit_state(self, name: str, uid: str, status: Any) -> CircuitRuntime:
        runtime = self.circuits.get(name)
        if runtime is None:
            runtime = CircuitRuntime.restore(name, uid, status)
            self.circuits[name] = runtime
        return runtime

    def forget_circuit(self, name: str, uid: str) -> None:
        self.circuits.pop(name, None)

    async def parse_circuit(self, name: str, uid: str, spec: Mapping[str, Any],
                            generation: int | None) -> CircuitBreakerSpec | None:
        try:
            return CircuitBreakerSpec.model_validate(spec)
        except ValidationError as error:
            runtime = self.circuits.get(name)
            message = validation_message(error, CircuitBreakerSpec)
            if runtime is not None and runtime.conditions.set("Valid", "False", "InvalidSpec", message, generation):
                if self.is_leading():
                    await self.sink.write_status("circuitbreakers", None, name, {
                        "observedGeneration": generation, "conditions": runtime.conditions.as_list()})
                    await self.events.emit(Event("CircuitBreaker", None, name, uid, "Warning", "InvalidSpec",
                                                 message))
            return None

    async def run_circuit(self, runtime: CircuitRuntime, spec: CircuitBreakerSpec, generation: int | None) -> None:
        try:
            document = await self.circuit_cycle.run(runtime, spec, generation)
            self.circuit_docs[runtime.name] = document
        except (ApiError, OSError, TimeoutError) as error:
            log.warning("cycle of circuit %s failed: %s", runtime.name, error, extra={"object": runtime.name})
        self.cycles += 1
        self.health.evaluated()

    def circuit_document(self, name: str) -> CircuitState | None:
        return self.circuit_docs.get(name)

    async def circuit_event(self, type_: str, name: str, uid: str, obj: Mapping[str, Any]) -> None:
        """A circuit appeared, changed or went away; deletion removes its ConfigMaps everywhere."""
        if type_ == "DELETED":
            self.scheduler.remove(uid)
            self.forget_circuit(name, uid)
            self._count()
            await self.cleanup_circuit(name)
            return
        self.scheduler.upsert("CircuitBreaker", None, name, uid, dict(obj))
        self._count()
        if name in self.circuit_docs or not (obj.get("status") or {}).get("state"):
            return
        # Seed policies' view of the circuit from its status before the first probe.
        try:
            spec = CircuitBreakerSpec.model_validate(obj.get("spec") or {})
            memory = engine.circuit_from_status(obj["status"])
            self.circuit_docs[name] = engine.circuit_document(spec, memory, name, datetime.now(UTC), spec.ttl_seconds)
        except (ValidationError, KeyError, TypeError, ValueError):
            return

    async def sweep_orphans(self) -> list[str]:
        """Remove circuit ConfigMaps whose CircuitBreaker was deleted while no operator was running.

        Owned ConfigMaps are the garbage collector's; this catches label-only ones (written before
        ownerReferences, or whose owner reference was removed by hand), in the namespaces we may list.
        """
        scope = self.settings.configmap_scope()
        items: list[Mapping[str, Any]] = []
        for namespace in [None] if scope is None else sorted(scope):
            listing = await self.client.get(resource_path("v1", "configmaps", namespace=namespace),
                                            params={"labelSelector": f"{MANAGED_BY}=sluice,{CIRCUIT_LABEL}"})
            items += listing.get("items") or []
        owners = {owner_name(item, CIRCUIT_LABEL) for item in items} - {None, ""}
        known = {runtime.name for runtime in self.circuits.values()}
        removed: list[str] = []
        for circuit in sorted(str(n) for n in owners if n not in known):
            try:
                await self.client.get(resource_path("sluice.dev/v1alpha1", "circuitbreakers", name=circuit))
                continue  # it exists: its own cycle will publish or clean up
            except ApiError as error:
                if not error.not_found:
                    continue
            removed += await self.circuit_cycle.cleanup(circuit)
        if removed:
            log.info("removed ConfigMaps of deleted circuits: %s", ", ".join(removed))
        return removed

    async def cleanup_circuit(self, name: str) -> None:
        if not self.is_leading():
            return
        removed = await self.circuit_cycle.cleanup(name)
        self.circuit_docs.pop(name, None)
        log.info("circuit %s deleted; removed ConfigMaps %s", name, ", ".join(removed) or "(none)")

    # -- namespaces ------------------------------------------------------------------------------

    def namespace_event(self, type_: str, name: str, obj: Mapping[str, Any]) -> bool:
        """Track namespace labels and phase; True when circuits should re-evaluate their targets."""
        before = (self.namespaces.get(name), name in self.terminating)
        if type_ == "DELETED":
            self.namespaces.pop(name, None)
            self.terminating.discard(name)
        else:
            self.namespaces[name] = dict((obj.get("metadata") or {}).get("labels") or {})
            if (obj.get("status") or {}).get("phase") == "Terminating":
                self.terminating.add(name)
            else:
                self.terminating.discard(name)
        return before != (self.namespaces.get(name), name in self.terminating)

    def namespace_view(self) -> tuple[Mapping[str, Mapping[str, str]], frozenset[str]]:
        return self.namespaces, frozenset(self.terminating)

    # -- main loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, namespaces: tuple[str, ...] = (), http: bool = True,
                  kopf_settings: kopf.OperatorSettings | None = None, release_on_stop: bool = True) -> int:
        """Serve health, wait for the Lease, run Kopf while leading. Returns an exit code."""
        from sluice_operator.handlers import build_registry

        runner = await serve(self.health, self.metrics, self.settings.http_port) if http else None
        self.health.ready = True
        code = 0
        try:
            if self.election_enabled:
                log.info("waiting for leader lease %s/%s as %s", self.settings.lease_namespace,
                         self.settings.lease_name, self.identity)
                if not await self.elector.acquire(stop, on_attempt=self.health.heartbeat):
                    return 0
            self.health.leading = True
            self.metrics.leader.set(1)
            kopf_stop: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            operator = asyncio.ensure_future(kopf.operator(
                registry=build_registry(self), settings=kopf_settings, standalone=True, clusterwide=not namespaces,
                namespaces=list(namespaces), stop_flag=kopf_stop,
            ))
            scheduler_stop = asyncio.Event()
            scheduler = asyncio.ensure_future(self.scheduler.run(scheduler_stop))
            sweep = asyncio.ensure_future(self._sweep_later(delay=5.0))
            watchers = [asyncio.ensure_future(stop.wait()), operator]
            if self.election_enabled:
                watchers.append(asyncio.ensure_future(self.elector.hold(stop)))
            done, _ = await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
            scheduler_stop.set()
            sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(scheduler, timeout=10)
            lost = self.election_enabled and watchers[2] in done and not stop.is_set()
            if lost:
                code = 1
                log.error("leadership lost: stopping so that only one replica acts")
            if not kopf_stop.done():
                kopf_stop.set_result(True)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(operator, timeout=15)
            for task in watchers:
                task.cancel()
            if operator in done and operator.exception() is not None:
                log.error("Kopf stopped: %s", operator.exception())
                code = 1
        finally:
            self.health.leading = False
            self.metrics.leader.set(0)
            if self.election_enabled and release_on_stop:
                with contextlib.suppress(Exception):
                    await self.elector.release()
            if runner is not None:
                await runner.cleanup()
            await self.client.close()
        return code

    async def _sweep_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.is_leading():
            try:
                await self.sweep_orphans()
            except (ApiError, OSError, TimeoutError) as error:
                log.warning("orphan sweep failed: %s", error)
