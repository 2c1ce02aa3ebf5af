"""Publish documents into ConfigMaps that Sluice owns, and never touch one it does not.

Ownership is the `app.kubernetes.io/managed-by: sluice` label plus, for a policy's ConfigMap, an
ownerReference to that policy (so Kubernetes garbage-collects it with the policy). Circuit ConfigMaps
live in other namespaces, where an ownerReference cannot point, so they carry `sluice.dev/circuit`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sluice_operator.kube import ApiError, KubeClient, resource_path
from sluice_operator.publish.outcome import PublishOutcome, PublishResult

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "sluice"
POLICY_LABEL = "sluice.dev/policy"
CIRCUIT_LABEL = "sluice.dev/circuit"
CONFLICT_RETRIES = 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Owner:
    """The object a ConfigMap belongs to: an ownerReference when `uid` is set, else labels only."""

    api_version: str
    kind: str
    name: str
    uid: str | None
    label_key: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": False,
        }

    def owns(self, configmap: Mapping[str, Any]) -> bool:
        meta = configmap.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(MANAGED_BY) != MANAGED_BY_VALUE or labels.get(self.label_key) != self.name:
            return False
        if self.uid is None:
            return True
        return any(ref.get("uid") == self.uid for ref in meta.get("ownerReferences") or [])


class ConfigMapPublisher:
    """Writes `data` into one ConfigMap per target, remembering versions to skip needless reads."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self._versions: dict[tuple[str, str], tuple[str, Mapping[str, str]]] = {}

    def forget(self, namespace: str, name: str) -> None:
        self._versions.pop((namespace, name), None)

    def _body(self, namespace: str, name: str, owner: Owner, data: Mapping[str, str],
              resource_version: str | None) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY: MANAGED_BY_VALUE, owner.label_key: owner.name},
        }
        if owner.uid:
            meta["ownerReferences"] = [owner.reference()]
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(data)}

    async def publish(self, namespace: str, name: str, owner: Owner, data: Mapping[str, str]) -> PublishResult:
        """Make the ConfigMap hold `data`; at most CONFLICT_RETRIES re-reads on a 409."""
        target = f"{namespace}/{name}"
        key = (namespace, name)
        path = resource_path("v1", "configmaps", namespace=namespace, name=name)
        cached = self._versions.get(key)
        if cached is not None and dict(cached[1]) == dict(data):
            return PublishResult(PublishOutcome.UNCHANGED, target)
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                if cached is None:
                    try:
                        current = await self.client.get(path)
                    except ApiError as error:
                        if not error.not_found:
                            raise
                        created = await self.client.create(
                            resource_path("v1", "configmaps", namespace=namespace),
                            self._body(namespace, name, owner, data, None),
                        )
                        self._remember(key, created, data)
                        return PublishResult(PublishOutcome.CREATED, target)
                    if not owner.owns(current):
                        return PublishResult(
                            PublishOutcome.CONFLICT, target,
                            f"ConfigMap {target} exists and is not managed by Sluice for {owner.kind} "
                            f"{owner.name} (no {MANAGED_BY}={MANAGED_BY_VALUE} label or owner reference); "
                            "it was left untouched. Rename spec.output.configMapName or delete that ConfigMap.",
                        )
                    if dict(current.get("data") or {}) == dict(data):
                        self._remember(key, current, data)
                        return PublishResult(PublishOutcome.UNCHANGED, target)
                    version = str(current["metadata"]["resourceVersion"])
                else:
                    version = cached[0]
                replaced = await self.client.replace(path, self._body(namespace, name, owner, data, version))
                self._remember(key, replaced, data)
                return PublishResult(PublishOutcome.UPDATED, target)
            except ApiError as error:
                if error.namespace_terminating:
                    self.forget(namespace, name)
                    return PublishResult(PublishOutcome.TERMINATING, target, error.message)
                if error.conflict or error.not_found:
                    # Someone else wrote (or deleted) it: re-read, re-check ownership, try again.
                    log.debug("write to %s answered %s; re-reading (attempt %d)", target, error.status, attempt + 1)
                    self.forget(namespace, name)
                    cached = None
                    continue
                self.forget(namespace, name)
                return PublishResult(PublishOutcome.FAILED, target, str(error))
            except (TimeoutError, OSError) as error:
                self.forget(namespace, name)
                return PublishResult(PublishOutcome.FAILED, target, f"{type(error).__name__}: {error}")
        return PublishResult(PublishOutcome.FAILED, target, f"still conflicting after {CONFLICT_RETRIES} retries")

    def _remember(self, key: tuple[str, str], obj: Mapping[str, Any], data: Mapping[str, str]) -> None:
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self._versions[key] = (str(version), dict(data))

    async def delete_labelled(self, label_selector: str, *, keep_namespaces: frozenset[str] = frozenset()) -> list[str]:
        """Delete our ConfigMaps matching `label_selector` outside `keep_namespaces`; return what went."""
        listing = await self.client.get(
            resource_path("v1", "configmaps"), params={"labelSelector": label_selector}
        )
        deleted = []
        for item in listing.get("items") or []:
            meta = item.get("metadata") or {}
            namespace, name = meta.get("namespace", ""), meta.get("name", "")
            if namespace in keep_namespaces:
                continue
            if (meta.get("labels") or {}).get(MANAGED_BY) != MANAGED_BY_VALUE:
                continue
            try:
                await self.client.delete(resource_path("v1", "configmaps", namespace=namespace, name=name))
            except ApiError as error:
                if not error.not_found:
                    raise
            self.forget(namespace, name)
            deleted.append(f"{namespace}/{name}")
        return deleted
