"""Kubernetes Events for what a person should notice: zone changes, lost signals, conflicts.

Events are best effort: a failure to post one is logged, never allowed to stop a reconcile.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Literal

from sluice_operator.api.common import API_VERSION
from sluice_operator.engine.clock import rfc3339
from sluice_operator.kube import ApiError, KubeClient, resource_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    kind: Literal["BackpressurePolicy", "CircuitBreaker"]
    namespace: str | None
    name: str
    uid: str | None
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


class LogEvents:
    """Local mode: events become log lines (and are kept for tests)."""

    def __init__(self) -> None:
        self.emitted: list[Event] = []

    async def emit(self, event: Event) -> None:
        self.emitted.append(event)
        level = logging.WARNING if event.type == "Warning" else logging.INFO
        ref = f"{event.namespace}/{event.name}" if event.namespace else event.name
        log.log(level, "%s %s: %s", event.reason, ref, event.message,
                extra={"kind": event.kind, "namespace": event.namespace or "", "object": event.name})


class KubeEvents:
    """Posts core/v1 Events; cluster-scoped objects' events go to `default_namespace` (the operator's own).

    The API server accepts an Event about a cluster-scoped object (empty involvedObject.namespace) only
    in `default`, so, as Kopf does, the reference names the Event's own namespace: `kubectl get events
    -n sluice-system` then lists circuit transitions, which the chart's RBAC allows the operator to post.
    """

    def __init__(self, client: KubeClient, default_namespace: str = "default") -> None:
        self.client = client
        self.default_namespace = default_namespace

    async def emit(self, event: Event) -> None:
        namespace = event.namespace or self.default_namespace
        now = rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{event.name}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": event.kind,
                "name": event.name,
                "namespace": namespace,
                "uid": event.uid,
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": "sluice-operator"},
            "reportingComponent": "sluice.dev/operator",
            "reportingInstance": "sluice-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.client.create(resource_path("v1", "events", namespace=namespace), body)
        except (ApiError, OSError, TimeoutError) as error:
            log.warning("could not post event %s for %s: %s", event.reason, event.name, error)
