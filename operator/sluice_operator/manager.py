"""The operator in a cluster: leader election, Kopf, HTTP endpoints and the one Scheduler.

Kopf's handlers (`handlers.py`) call in here; the Scheduler hands each object to the reconciler of
its kind through `reconcile/dispatch.py`, exactly as in local mode (`local.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

import kopf

from sluice_operator.api.common import API_VERSION
from sluice_operator.handlers import build_registry
from sluice_operator.health import Health, serve
from sluice_operator.kube import ApiError, Connection, KubeClient, resource_path
from sluice_operator.leader import LeaderElector
from sluice_operator.metrics import OperatorMetrics
from sluice_operator.publish.cluster import ClusterSink
from sluice_operator.publish.configmap import CIRCUIT_LABEL, MANAGED_BY, MANAGED_BY_VALUE
from sluice_operator.publish.events import KubeEvents
from sluice_operator.reconcile.circuit import CircuitCycle, CircuitReconciler
from sluice_operator.reconcile.dispatch import Dispatcher
from sluice_operator.reconcile.namespaces import NamespaceView
from sluice_operator.reconcile.policy import PolicyCycle, PolicyReconciler
from sluice_operator.reconcile.ports import SignalReader
from sluice_operator.scheduler import ScheduleEntry, Scheduler, cycles_in_flight
from sluice_operator.settings import Settings

log = logging.getLogger(__name__)


class Manager:
    """One operator instance: what the handlers share, and the loop that runs Kopf while leading."""

    def __init__(
        self, settings: Settings, connection: Connection, *, signals: SignalReader,
        metrics: OperatorMetrics | None = None, identity: str | None = None,
    ) -> None:
        self.settings = settings
        self.connection = connection
        self.client = KubeClient(connection, qps=settings.api.qps, burst=settings.api.burst)
        self.metrics = metrics or OperatorMetrics()
        requests = self.metrics.api_requests
        self.client.on_response = lambda method, code: requests.labels(method, str(code)).inc()
        self.health = Health(max_age=settings.server.liveness_max_age_seconds)
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}"
        self.elector = LeaderElector(
            self.client, namespace=settings.leader.lease_namespace, name=settings.leader.lease_name,
            identity=self.identity,
            duration=settings.leader.lease_duration_seconds, renew_every=settings.leader.lease_renew_seconds,
        )
        self.election_enabled = settings.leader.enabled
        self.signals = signals
        self.sink = ClusterSink(self.client)
        self.events = KubeEvents(self.client, default_namespace=settings.leader.lease_namespace)
        self.namespaces = NamespaceView()
        leading = self.is_leading
        self.circuits = CircuitReconciler(
            CircuitCycle(signals, self.sink, self.events, self.metrics, namespaces=self.namespaces.view,
                         scope=settings.scope.configmap_scope(), leading=leading),
            default_interval=settings.scope.default_interval_seconds)
        self.policies = PolicyReconciler(
            PolicyCycle(signals, self.sink, self.events, self.metrics, circuits=self.circuits.document,
                        leading=leading),
            default_interval=settings.scope.default_interval_seconds, raw_query_allowed=settings.raw_query_allowed,
            on_forget=self.metrics.forget_policy)
        self.dispatch = Dispatcher(self.policies, self.circuits, self.metrics, on_cycle=self.health.evaluated)
        self.scheduler = Scheduler(
            self.dispatch, concurrency=cycles_in_flight(settings.prometheus.max_concurrent_queries))

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

    # -- objects ---------------------------------------------------------------------------------

    @property
    def cycles(self) -> int:
        """Evaluation cycles run so far (by the shared `Dispatcher`)."""
        return self.dispatch.cycles

    def _count(self) -> None:
        self.health.active_objects = len(self.scheduler.objects)

    async def policy_event(self, type_: str, namespace: str, name: str, uid: str, obj: Mapping[str, Any]) -> None:
        """A policy appeared, changed or went away."""
        if type_ == "DELETED":
            entry = self.scheduler.remove(uid)
            if entry is not None:
                self.policies.forget(entry)
            self._count()
            return
        known = self.scheduler.objects.get(uid)
        entry = self.scheduler.upsert("BackpressurePolicy", namespace, name, uid, dict(obj))
        self._count()
        if known is None or not entry.parsed_for_current_generation():
            await self.policies.validate(entry)

    async def circuit_event(self, type_: str, name: str, uid: str, obj: Mapping[str, Any]) -> None:
        """A circuit appeared, changed or went away."""
        if type_ == "DELETED":
            entry = self.scheduler.remove(uid) or ScheduleEntry("CircuitBreaker", None, name, uid, dict(obj))
            self._count()
            await self.circuits.forget(entry)
            return
        entry = self.scheduler.upsert("CircuitBreaker", None, name, uid, dict(obj))
        self._count()
        self.circuits.seen(entry)

    def namespace_event(self, type_: str, name: str, obj: Mapping[str, Any]) -> bool:
        return self.namespaces.on_event(type_, name, obj)

    def poke_circuits(self) -> None:
        self.scheduler.poke(lambda entry: entry.kind == "CircuitBreaker")

    # -- housekeeping ----------------------------------------------------------------------------

    async def sweep_orphans(self) -> list[str]:
        """Label-only circuit ConfigMaps of circuits deleted while no operator ran (see CircuitReconciler)."""
        async def listing(namespace: str | None) -> list[Mapping[str, Any]]:
            found = await self.client.get(resource_path("v1", "configmaps", namespace=namespace),
                                          params={"labelSelector": f"{MANAGED_BY}={MANAGED_BY_VALUE},{CIRCUIT_LABEL}"})
            return list(found.get("items") or [])

        async def exists(circuit: str) -> bool | None:
            try:
                await self.client.get(resource_path(API_VERSION, "circuitbreakers", name=circuit))
                return True
            except ApiError as error:
                return False if error.not_found else None

        return await self.circuits.sweep_orphans(listing, exists)

    async def resync(self, namespaces: tuple[str, ...] = ()) -> list[str]:
        """Forget tracked objects that a fresh list no longer has; returns their names.

        Kopf re-lists after a watch error (410 Gone) but reports no deletion for an object that vanished
        meanwhile, so without this a deleted policy would be evaluated forever.
        """
        tracked_before = set(self.scheduler.objects)  # anything newer may be missing from the lists below
        present: set[str] = set()
        scopes: list[str | None] = [None] if not namespaces else [*namespaces]
        for scope in scopes:
            listing = await self.client.get(resource_path(API_VERSION, "backpressurepolicies", namespace=scope))
            present |= {str((i.get("metadata") or {}).get("uid")) for i in listing.get("items") or []}
        listing = await self.client.get(resource_path(API_VERSION, "circuitbreakers"))
        present |= {str((i.get("metadata") or {}).get("uid")) for i in listing.get("items") or []}
        gone = [e for uid, e in list(self.scheduler.objects.items()) if uid in tracked_before and uid not in present]
        for entry in gone:
            log.info("%s %s/%s is gone (missed while a watch was down): no longer evaluated", entry.kind,
                     entry.namespace or "", entry.name)
            if entry.kind == "BackpressurePolicy":
                await self.policy_event("DELETED", entry.namespace or "", entry.name, entry.uid, entry.body)
            else:
                await self.circuit_event("DELETED", entry.name, entry.uid, entry.body)
        return [e.name for e in gone]

    # -- main loop -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, namespaces: tuple[str, ...] = (), http: bool = True,
                  kopf_settings: kopf.OperatorSettings | None = None, release_on_stop: bool = True) -> int:
        """Serve health, wait for the Lease, run Kopf while leading. Returns an exit code."""
        runner = await serve(self.health, self.metrics, self.settings.server.http_port) if http else None
        self.health.ready = True
        code = 0
        try:
            if self.election_enabled:
                log.info("waiting for leader lease %s/%s as %s", self.settings.leader.lease_namespace,
                         self.settings.leader.lease_name, self.identity)
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
            resync = asyncio.ensure_future(self._resync_forever(namespaces))
            watchers = [asyncio.ensure_future(stop.wait()), operator]
            if self.election_enabled:
                watchers.append(asyncio.ensure_future(self.elector.hold(stop)))
            done, _ = await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
            scheduler_stop.set()
            sweep.cancel()
            resync.cancel()
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

    async def _resync_forever(self, namespaces: tuple[str, ...]) -> None:
        while True:
            await asyncio.sleep(self.settings.scope.resync_seconds)
            if not self.is_leading():
                continue
            try:
                await self.resync(namespaces)
            except (ApiError, OSError, TimeoutError) as error:
                log.warning("resync failed (next in %gs): %s", self.settings.scope.resync_seconds, error)

    async def _sweep_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.is_leading():
            try:
                await self.sweep_orphans()
            except (ApiError, OSError, TimeoutError) as error:
                log.warning("orphan sweep failed: %s", error)
