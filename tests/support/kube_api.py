"""What a test does to the real API server as the cluster admin: create, read, patch, delete, wait.

Calls are short synchronous HTTP requests (a few ms on loopback); `wait_for*` poll them from async
tests. References are 'configmaps' for the core group, or 'group/version/plural'.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode

T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"
WAIT_STEP = 0.1


class ApiFailure(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body[:500]}")
        self.status = status
        self.body = body


def collection_path(ref: str, namespace: str | None) -> str:
    if "/" in ref:
        group_version, plural = ref.rsplit("/", 1)
        base = f"/apis/{group_version}"
    else:
        base, plural = "/api/v1", ref
    return base + (f"/namespaces/{namespace}" if namespace else "") + f"/{plural}"


def object_path(ref: str, name: str, namespace: str | None, subresource: str = "") -> str:
    return f"{collection_path(ref, namespace)}/{name}" + (f"/{subresource}" if subresource else "")


class KubeApi:
    """The admin's view of the cluster."""

    def __init__(self, server: str, token: str, ca_file: str) -> None:
        self.server = server
        self.token = token
        self._ssl = ssl.create_default_context(cafile=ca_file)

    def call(self, method: str, path: str, body: Any = None, *, params: Mapping[str, str] | None = None,
             content_type: str = "application/json") -> Any:
        url = self.server + path + (f"?{urlencode(params)}" if params else "")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": content_type, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self._ssl, timeout=30) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as error:
            raise ApiFailure(error.code, error.read().decode(errors="replace")) from None
        return json.loads(text) if text else None

    # -- objects ---------------------------------------------------------------------------------

    def get_object(self, ref: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.call("GET", object_path(ref, name, namespace))
            return found
        except ApiFailure as error:
            if error.status == 404:
                return None
            raise

    def list_objects(self, ref: str, namespace: str | None = None, *, label_selector: str | None = None,
                     field_selector: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        listing = self.call("GET", collection_path(ref, namespace), params=params or None)
        return list(listing.get("items") or [])

    def create_object(self, ref: str, body: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        namespace = namespace or (body.get("metadata") or {}).get("namespace")
        created: dict[str, Any] = self.call("POST", collection_path(ref, namespace), dict(body))
        return created

    def put_object(self, ref: str, body: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        name = body["metadata"]["name"]
        namespace = namespace or body["metadata"].get("namespace")
        replaced: dict[str, Any] = self.call("PUT", object_path(ref, name, namespace), dict(body))
        return replaced

    def patch_object(self, ref: str, name: str, patch: Mapping[str, Any], namespace: str | None = None,
                     subresource: str = "") -> dict[str, Any]:
        patched: dict[str, Any] = self.call("PATCH", object_path(ref, name, namespace, subresource), dict(patch),
                                            content_type=MERGE_PATCH)
        return patched

    def delete_object(self, ref: str, name: str, namespace: str | None = None, *,
                      propagation: str | None = None) -> bool:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation} if propagation else None
        try:
            self.call("DELETE", object_path(ref, name, namespace), body)
            return True
        except ApiFailure as error:
            if error.status == 404:
                return False
            raise

    # -- namespaces and events -------------------------------------------------------------------

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        return self.create_object("namespaces", {"metadata": {"name": name, "labels": dict(labels or {})}})

    def hold_namespace_terminating(self, name: str) -> None:
        """Delete `name` while a finalizer on one of its ConfigMaps keeps it Terminating (for real)."""
        self.create_object("configmaps", {"metadata": {"name": "sluice-test-hold", "namespace": name,
                                                       "finalizers": ["sluice.dev/test-hold"]}}, name)
        self.delete_object("namespaces", name)

    def release_namespace(self, name: str) -> None:
        """Drop the test finalizer so a held namespace can finish terminating."""
        try:
            self.patch_object("configmaps", "sluice-test-hold", {"metadata": {"finalizers": None}}, name)
        except ApiFailure as error:
            if error.status != 404:
                raise

    def events(self, namespace: str | None = None, *, involved_name: str | None = None,
               reason: str | None = None, involved_kind: str | None = None) -> list[dict[str, Any]]:
        fields = [f"involvedObject.name={involved_name}" if involved_name else "",
                  f"reason={reason}" if reason else "", f"involvedObject.kind={involved_kind}" if involved_kind else ""]
        selector = ",".join(f for f in fields if f)
        return self.list_objects("events", namespace, field_selector=selector or None)

    # -- waiting ---------------------------------------------------------------------------------

    async def wait_for(self, check: Callable[[], T], *, timeout_s: float = 10.0, what: str = "condition") -> T:
        deadline = time.monotonic() + timeout_s
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            await asyncio.sleep(WAIT_STEP)

    async def wait_for_object(self, ref: str, name: str, namespace: str | None = None, *,
                              predicate: Callable[[dict[str, Any]], Any] | None = None,
                              timeout_s: float = 10.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            obj = self.get_object(ref, name, namespace)
            return obj if obj is not None and (predicate is None or predicate(obj)) else None
        return await self.wait_for(check, timeout_s=timeout_s, what=f"{ref} {namespace or ''}/{name}")

    async def wait_for_deletion(self, ref: str, name: str, namespace: str | None = None, *,
                                timeout_s: float = 10.0) -> None:
        await self.wait_for(lambda: self.get_object(ref, name, namespace) is None, timeout_s=timeout_s,
                            what=f"deletion of {ref} {namespace or ''}/{name}")
