"""Every Kopf handler of Sluice. Thin: parse the object, call a cycle, let the cycle publish.

Handlers are registered into an explicit registry (`build_registry`) instead of Kopf's global one, so
two operator instances can run in one process (leader-election tests) without sharing handlers.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import kopf

from sluice_operator.api.common import GROUP, VERSION
from sluice_operator.runtime import OperatorRuntime, plain, wait_or_wake


def build_registry(rt: OperatorRuntime) -> kopf.OperatorRegistry:
    """A registry holding Sluice's handlers bound to one runtime."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Our structural CRDs prune unknown status fields: keep Kopf's bookkeeping in annotations.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.posting.enabled = False  # we post our own Events, with reasons users can filter on
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 30

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return rt.kopf_connection()

    # -- BackpressurePolicy ----------------------------------------------------------------------

    @kopf.on.create(GROUP, VERSION, "backpressurepolicies", registry=registry)
    @kopf.on.update(GROUP, VERSION, "backpressurepolicies", field="spec", registry=registry)
    @kopf.on.resume(GROUP, VERSION, "backpressurepolicies", registry=registry)
    async def policy_changed(
        spec: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any],
        namespace: str | None, name: str, uid: str, **_: Any,
    ) -> None:
        await rt.validate_policy(namespace or "default", name, uid, plain(spec), meta.get("generation"), plain(status))

    @kopf.daemon(GROUP, VERSION, "backpressurepolicies", registry=registry, cancellation_timeout=10.0)
    async def policy_daemon(
        spec: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any],
        namespace: str | None, name: str, uid: str, stopped: kopf.DaemonStopped, **_: Any,
    ) -> None:
        state = rt.policy_state(namespace or "default", name, uid, plain(status))
        wake = rt.wakeup(uid)
        try:
            while not stopped:
                parsed = rt.parse_policy(plain(spec), meta.get("generation"))
                interval = rt.settings.default_interval_seconds
                if parsed is not None:
                    interval = parsed.polling.interval_seconds + random.uniform(0, parsed.polling.jitter_seconds)
                    await rt.run_policy(state, parsed, meta.get("generation"))
                await wait_or_wake(stopped, wake, interval)
        finally:
            rt.forget_policy(namespace or "default", name, uid)

    # -- CircuitBreaker --------------------------------------------------------------------------

    @kopf.daemon(GROUP, VERSION, "circuitbreakers", registry=registry, cancellation_timeout=10.0)
    async def circuit_daemon(
        spec: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any],
        name: str, uid: str, stopped: kopf.DaemonStopped, **_: Any,
    ) -> None:
        runtime = rt.circuit_state(name, uid, plain(status))
        wake = rt.wakeup(uid)
        try:
            while not stopped:
                parsed = await rt.parse_circuit(name, uid, plain(spec), meta.get("generation"))
                interval = rt.settings.default_interval_seconds
                if parsed is not None:
                    interval = parsed.probe_interval_seconds
                    await rt.run_circuit(runtime, parsed, meta.get("generation"))
                await wait_or_wake(stopped, wake, interval)
        finally:
            rt.forget_circuit(name, uid)

    @kopf.on.update(GROUP, VERSION, "circuitbreakers", field="spec", registry=registry)
    async def circuit_changed(uid: str, **_: Any) -> None:
        rt.poke(uid)

    @kopf.on.delete(GROUP, VERSION, "circuitbreakers", optional=True, registry=registry)
    async def circuit_deleted(name: str, **_: Any) -> None:
        await rt.cleanup_circuit(name)

    @kopf.on.event(GROUP, VERSION, "circuitbreakers", registry=registry)
    def circuit_seen(event: Mapping[str, Any], name: str, **_: Any) -> None:
        rt.circuit_event(str(event.get("type") or ""), name, plain(event.get("object") or {}))

    # -- Namespaces (where circuits publish) -----------------------------------------------------

    @kopf.on.event("", "v1", "namespaces", registry=registry)
    def namespace_seen(event: Mapping[str, Any], name: str, **_: Any) -> None:
        if rt.namespace_event(str(event.get("type") or ""), name, plain(event.get("object") or {})):
            rt.poke_circuits()

    @kopf.on.probe(id="cycles", registry=registry)
    def cycles(**_: Any) -> int:
        return rt.cycles

    return registry
