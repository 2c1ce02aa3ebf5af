"""Every Kopf handler of Sluice. Thin: turn watch events into calls on the runtime.

Only event handlers are used: Kopf's daemons, timers and change handlers put finalizers on objects,
which would block `kubectl delete` whenever the operator is down. Evaluations run in
`sluice_operator.scheduler`. Handlers go into an explicit registry (`build_registry`), so several
operator instances can share a process in tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import kopf

from sluice_operator.api.common import GROUP, VERSION


class Runtime(Protocol):
    """What the handlers call; the manager implements it (handlers never import the manager)."""

    def kopf_connection(self) -> kopf.ConnectionInfo: ...

    async def policy_event(self, type_: str, namespace: str, name: str, uid: str, obj: Mapping[str, Any]) -> None:
        ...

    async def circuit_event(self, type_: str, name: str, uid: str, obj: Mapping[str, Any]) -> None: ...

    def namespace_event(self, type_: str, name: str, obj: Mapping[str, Any]) -> bool: ...

    def poke_circuits(self) -> None: ...


def plain(value: Any) -> Any:
    """Deep-copy Kopf's live views into plain dicts and lists (pydantic and json want those)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _type(event: Mapping[str, Any]) -> str:
    return str(event.get("type") or "")


def build_registry(rt: Runtime) -> kopf.OperatorRegistry:
    """A registry holding Sluice's handlers bound to one runtime."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # we post our own Events, with reasons users can filter on
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 30

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return rt.kopf_connection()

    @kopf.on.event(GROUP, VERSION, "backpressurepolicies", registry=registry)
    async def policy_seen(event: Mapping[str, Any], namespace: str | None, name: str, uid: str, **_: Any) -> None:
        await rt.policy_event(_type(event), namespace or "default", name, uid, plain(event.get("object") or {}))

    @kopf.on.event(GROUP, VERSION, "circuitbreakers", registry=registry)
    async def circuit_seen(event: Mapping[str, Any], name: str, uid: str, **_: Any) -> None:
        await rt.circuit_event(_type(event), name, uid, plain(event.get("object") or {}))

    @kopf.on.event("", "v1", "namespaces", registry=registry)
    def namespace_seen(event: Mapping[str, Any], name: str, **_: Any) -> None:
        if rt.namespace_event(_type(event), name, plain(event.get("object") or {})):
            rt.poke_circuits()

    return registry
