"""The protocols evaluation cycles depend on: where results go (Sink, EventSink), where signals come from.

The cluster and local backends (`publish.cluster`, `publish.directory`) implement them structurally;
tests substitute their own. Keeping them here means a cycle never names a backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from sluice_operator.publish.configmap import Owner
from sluice_operator.publish.events import Event
from sluice_operator.publish.outcome import PublishResult
from sluice_operator.reconcile.signals import PromReader, Signals

__all__ = ["EventSink", "PromReader", "SignalReader", "Sink"]

#: The signal readers a cycle uses (one object: Prometheus, Kafka lag, Kafka probe, Secrets).
SignalReader = Signals


class Sink(Protocol):
    """Publishes documents and status for one kind of object."""

    async def publish(self, namespace: str, configmap: str, owner: Owner, data: Mapping[str, str]) -> PublishResult:
        ...

    async def write_status(self, plural: str, namespace: str | None, name: str, status: Mapping[str, Any]) -> bool:
        """True when written, False when the object is gone; raises when the write failed."""
        ...

    async def unpublish_circuit(self, owner: Owner, configmap: str, namespaces: frozenset[str]) -> list[str]:
        """Remove a circuit's document from these namespaces (where it was published); what went."""
        ...

    async def sweep_circuit(self, owner: Owner, keep: frozenset[str], scope: frozenset[str] | None) -> list[str]:
        """Remove a circuit's documents everywhere in `scope` (None: cluster-wide) except `keep`."""
        ...


class EventSink(Protocol):
    """Where Events go: the API (cluster) or the log (local mode). Best effort, never raises."""

    async def emit(self, event: Event) -> None: ...
