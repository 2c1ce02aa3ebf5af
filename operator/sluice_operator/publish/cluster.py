"""The cluster backend: decisions in ConfigMaps, status through the status subresource."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sluice_operator.api.common import API_VERSION
from sluice_operator.kube import ApiError, KubeClient, resource_path
from sluice_operator.publish.configmap import ConfigMapPublisher, Owner
from sluice_operator.publish.outcome import PublishResult

__all__ = ["ClusterSink"]


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
