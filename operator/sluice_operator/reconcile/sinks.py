"""Where a cycle's results go: the cluster (ConfigMaps + status) or a directory (local mode)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from sluice_operator.api.common import API_VERSION
from sluice_operator.kube import ApiError, KubeClient, resource_path
from sluice_operator.publish.configmap import ConfigMapPublisher, Owner
from sluice_operator.publish.directory import DirectoryPublisher, write_atomic
from sluice_operator.publish.outcome import PublishOutcome, PublishResult


class Sink(Protocol):
    """Publishes documents and status for one kind of object."""

    async def publish(self, namespace: str, configmap: str, owner: Owner, data: Mapping[str, str]) -> PublishResult:
        ...

    async def write_status(self, plural: str, namespace: str | None, name: str, status: Mapping[str, Any]) -> bool:
        ...

    async def unpublish_circuit(self, owner: Owner, configmap: str, namespaces: frozenset[str]) -> list[str]:
        """Remove a circuit's document from these namespaces (where it was published); what went."""
        ...

    async def sweep_circuit(self, owner: Owner, keep: frozenset[str], scope: frozenset[str] | None) -> list[str]:
        """Remove a circuit's documents everywhere in `scope` (None: cluster-wide) except `keep`."""
        ...


class ClusterSink:
    """ConfigMaps through the API, status through the status subresource (merge patch)."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.configmaps = ConfigMapPublisher(client)

    async def publish(self, namespace: str, configmap: str, owner: Owner, data: Mapping[str, str]) -> PublishResult:
        return await self.configmaps.publish(namespace, configmap, owner, data)

    async def write_status(self, plural: str, namespace: str | None, name: str, status: Mapping[str, Any]) -> bool:
        path = resource_path(API_VERSION, plural, namespace=namespace, name=name, subresource="status")
        try:
            await self.client.patch(path, {"status": dict(status)})
        except ApiError as error:
            if error.not_found:
                return False  # deleted meanwhile
            raise
        return True

    async def unpublish_circuit(self, owner: Owner, configmap: str, namespaces: frozenset[str]) -> list[str]:
        removed = []
        for namespace in sorted(namespaces):
            if await self.configmaps.delete_one(namespace, configmap, owner):
                removed.append(f"{namespace}/{configmap}")
        return removed

    async def sweep_circuit(self, owner: Owner, keep: frozenset[str], scope: frozenset[str] | None) -> list[str]:
        scopes = None if scope is None else scope - keep
        found = await self.configmaps.delete_owned(owner, scopes, keep=keep)
        return found


class DirectorySink:
    """Local mode: DIR/<namespace>/<name>/decision.json (+ status.json for people and tests)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = DirectoryPublisher(root)

    async def publish(self, namespace: str, configmap: str, owner: Owner, data: Mapping[str, str]) -> PublishResult:
        # The directory is named after the object, as documented: DIR/<namespace>/<name>/.
        return await self.files.publish(namespace, owner.name, data)

    async def write_status(self, plural: str, namespace: str | None, name: str, status: Mapping[str, Any]) -> bool:
        path = self.root / (namespace or "_cluster") / name / "status.json"
        try:
            await asyncio.to_thread(write_atomic, path, json.dumps(status, indent=2, sort_keys=True) + "\n")
        except OSError:
            return False
        return True

    async def unpublish_circuit(self, owner: Owner, configmap: str, namespaces: frozenset[str]) -> list[str]:
        return await asyncio.to_thread(self._unpublish_circuit, owner.name, lambda ns: ns in namespaces)

    async def sweep_circuit(self, owner: Owner, keep: frozenset[str], scope: frozenset[str] | None) -> list[str]:
        return await asyncio.to_thread(self._unpublish_circuit, owner.name, lambda ns: ns not in keep)

    def _unpublish_circuit(self, circuit: str, remove: Callable[[str], bool]) -> list[str]:
        removed = []
        for directory in self.root.glob(f"*/{circuit}"):
            namespace = directory.parent.name
            if not remove(namespace) or not (directory / "circuit.json").exists():
                continue
            self.files.remove(namespace, circuit, ("circuit.json",))
            removed.append(f"{namespace}/{circuit}")
        return removed


__all__ = ["ClusterSink", "DirectorySink", "PublishOutcome", "Sink"]
