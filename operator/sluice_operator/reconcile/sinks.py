"""Where a cycle's results go: the cluster (ConfigMaps + status) or a directory (local mode)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from sluice_operator.api.common import API_VERSION
from sluice_operator.kube import ApiError, KubeClient, resource_path
from sluice_operator.publish.configmap import CIRCUIT_LABEL, ConfigMapPublisher, Owner
from sluice_operator.publish.directory import DirectoryPublisher, write_atomic
from sluice_operator.publish.outcome import PublishOutcome, PublishResult


class Sink(Protocol):
    """Publishes documents and status for one kind of object."""

    async def publish(self, namespace: str, configmap: str, owner: Owner, data: Mapping[str, str]) -> PublishResult:
        ...

    async def write_status(self, plural: str, namespace: str | None, name: str, status: Mapping[str, Any]) -> bool:
        ...

    async def unpublish_circuit(self, circuit: str, keep: frozenset[str]) -> list[str]: ...


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

    async def unpublish_circuit(self, circuit: str, keep: frozenset[str]) -> list[str]:
        selector = f"app.kubernetes.io/managed-by=sluice,{CIRCUIT_LABEL}={circuit}"
        return await self.configmaps.delete_labelled(selector, keep_namespaces=keep)


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

    async def unpublish_circuit(self, circuit: str, keep: frozenset[str]) -> list[str]:
        return await asyncio.to_thread(self._unpublish_circuit, circuit, keep)

    def _unpublish_circuit(self, circuit: str, keep: frozenset[str]) -> list[str]:
        removed = []
        for directory in self.root.glob(f"*/{circuit}"):
            namespace = directory.parent.name
            if namespace in keep or not (directory / "circuit.json").exists():
                continue
            self.files.remove(namespace, circuit, ("circuit.json",))
            removed.append(f"{namespace}/{circuit}")
        return removed


__all__ = ["ClusterSink", "DirectorySink", "PublishOutcome", "Sink"]
