"""Publish documents into ConfigMaps that Sluice owns, and never touch one it does not.

Ownership is the `app.kubernetes.io/managed-by: sluice` label, the owner's label
(`sluice.dev/policy` or `sluice.dev/circuit`, hashed when the name is long) and an ownerReference to
the owner, so Kubernetes garbage-collects the ConfigMap with it. A cluster-scoped CircuitBreaker may
own ConfigMaps in any namespace, so circuit ConfigMaps need no cluster-wide clean-up either. A
ConfigMap whose owner was deleted and re-created under the same name (a new uid) before the garbage
collector ran is adopted, not reported as a conflict.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sluice_operator.kube import ApiError, KubeClient, resource_path
from sluice_operator.publish.names import label_value
from sluice_operator.publish.outcome import PublishOutcome, PublishResult

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "sluice"
POLICY_LABEL = "sluice.dev/policy"
CIRCUIT_LABEL = "sluice.dev/circuit"
OWNER_NAME_ANNOTATION = "sluice.dev/owner-name"
CONFLICT_RETRIES = 3

log = logging.getLogger(__name__)


def owner_name(configmap: Mapping[str, Any], label_key: str) -> str | None:
    """The full name of the object a ConfigMap belongs to (the label may be a hashed short form)."""
    meta = configmap.get("metadata") or {}
    annotated = (meta.get("annotations") or {}).get(OWNER_NAME_ANNOTATION)
    return str(annotated) if annotated else (meta.get("labels") or {}).get(label_key)


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

    @property
    def label(self) -> str:
        return label_value(self.name)

    @property
    def selector(self) -> str:
        return f"{MANAGED_BY}={MANAGED_BY_VALUE},{self.label_key}={self.label}"

    def owns(self, configmap: Mapping[str, Any]) -> bool:
        """Ours: our labels, and every ownerReference names this kind and name (any uid: a re-created owner)."""
        meta = configmap.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(MANAGED_BY) != MANAGED_BY_VALUE or labels.get(self.label_key) != self.label:
            return False
        annotated = (meta.get("annotations") or {}).get(OWNER_NAME_ANNOTATION)
        if annotated is not None and annotated != self.name:
            return False
        return all(ref.get("kind") == self.kind and ref.get("name") == self.name
                   for ref in meta.get("ownerReferences") or [])


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
            "labels": {MANAGED_BY: MANAGED_BY_VALUE, owner.label_key: owner.label},
            "annotations": {OWNER_NAME_ANNOTATION: owner.name},
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
                    if dict(current.get("data") or {}) == dict(data) and self._current_owner(current, owner):
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

    @staticmethod
    def _current_owner(configmap: Mapping[str, Any], owner: Owner) -> bool:
        """True when the ConfigMap already points at this very owner (uid), so no write is needed."""
        refs = (configmap.get("metadata") or {}).get("ownerReferences") or []
        return owner.uid is None or any(ref.get("uid") == owner.uid for ref in refs)

    def _remember(self, key: tuple[str, str], obj: Mapping[str, Any], data: Mapping[str, str]) -> None:
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self._versions[key] = (str(version), dict(data))

    async def delete_owned(self, owner: Owner, namespaces: Iterable[str] | None,
                           keep: frozenset[str] = frozenset()) -> list[str]:
        """Delete the owner's ConfigMaps: in `namespaces`, or cluster-wide when None. Returns what went.

        Cluster-wide listing needs a ClusterRole; with watchNamespaces the chart grants ConfigMaps per
        namespace only, so the caller passes the namespaces it may write.
        """
        items: list[Mapping[str, Any]] = []
        scopes: list[str | None] = [None] if namespaces is None else [*sorted(set(namespaces))]
        for scope in scopes:
            listing = await self.client.get(resource_path("v1", "configmaps", namespace=scope),
                                            params={"labelSelector": owner.selector})
            items += listing.get("items") or []
        deleted = []
        for item in items:
            meta = item.get("metadata") or {}
            namespace, name = meta.get("namespace", ""), meta.get("name", "")
            if namespace in keep or not owner.owns(item):
                continue
            try:
                await self.client.delete(resource_path("v1", "configmaps", namespace=namespace, name=name))
            except ApiError as error:
                if not error.not_found:
                    raise
            self.forget(namespace, name)
            deleted.append(f"{namespace}/{name}")
        return deleted

    async def delete_one(self, namespace: str, name: str, owner: Owner) -> bool:
        """Delete one ConfigMap if it is ours; True when it is gone (or was never there)."""
        path = resource_path("v1", "configmaps", namespace=namespace, name=name)
        self.forget(namespace, name)
        try:
            current = await self.client.get(path)
            if not owner.owns(current):
                return False
            await self.client.delete(path)
        except ApiError as error:
            if not error.not_found:
                raise
        return True
