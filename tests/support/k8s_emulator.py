"""An in-process Kubernetes API server for integration tests, built on kmock's KubernetesEmulator.

kmock provides the HTTP server on a real loopback socket, discovery (/api, /apis, ...), request
recording, the DSL for ad-hoc reactions (`emulator['get /x'] << 404`) and the versioned object store
(`emulator.objects[...]`). What Kopf and Sluice additionally need is implemented here and in the
`k8s_emulator_*` modules: resourceVersions and 409s, the status subresource, PUT, JSON/merge patches,
selectors, resumable watches with 410 Gone, finalizers, namespace termination, owner-reference GC,
plus test hooks (a request log, fault injection, direct object access, waiting for conditions).

Usage::

    async with running_emulator() as (emulator, base_url):
        ...  # point Kopf (see k8s_emulator_kopf) or the kubernetes client at base_url
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping
from types import EllipsisType
from typing import Any, NamedTuple, TypeVar

import aiohttp.web
import attrs
import kmock
from kmock._internal.apps import KMockError
from kmock._internal.filtering import FnCriteria
from kmock._internal.rendering import Response, StreamingError

from tests.support import k8s_emulator_errors as errors
from tests.support.k8s_emulator_errors import ApiError
from tests.support.k8s_emulator_hooks import Fault, RecordedRequest
from tests.support.k8s_emulator_http import parse_api_path, parse_request, truthy
from tests.support.k8s_emulator_patches import APPLY, PATCH_TYPES
from tests.support.k8s_emulator_resources import DEFAULT_RESOURCES, NAMESPACES, ResourceSpec
from tests.support.k8s_emulator_selectors import FieldSelector, LabelSelector
from tests.support.k8s_emulator_store import ClusterState
from tests.support.k8s_emulator_watch import Watcher, WatchItem

__all__ = [
    "ApiError",
    "EmulatorHandle",
    "Fault",
    "KubeEmulator",
    "RecordedRequest",
    "ResourceSpec",
    "make_sync_api_client",
    "parse_api_path",
    "running_emulator",
]

JSON = dict[str, Any]
T = TypeVar("T")


def _encode_continue(namespace: str, name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([namespace, name]).encode()).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
        return str(namespace), str(name)
    except (ValueError, TypeError):
        raise errors.bad_request("invalid continue token") from None


def _line(kind: str, obj: Mapping[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


@attrs.define(kw_only=True, repr=False)
class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's KubernetesEmulator with kube-apiserver semantics and test hooks.

    Direct helpers (`get_object`, `put_object`, ...) must be called in the event-loop thread that
    runs the server; clients in other threads (the sync `kubernetes` client) go through HTTP.
    """

    resource_specs: tuple[ResourceSpec, ...] = DEFAULT_RESOURCES
    default_namespaces: tuple[str, ...] = ("default", "kube-system")
    history_limit: int = 10_000
    garbage_collection: bool = True
    require_namespaces: bool = False  # True: creating in a missing namespace is a 404, like real clusters
    bookmark_interval_s: float = 30.0  # idle watches with allowWatchBookmarks=true get a BOOKMARK this often

    state: ClusterState = attrs.field(init=False)
    request_log: list[RecordedRequest] = attrs.field(factory=list, init=False)
    #: kmock's own request history makes its DSL filters cost O(requests) per request; large
    #: benchmarks switch it off (our `request_log` still records everything).
    keep_kmock_history: bool = attrs.field(default=True, kw_only=True)
    _served: int = attrs.field(default=0, init=False)
    faults: list[Fault] = attrs.field(factory=list, init=False)
    _records: dict[int, RecordedRequest] = attrs.field(factory=dict, init=False)  # by kmock request id

    def __attrs_post_init__(self) -> None:
        # Discovery from the scaffold; CRUD/watch from us instead of kmock's simplistic handlers.
        kmock.KubernetesScaffold.__attrs_post_init__(self)
        self.state = ClusterState(
            self.objects,
            history_limit=self.history_limit,
            garbage_collection=self.garbage_collection,
            require_namespaces=self.require_namespaces,
        )
        self.state.on_register.append(self._advertise)
        self.state.on_unregister.append(self._withdraw)
        for spec in self.resource_specs:
            self.state.register(spec, builtin=True)
        self._create_default_namespaces()
        self.fallback[FnCriteria(self._is_resource_request)] << self._serve_resource

    def __repr__(self) -> str:  # kmock's generated repr dumps every request: unreadable in test failures
        return (f"KubeEmulator(resourceVersion={self.state.resource_version}, "
                f"requests={len(self.request_log)}, open_watches={self.open_watches})")

    # ------------------------------------------------------------------ kmock integration

    def _advertise(self, spec: ResourceSpec) -> None:
        self.resources[kmock.resource(group=spec.group, version=spec.version, plural=spec.plural)] = (
            kmock.ResourceInfo(
                namespaced=spec.namespaced,
                kind=spec.kind,
                singular=spec.singular_name,
                verbs=set(spec.verbs),
                shortnames=set(spec.short_names),
                categories=set(spec.categories),
                subresources=set(spec.subresources),
            ))

    def _withdraw(self, spec: ResourceSpec) -> None:
        key = kmock.resource(group=spec.group, version=spec.version, plural=spec.plural)
        if key in self.resources:
            del self.resources[key]

    def _get_resources(self) -> list[kmock.resource]:
        # Only what is served: kmock would also advertise resources of soft-deleted objects.
        return kmock.KubernetesScaffold._get_resources(self)

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        # kmock renders the core group's groupVersion as "/v1"; kube-apiserver says "v1".
        payload = await kmock.KubernetesScaffold._serve_version(self, request)
        if isinstance(payload, dict) and str(payload.get("groupVersion", "")).startswith("/"):
            payload["groupVersion"] = payload["groupVersion"][1:]
        return payload

    def _create_default_namespaces(self) -> None:
        for name in self.default_namespaces:
            if self.state.get(NAMESPACES, None, name) is None:
                self.state.create(NAMESPACES, None, {"metadata": {"name": name}})

    @staticmethod
    def _is_resource_request(request: kmock.Request) -> bool:
        return request.resource is not None and request.resource.plural is not None

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Same flow as kmock's RawHandler.__call__, but with our URL parsing."""
        await raw_request.read()
        raw_response: aiohttp.web.StreamResponse | None = None
        try:
            if self.limit is not None and len(self._requests) >= self.limit:
                raise KMockError("Too many requests have been served so far.")
            self._served += 1
            request = await parse_request(raw_request, request_id=self._served)
            self._requests.append(request)
            try:
                return await self._handle(request)
            except StreamingError as exc:
                raw_response = exc.args[0]
                if exc.__cause__ is not None:
                    raise exc.__cause__ from None
                raise
            finally:
                if not self.keep_kmock_history:
                    self._requests.remove(request)
        except Exception as exc:
            if not self._errors:
                raise
            self._errors[-1].append(exc)
            if raw_response is None or not raw_response.prepared:
                return await self._render_error(exc)
            await self._stream_error(exc, raw_response)
            await raw_response.write_eof()
            return raw_response

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        record = self._record(request)
        for fault in self.faults:
            if fault.matches(record):
                fault.hits.append(record)
                record.faulted = True
                injected = fault.render(record)
                record.status = injected.status
                return injected
        # Skip KubernetesEmulator._handle: its implicit object tracking would fight our store.
        response = await kmock.RawHandler._handle(self, request)
        record.status = response.status
        return response

    def _record(self, request: kmock.Request) -> RecordedRequest:
        path = parse_api_path(request.url.path)
        record = RecordedRequest(
            method=str(request.method.value).upper(),
            path=request.url.path,
            query=dict(request.params),
            body=request.data,
            content_type=request.headers.get("Content-Type"),
            group=path.group if path else None,
            version=path.version if path else None,
            resource=path.plural if path else None,
            namespace=path.namespace if path else None,
            name=path.name if path else None,
            subresource=path.subresource if path else None,
        )
        self.request_log.append(record)
        self._records[request.id] = record
        self.state.notify_waiters()
        return record

    # ------------------------------------------------------------------ the API

    async def _serve_resource(self, request: kmock.Request) -> Response:
        try:
            return self._dispatch(request)
        except ApiError as exc:
            return Response(status=exc.code, payload=exc.status_body())

    def _dispatch(self, request: kmock.Request) -> Response:
        res = request.resource
        assert res is not None and res.plural is not None  # guaranteed by _is_resource_request
        spec = self.state.lookup(res.group or "", res.version or "", res.plural)
        namespace, name, sub = request.namespace, request.name, request.subresource
        method = str(request.method.value).upper()
        params = request.params
        if namespace is not None and not spec.namespaced:
            raise errors.resource_not_found()
        if sub is not None and not (sub == "status" and spec.status_subresource):
            raise errors.resource_not_found()
        if method == "GET" and truthy(params.get("watch")):
            if request.id in self._records:  # a stream has no final status: record it as it starts
                self._records[request.id].status = 200
            return self._serve_watch_stream(spec, namespace, name, params)
        if method == "GET" and name is None:
            return Response(status=200, payload=self._list_body(spec, namespace, params))
        if method == "GET" and name is not None:
            return Response(status=200, payload=self.state.require(spec, namespace, name))
        if method == "POST" and name is None:
            if spec.namespaced and namespace is None:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            return Response(status=201, payload=self.state.create(spec, namespace, request.data))
        if method == "PUT" and name is not None:
            return Response(status=200, payload=self.state.replace(
                spec, namespace, name, request.data, subresource=sub))
        if method == "PATCH" and name is not None:
            content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if content_type == APPLY or content_type not in PATCH_TYPES:
                raise ApiError(415, f"the body of the request was in an unknown format - accepted media "
                                    f"types include: {', '.join(PATCH_TYPES)}")
            if request.data is None:
                raise errors.bad_request("the patch body is not valid JSON")
            return Response(status=200, payload=self.state.patch(
                spec, namespace, name, request.data, content_type, subresource=sub))
        if method == "DELETE" and name is not None:
            options = request.data if isinstance(request.data, dict) else {}
            options = {**options, **({"propagationPolicy": params["propagationPolicy"]}
                                     if "propagationPolicy" in params else {})}
            return Response(status=200, payload=self.state.delete(spec, namespace, name, options))
        if method == "DELETE" and name is None:
            return Response(status=200, payload=self._delete_collection(spec, namespace, params))
        raise ApiError(405, "the server does not allow this method on the requested resource")

    def _selectors(self, spec: ResourceSpec, params: Mapping[str, str]) -> tuple[LabelSelector, FieldSelector]:
        return (LabelSelector.parse(params.get("labelSelector")),
                FieldSelector.parse(params.get("fieldSelector"), spec.field_selectors))

    def _list_body(self, spec: ResourceSpec, namespace: str | None, params: Mapping[str, str]) -> JSON:
        labels, fields = self._selectors(spec, params)
        items = self.state.select(spec, namespace, labels, fields)
        for item in items:
            item.setdefault("apiVersion", spec.api_version)
            item.setdefault("kind", spec.kind)
        metadata: JSON = {"resourceVersion": str(self.state.resource_version)}
        if params.get("continue"):
            after = _decode_continue(params["continue"])
            items = [i for i in items
                     if ((i["metadata"].get("namespace") or ""), i["metadata"]["name"]) > after]
        raw_limit = params.get("limit") or "0"
        if not raw_limit.isdigit():
            raise errors.bad_request(f"invalid limit: {raw_limit!r}")
        limit = int(raw_limit)
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            metadata["continue"] = _encode_continue(last.get("namespace") or "", last["name"])
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {"apiVersion": spec.api_version, "kind": spec.list_kind, "metadata": metadata, "items": items}

    def _delete_collection(self, spec: ResourceSpec, namespace: str | None, params: Mapping[str, str]) -> JSON:
        labels, fields = self._selectors(spec, params)
        for item in self.state.select(spec, namespace, labels, fields):
            meta = item["metadata"]
            if self.state.get(spec, meta.get("namespace"), meta["name"]) is not None:
                self.state.delete(spec, meta.get("namespace"), meta["name"])
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    def _serve_watch_stream(self, spec: ResourceSpec, namespace: str | None, name: str | None,
                            params: Mapping[str, str]) -> Response:
        labels, fields = self._selectors(spec, params)
        if name is not None:  # the legacy single-object form: GET .../name?watch=true
            fields = FieldSelector(f"metadata.name={name}", (*fields.terms, ("metadata.name", "=", name)))
        timeout: float | None = None
        if params.get("timeoutSeconds"):
            try:
                timeout = float(params["timeoutSeconds"])
            except ValueError:
                raise errors.bad_request("timeoutSeconds must be a number") from None
        send_initial = truthy(params.get("sendInitialEvents"))
        since = None if send_initial else params.get("resourceVersion")
        try:
            watcher, backlog = self.state.open_watch(spec, namespace, labels, fields, since)
        except ApiError as exc:
            if exc.code != 410:
                raise
            return Response(status=200, payload=self._error_stream(exc))
        bookmark: JSON | None = None
        if send_initial and truthy(params.get("allowWatchBookmarks")):
            bookmark = {"apiVersion": spec.api_version, "kind": spec.kind, "metadata": {
                "resourceVersion": str(self.state.resource_version),
                "annotations": {"k8s.io/initial-events-end": "true"},
            }}
        bookmarks = truthy(params.get("allowWatchBookmarks"))
        return Response(status=200, payload=self._watch_stream(watcher, backlog, timeout, bookmark, bookmarks))

    async def _error_stream(self, exc: ApiError) -> AsyncIterator[bytes]:
        yield b""
        yield _line("ERROR", exc.status_body())

    async def _watch_stream(self, watcher: Watcher, backlog: list[WatchItem], timeout_s: float | None,
                            initial_bookmark: JSON | None, bookmarks: bool) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        try:
            yield b""  # kmock sends the headers with the first chunk: let clients see 200 at once
            for kind, obj in backlog:
                yield _line(kind, obj)
            if initial_bookmark is not None:
                yield _line("BOOKMARK", initial_bookmark)
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                wait = remaining
                if bookmarks:
                    wait = self.bookmark_interval_s if wait is None else min(wait, self.bookmark_interval_s)
                try:
                    async with asyncio.timeout(wait):
                        item = await watcher.queue.get()
                except TimeoutError:
                    if bookmarks and (deadline is None or loop.time() < deadline):
                        # Idle: tell the client how far it is up to date, as kube-apiserver does.
                        yield _line("BOOKMARK", {
                            "apiVersion": watcher.spec.api_version, "kind": watcher.spec.kind,
                            "metadata": {"resourceVersion": str(self.state.resource_version)},
                        })
                    continue
                if item is None:
                    break
                yield _line(item[0], item[1])
        finally:
            self.state.close_watch(watcher)

    # ------------------------------------------------------------------ test hooks: objects

    def spec(self, ref: str | ResourceSpec) -> ResourceSpec:
        """Resolve `configmaps`, `cm`, `bpp`, `BackpressurePolicy`, `sluice.dev/v1alpha1/...`."""
        return self.state.resolve(ref)

    def register_resource(self, spec: ResourceSpec) -> None:
        """Serve one more resource type (discovery and CRUD)."""
        self.state.register(spec, builtin=True)

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion."""
        return self.state.resource_version

    def get_object(self, ref: str | ResourceSpec, name: str, namespace: str | None = None) -> JSON | None:
        """The live object (a copy) or None."""
        return self.state.get(self.spec(ref), namespace, name)

    def list_objects(self, ref: str | ResourceSpec, namespace: str | None = None, *,
                     label_selector: str | None = None, field_selector: str | None = None) -> list[JSON]:
        """Live objects (copies), optionally filtered like ?labelSelector= / ?fieldSelector=."""
        spec = self.spec(ref)
        return self.state.select(spec, namespace, LabelSelector.parse(label_selector),
                               FieldSelector.parse(field_selector, spec.field_selectors))

    def create_object(self, ref: str | ResourceSpec, body: JSON, namespace: str | None = None) -> JSON:
        """Create exactly as a POST would (raises ApiError on 409/403/...)."""
        return self.state.create(self.spec(ref), namespace, body)

    def put_object(self, ref: str | ResourceSpec, body: JSON, namespace: str | None = None) -> JSON:
        """Create or overwrite, status included, with no preconditions (for arranging state)."""
        return self.state.put(self.spec(ref), namespace, body)

    def patch_object(self, ref: str | ResourceSpec, name: str, patch: Any, namespace: str | None = None, *,
                     subresource: str | None = None,
                     content_type: str = "application/merge-patch+json") -> JSON:
        """PATCH exactly as over HTTP (merge by default; `subresource="status"` for status)."""
        return self.state.patch(self.spec(ref), namespace, name, patch, content_type, subresource=subresource)

    def delete_object(self, ref: str | ResourceSpec, name: str, namespace: str | None = None) -> JSON:
        """DELETE exactly as over HTTP (finalizers defer it; namespaces cascade)."""
        return self.state.delete(self.spec(ref), namespace, name)

    def create_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> JSON:
        """Create a namespace (Active)."""
        meta: JSON = {"name": name}
        if labels:
            meta["labels"] = dict(labels)
        return self.state.create(NAMESPACES, None, {"metadata": meta})

    def terminate_namespace(self, name: str) -> JSON:
        """Mark a namespace Terminating (creating it if needed) and keep its content: creates get 403."""
        return self.state.terminate_namespace(name)

    def events(self, namespace: str | None = None, *, involved_name: str | None = None,
               reason: str | None = None) -> list[JSON]:
        """Core v1 Events (what Kopf posts), optionally for one involved object / reason."""
        items = self.list_objects("events", namespace)
        return [e for e in items
                if (involved_name is None or (e.get("involvedObject") or {}).get("name") == involved_name)
                and (reason is None or e.get("reason") == reason)]

    @property
    def internal_errors(self) -> list[Exception]:
        """Unexpected exceptions raised while serving (emulator bugs or failing DSL reactions)."""
        return [e for e in self.errors if not isinstance(e, kmock.KubernetesError)]

    @property
    def open_watches(self) -> int:
        """How many watch streams are open right now (wait for it before writing in watch tests)."""
        return self.state.watch_count

    def compact_history(self) -> None:
        """Forget the change log: watches resuming from an older resourceVersion get 410 Gone."""
        self.state.compact()

    def close_watches(self) -> None:
        """End every open watch stream (clients see a normal end of stream and may reconnect)."""
        self.state.close_all_watches()

    def reset(self) -> None:
        """Back to a fresh cluster: objects, log, faults, CRD-registered resources, open watches."""
        self.state.reset()
        self.request_log.clear()
        self._records.clear()
        self._requests.clear()
        self.faults.clear()
        self._create_default_namespaces()

    # ------------------------------------------------------------------ test hooks: log & faults

    def recorded(self, *, method: str | Collection[str] | None = None, resource: str | None = None,
                 namespace: str | None = None, name: str | None = None,
                 subresource: str | EllipsisType | None = ..., group: str | None = None,
                 writes_only: bool = False, include_faulted: bool = True) -> list[RecordedRequest]:
        """Requests from the log matching every given filter.

        `resource` is a plural or any alias `spec()` understands; `subresource=None` means "main
        resource only" while the default `...` means "any"; `group` tells core and events.k8s.io
        events apart.
        """
        methods = None if method is None else ({method.upper()} if isinstance(method, str)
                                               else {m.upper() for m in method})
        plural = self._plural(resource)
        return [r for r in self.request_log
                if (not writes_only or r.is_write)
                and (include_faulted or not r.faulted)
                and (methods is None or r.method in methods)
                and (plural is None or r.resource == plural)
                and (namespace is None or r.namespace == namespace)
                and (name is None or r.name == name)
                and (group is None or r.group == group)
                and (isinstance(subresource, EllipsisType) or r.subresource == subresource)]

    def writes(self, *, resource: str | None = None, namespace: str | None = None, name: str | None = None,
               method: str | Collection[str] | None = None,
               subresource: str | EllipsisType | None = ..., group: str | None = None,
               include_faulted: bool = False) -> list[RecordedRequest]:
        """POST/PUT/PATCH/DELETE requests (injected-fault answers excluded unless asked)."""
        return self.recorded(method=method, resource=resource, namespace=namespace, name=name,
                             subresource=subresource, group=group, writes_only=True,
                             include_faulted=include_faulted)

    def _plural(self, resource: str | None) -> str | None:
        if resource is None:
            return None
        try:
            return self.spec(resource).plural
        except KeyError:
            return resource

    def inject_fault(self, status: int, *, times: int | None = 1,
                     method: str | Collection[str] | None = None, resource: str | None = None,
                     namespace: str | None = None, name: str | None = None,
                     subresource: str | EllipsisType | None = ...,
                     predicate: Callable[[RecordedRequest], bool] | None = None,
                     writes_only: bool = True, reason: str | None = None, message: str | None = None,
                     retry_after: float | None = None) -> Fault:
        """Answer the next `times` matching requests (writes by default) with `status`; nothing changes.

        `times=None` keeps failing until `clear_faults()`. The returned Fault records its `hits`.
        """
        methods = None if method is None else frozenset(
            {method.upper()} if isinstance(method, str) else {m.upper() for m in method})
        fault = Fault(status=status, times=times, methods=methods, resource=self._plural(resource),
                      namespace=namespace, name=name, subresource=subresource, predicate=predicate,
                      writes_only=writes_only, reason=reason, message=message, retry_after=retry_after)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self.faults.clear()

    # ------------------------------------------------------------------ test hooks: waiting

    async def wait_for(self, predicate: Callable[[], T | None], *, timeout_s: float = 5.0,
                       what: str = "") -> T:
        """Re-check `predicate` after every change and request until it is truthy; return its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"not met within {timeout_s}s: {what or predicate!r}")
            waiter: asyncio.Future[None] = loop.create_future()
            self.state.add_waiter(waiter)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await waiter

    async def wait_for_object(self, ref: str | ResourceSpec, name: str, namespace: str | None = None, *,
                              predicate: Callable[[JSON], Any] | None = None,
                              timeout_s: float = 5.0) -> JSON:
        """Wait until the object exists (and satisfies `predicate`); return it."""
        def check() -> JSON | None:
            obj = self.get_object(ref, name, namespace)
            return obj if obj is not None and (predicate is None or predicate(obj)) else None
        return await self.wait_for(check, timeout_s=timeout_s, what=f"{ref} {namespace}/{name}")

    async def wait_for_deletion(self, ref: str | ResourceSpec, name: str, namespace: str | None = None, *,
                                timeout_s: float = 5.0) -> None:
        """Wait until the object is fully gone."""
        await self.wait_for(lambda: self.get_object(ref, name, namespace) is None,
                            timeout_s=timeout_s, what=f"deletion of {ref} {namespace}/{name}")


class EmulatorHandle(NamedTuple):
    """What `running_emulator()` yields: unpack as `emulator, base_url = handle`."""

    emulator: KubeEmulator
    base_url: str


@contextlib.asynccontextmanager
async def running_emulator(
    *,
    resources: Iterable[ResourceSpec] = DEFAULT_RESOURCES,
    require_namespaces: bool = False,
    garbage_collection: bool = True,
    history_limit: int = 10_000,
    check_errors: bool = True,
    keep_kmock_history: bool = True,
) -> AsyncIterator[EmulatorHandle]:
    """Serve a fresh emulator over HTTP on a free 127.0.0.1 port for the duration of the block.

    With `check_errors`, unexpected exceptions inside the emulator (answered as HTTP 500) are raised
    when the block exits; Kubernetes-style errors (404, 409, ...) are normal answers, not failures.
    """
    emulator = KubeEmulator(
        resource_specs=tuple(resources),
        require_namespaces=require_namespaces,
        garbage_collection=garbage_collection,
        history_limit=history_limit,
        keep_kmock_history=keep_kmock_history,
    )
    async with emulator, kmock.Server(emulator, host="127.0.0.1") as server:
        try:
            yield EmulatorHandle(emulator, str(server.url).rstrip("/"))
        finally:
            # End the streams first so the server's shutdown does not wait for open watches.
            emulator.close_watches()
            await asyncio.sleep(0)
        # Reached only if the block succeeded: surface emulator bugs (HTTP 500s) with their traceback.
        if check_errors and emulator.internal_errors:
            raise ExceptionGroup("the API emulator failed internally", emulator.internal_errors)


def make_sync_api_client(base_url: str) -> Any:
    """A sync `kubernetes.client.ApiClient` for the emulator (use it from a worker thread)."""
    import kubernetes.client

    configuration = kubernetes.client.Configuration()
    configuration.host = base_url
    configuration.verify_ssl = False
    configuration.retries = 0
    return kubernetes.client.ApiClient(configuration)

