"""The emulator's cluster state: objects, resourceVersions, lifecycle rules, and the change log.

Objects live in kmock's `ObjectsArray` (so `emulator.objects[...]` keeps every version for assertions);
this module adds what kmock leaves out and Kopf depends on: a global resourceVersion, optimistic
concurrency (409 on stale writes), the status subresource, generation, finalizers with deferred
deletion, namespace termination, owner-reference garbage collection, and watch resumption.

Everything here is synchronous and must run in the event-loop thread that serves the HTTP API.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import random
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import kmock

from tests.support import k8s_emulator_errors as errors
from tests.support.k8s_emulator_errors import ApiError
from tests.support.k8s_emulator_patches import JSON_PATCH, PatchError, apply_patch
from tests.support.k8s_emulator_resources import CRDS, NAMESPACES, ResourceSpec, specs_from_crd
from tests.support.k8s_emulator_selectors import FieldSelector, LabelSelector
from tests.support.k8s_emulator_watch import ChangeEvent, Watcher, WatchItem

JSON = dict[str, Any]
SpecKey = tuple[str, str, str]  # group, version, plural

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet kube-apiserver uses for generateName
_SERVER_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                "generation", "resourceVersion", "selfLink", "managedFields")


def now_rfc3339() -> str:
    """Current UTC time in the seconds-precision format the API server uses."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Mapping[str, Any]) -> JSON:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _spec_part(obj: Mapping[str, Any]) -> JSON:
    """Everything that bumps metadata.generation: all but metadata, status, apiVersion, kind."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _is_terminating(ns_obj: Mapping[str, Any] | None) -> bool:
    if ns_obj is None:
        return False
    phase = (ns_obj.get("status") or {}).get("phase")
    return phase == "Terminating" or bool(_meta(ns_obj).get("deletionTimestamp"))


class ClusterState:
    """All objects of all resources, with kube-apiserver write semantics."""

    def __init__(
        self,
        objects: kmock.ObjectsArray,
        *,
        history_limit: int = 10_000,
        garbage_collection: bool = True,
        require_namespaces: bool = False,
    ) -> None:
        self.objects = objects
        self.history_limit = history_limit
        self.garbage_collection = garbage_collection
        self.require_namespaces = require_namespaces
        self.specs: dict[SpecKey, ResourceSpec] = {}
        self.on_register: list[Callable[[ResourceSpec], None]] = []
        self.on_unregister: list[Callable[[ResourceSpec], None]] = []
        self._builtin: set[SpecKey] = set()
        self._crd_specs: dict[str, list[ResourceSpec]] = {}  # CRD name -> the specs it registered
        self._rv = 0
        self._history: collections.deque[ChangeEvent] = collections.deque()
        self._compacted_rv = 0
        self._watchers: set[Watcher] = set()
        self._waiters: list[asyncio.Future[None]] = []
        self._cascading: set[str] = set()  # namespaces deleted via the API: content goes, then the ns
        self._loop_thread: int | None = None  # set once streams/waiters exist: they belong to that loop

    # ----------------------------------------------------------------- resources

    def register(self, spec: ResourceSpec, *, builtin: bool = False) -> None:
        """Serve a resource (discovery + CRUD)."""
        key = (spec.group, spec.version, spec.plural)
        self.specs[key] = spec
        if builtin:
            self._builtin.add(key)
        for callback in self.on_register:
            callback(spec)

    def unregister(self, spec: ResourceSpec) -> None:
        """Stop serving a resource that a CRD registered (built-ins stay)."""
        key = (spec.group, spec.version, spec.plural)
        if key in self._builtin or key not in self.specs:
            return
        del self.specs[key]
        for callback in self.on_unregister:
            callback(spec)

    def lookup(self, group: str, version: str, plural: str) -> ResourceSpec:
        """The served spec for a URL's group/version/plural, or a 404."""
        spec = self.specs.get((group, version, plural))
        if spec is None:
            raise errors.resource_not_found()
        return spec

    def resolve(self, ref: str | ResourceSpec) -> ResourceSpec:
        """Find a spec by plural, short name, kind, `plural.group` or `group/version/plural`.

        Ambiguous plurals (core vs events.k8s.io `events`) resolve to the core group.
        """
        if isinstance(ref, ResourceSpec):
            return ref
        text = ref.strip()
        candidates: list[ResourceSpec] = []
        for spec in self.specs.values():
            names = {spec.plural, spec.singular_name, spec.kind.lower(), *spec.short_names}
            if (text.lower() in names or text in (spec.qualified, f"{spec.api_version}/{spec.plural}")
                    or text == f"{spec.plural}.{spec.version}.{spec.group}".rstrip(".")):
                candidates.append(spec)
        if not candidates:
            raise KeyError(f"unknown resource: {ref!r}")
        candidates.sort(key=lambda s: (s.group != "", s.group, s.version))
        return candidates[0]

    # ----------------------------------------------------------------- reading

    @property
    def resource_version(self) -> int:
        """The current global resourceVersion (the RV of the last write)."""
        return self._rv

    def _key(self, spec: ResourceSpec, namespace: str | None, name: str) -> tuple[kmock.resource, str | None, str]:
        return (kmock.resource(group=spec.group, version=spec.version, plural=spec.plural),
                namespace if spec.namespaced else None, name)

    def _stored(self, spec: ResourceSpec, namespace: str | None, name: str) -> JSON | None:
        key = self._key(spec, namespace, name)
        if key not in self.objects:
            return None
        obj = self.objects[key]
        return None if obj.deleted else obj.raw

    def get(self, spec: ResourceSpec, namespace: str | None, name: str) -> JSON | None:
        """A deep copy of the live object, or None."""
        stored = self._stored(spec, namespace, name)
        return copy.deepcopy(stored) if stored is not None else None

    def require(self, spec: ResourceSpec, namespace: str | None, name: str) -> JSON:
        """The live object or a 404 ApiError."""
        obj = self.get(spec, namespace, name)
        if obj is None:
            raise errors.not_found(spec.plural, spec.group, name)
        return obj

    def _live(self, spec: ResourceSpec | None = None) -> Iterator[tuple[ResourceSpec, str | None, str, JSON]]:
        for (res, namespace, name), obj in list(self.objects.items()):
            if obj.deleted:
                continue
            key = (res.group or "", res.version or "", res.plural or "")
            found = self.specs.get(key)
            if found is None or (spec is not None and found != spec):
                continue
            yield found, namespace, name, obj.raw

    def select(
        self,
        spec: ResourceSpec,
        namespace: str | None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> list[JSON]:
        """Deep copies of matching objects, ordered by namespace then name (as etcd keys sort)."""
        items = [
            obj for _, ns, _, obj in self._live(spec)
            if (namespace is None or ns == namespace)
            and (labels is None or labels.matches(obj))
            and (fields is None or fields.matches(obj))
        ]
        items.sort(key=lambda o: (_meta(o).get("namespace") or "", _meta(o).get("name") or ""))
        return copy.deepcopy(items)

    # ----------------------------------------------------------------- writing (internals)

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _claim_thread(self) -> None:
        if self._loop_thread is None:
            self._loop_thread = threading.get_ident()

    def _record(self, event: ChangeEvent) -> None:
        if self._loop_thread is not None and threading.get_ident() != self._loop_thread:
            raise RuntimeError("change the emulator's state from its event-loop thread only "
                               "(other threads must go through the HTTP API)")
        self._history.append(event)
        while len(self._history) > self.history_limit:
            self._compacted_rv = self._history.popleft().rv
        for watcher in list(self._watchers):
            watcher.deliver(event)
        self.notify_waiters()

    def notify_waiters(self) -> None:
        """Wake everything blocked in `emulator.wait_for()` so it re-checks its condition."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _commit(self, spec: ResourceSpec, body: JSON, old: JSON | None) -> JSON:
        """Store a new version with a fresh resourceVersion and tell the watchers."""
        meta = body["metadata"]
        namespace, name = meta.get("namespace"), meta["name"]
        rv = self._next_rv()
        meta["resourceVersion"] = str(rv)
        key = self._key(spec, namespace, name)
        stored = copy.deepcopy(body)
        if key not in self.objects:
            self.objects[key] = stored
        else:
            self.objects[key].history.append(stored)
        self._record(ChangeEvent(rv, "MODIFIED" if old is not None else "ADDED", spec,
                                 namespace, name, copy.deepcopy(body), old))
        return body

    def _remove(self, spec: ResourceSpec, final: JSON, *, orphan: bool = False) -> JSON:
        """Really delete (finalizers are gone): DELETED event, then GC and namespace cleanup."""
        meta = final["metadata"]
        namespace, name = meta.get("namespace"), meta["name"]
        key = self._key(spec, namespace, name)
        old = copy.deepcopy(self.objects[key].raw)
        meta["resourceVersion"] = str(self._next_rv())
        self.objects[key].delete()
        self._record(ChangeEvent(self._rv, "DELETED", spec, namespace, name, copy.deepcopy(final), old))
        if spec == CRDS:
            for crd_spec in self._crd_specs.pop(name, []):
                self.unregister(crd_spec)
        if spec == NAMESPACES:
            self._cascading.discard(name)
        if self.garbage_collection and not orphan and meta.get("uid"):
            self._collect_dependents(str(meta["uid"]))
        if namespace is not None:
            self._maybe_finalize_namespace(namespace)
        return final

    def _collect_dependents(self, owner_uid: str) -> None:
        """Background-propagation GC: dependents whose every owner is gone are deleted."""
        live_uids = {str(_meta(obj).get("uid")) for _, _, _, obj in self._live()}
        for spec, namespace, name, obj in list(self._live()):
            refs = _meta(obj).get("ownerReferences") or []
            if not any(ref.get("uid") == owner_uid for ref in refs):
                continue
            remaining = [ref for ref in refs if ref.get("uid") in live_uids]
            if remaining:
                updated = copy.deepcopy(obj)
                updated["metadata"]["ownerReferences"] = remaining
                self._commit(spec, updated, copy.deepcopy(obj))
            elif self._stored(spec, namespace, name) is not None:
                self.delete(spec, namespace, name)

    def _maybe_finalize_namespace(self, namespace: str) -> None:
        if namespace not in self._cascading:
            return
        ns_obj = self._stored(NAMESPACES, None, namespace)
        if ns_obj is None or _meta(ns_obj).get("finalizers"):
            return
        if any(ns == namespace for spec, ns, _, _ in self._live() if spec.namespaced):
            return
        final = copy.deepcopy(ns_obj)
        final.setdefault("spec", {})["finalizers"] = []
        self._cascading.discard(namespace)
        self._remove(NAMESPACES, final)

    def _check_namespace_for_create(self, spec: ResourceSpec, namespace: str, name: str) -> None:
        ns_obj = self._stored(NAMESPACES, None, namespace)
        if ns_obj is None:
            if self.require_namespaces:
                raise errors.not_found("namespaces", "", namespace)
            return
        if _is_terminating(ns_obj):
            raise errors.namespace_terminating(spec.plural, spec.group, name, namespace)

    def _generate_name(self, spec: ResourceSpec, namespace: str | None, prefix: str) -> str:
        for _ in range(100):
            name = prefix + "".join(random.choice(_NAME_CHARS) for _ in range(5))
            if self._stored(spec, namespace, name) is None:
                return name
        raise ApiError(500, "could not generate a unique name")

    def _resolve_namespace(self, spec: ResourceSpec, namespace: str | None, body: JSON) -> str | None:
        body_ns = _meta(body).get("namespace")
        if not spec.namespaced:
            return None
        if namespace is not None and body_ns and body_ns != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request")
        resolved = namespace or body_ns
        if not resolved:
            raise errors.bad_request(f"a namespace is required to create {spec.qualified}")
        return str(resolved)

    # ----------------------------------------------------------------- writing (API verbs)

    def create(self, spec: ResourceSpec, namespace: str | None, body: Any) -> JSON:
        """POST: validate, fill server-managed metadata, store, emit ADDED."""
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        if body.get("kind") and body["kind"] != spec.kind:
            raise errors.bad_request(f"the kind in the data ({body['kind']}) does not match {spec.kind}")
        new = copy.deepcopy(body)
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        ns = self._resolve_namespace(spec, namespace, new)
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = self._generate_name(spec, ns, str(meta["generateName"]))
        if not name:
            raise errors.invalid(spec.plural, spec.group, None,
                                 "metadata.name: Required value: name or generateName is required")
        if ns is not None:
            self._check_namespace_for_create(spec, ns, str(name))
        if self._stored(spec, ns, str(name)) is not None:
            raise errors.already_exists(spec.plural, spec.group, str(name))
        for field in _SERVER_META:
            meta.pop(field, None)
        meta["name"] = str(name)
        if ns is not None:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if spec.has_generation:
            meta["generation"] = 1
        new = {"apiVersion": spec.api_version, "kind": spec.kind,
               **{k: v for k, v in new.items() if k not in ("apiVersion", "kind")}}
        if spec.status_subresource:
            new.pop("status", None)
        self._on_create_defaults(spec, new)
        self._commit(spec, new, None)
        if spec == CRDS:
            self._register_crd(new)
        return copy.deepcopy(new)

    def _on_create_defaults(self, spec: ResourceSpec, new: JSON) -> None:
        if spec == NAMESPACES:
            new.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            new["status"] = {"phase": "Active"}
            new["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = new["metadata"]["name"]
        elif spec == CRDS:
            names = (new.get("spec") or {}).get("names") or {}
            new["status"] = {
                "acceptedNames": copy.deepcopy(names),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                     "lastTransitionTime": now_rfc3339(), "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                     "lastTransitionTime": now_rfc3339(), "message": "the initial names have been accepted"},
                ],
                "storedVersions": [v.get("name") for v in (new.get("spec") or {}).get("versions") or []
                                   if v.get("storage")],
            }

    def _register_crd(self, crd: JSON) -> None:
        name = str(crd["metadata"]["name"])
        registered: list[ResourceSpec] = []
        for spec in specs_from_crd(crd):
            if (spec.group, spec.version, spec.plural) not in self._builtin:
                self.register(spec)
                registered.append(spec)
        self._crd_specs[name] = registered

    def _finish_update(self, spec: ResourceSpec, old: JSON, candidate: JSON, subresource: str | None) -> JSON:
        """Common tail of PUT and PATCH: keep server-owned fields, generation, no-ops, finalizers."""
        old_meta = _meta(old)
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in candidate:
                new["status"] = copy.deepcopy(candidate["status"])
            else:
                new.pop("status", None)
        else:
            new = copy.deepcopy(candidate)
            meta = new.get("metadata")
            if not isinstance(meta, dict):
                meta = new["metadata"] = {}
            if meta.get("name", old_meta["name"]) != old_meta["name"]:
                raise errors.invalid(spec.plural, spec.group, old_meta["name"],
                                     "metadata.name: Invalid value: field is immutable")
            for field in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp",
                          "deletionGracePeriodSeconds", "generation"):
                if field in old_meta:
                    meta[field] = copy.deepcopy(old_meta[field])
                else:
                    meta.pop(field, None)
            new["apiVersion"] = spec.api_version
            new["kind"] = spec.kind
            if spec.status_subresource:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise errors.invalid(spec.plural, spec.group, old_meta["name"],
                                         "metadata.finalizers: Forbidden: no new finalizers can be "
                                         "added if the object is being deleted")
            if spec.has_generation and _spec_part(new) != _spec_part(old):
                meta["generation"] = int(old_meta.get("generation") or 0) + 1
        new["metadata"]["resourceVersion"] = old_meta.get("resourceVersion")
        if new == old:
            return old  # a no-op write: real API servers neither bump the RV nor emit an event
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            return self._remove(spec, new)
        return self._commit(spec, new, old)

    def _check_precondition(self, spec: ResourceSpec, old: JSON, body: Any) -> None:
        if not isinstance(body, dict):
            return
        wanted = _meta(body).get("resourceVersion")
        if wanted and str(wanted) != str(_meta(old).get("resourceVersion")):
            raise errors.conflict(spec.plural, spec.group, str(_meta(old)["name"]))

    def replace(self, spec: ResourceSpec, namespace: str | None, name: str, body: Any,
                *, subresource: str | None = None) -> JSON:
        """PUT: full replacement with optimistic concurrency on metadata.resourceVersion."""
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        body_name = _meta(body).get("name")
        if body_name and body_name != name:
            raise errors.bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})")
        old = self.require(spec, namespace, name)
        self._check_precondition(spec, old, body)
        return copy.deepcopy(self._finish_update(spec, old, body, subresource))

    def patch(self, spec: ResourceSpec, namespace: str | None, name: str, patch: Any, content_type: str,
              *, subresource: str | None = None) -> JSON:
        """PATCH (merge, JSON or strategic); a stale resourceVersion in a merge patch is a 409."""
        old = self.require(spec, namespace, name)
        if content_type != JSON_PATCH:
            if not isinstance(patch, dict):
                raise errors.bad_request("a merge patch must be a JSON object")
            self._check_precondition(spec, old, patch)
        try:
            candidate = apply_patch(old, patch, content_type)
        except PatchError as exc:
            raise errors.invalid(spec.plural, spec.group, name, str(exc)) from None
        if not isinstance(candidate, dict):
            raise errors.invalid(spec.plural, spec.group, name, "the patched object is not an object")
        return copy.deepcopy(self._finish_update(spec, old, candidate, subresource))

    def delete(self, spec: ResourceSpec, namespace: str | None, name: str,
               options: Mapping[str, Any] | None = None) -> JSON:
        """DELETE: immediate removal, or deletionTimestamp while finalizers remain (namespaces cascade)."""
        old = self.require(spec, namespace, name)
        meta = _meta(old)
        options = options or {}
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
            raise errors.conflict(spec.plural, spec.group, name)
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta.get("resourceVersion"):
            raise errors.conflict(spec.plural, spec.group, name)
        if spec == NAMESPACES:
            return self._delete_namespace(old)
        if meta.get("deletionTimestamp"):
            return old  # already terminating: nothing changes
        if meta.get("finalizers"):
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            if spec.has_generation:
                new["metadata"]["generation"] = int(meta.get("generation") or 0) + 1
            return copy.deepcopy(self._commit(spec, new, old))
        self._remove(spec, copy.deepcopy(old), orphan=options.get("propagationPolicy") == "Orphan")
        details: JSON = {"name": name, "kind": spec.plural, "uid": meta.get("uid")}
        if spec.group:
            details["group"] = spec.group
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _delete_namespace(self, old: JSON) -> JSON:
        name = str(old["metadata"]["name"])
        self._cascading.add(name)
        current = old
        if not _is_terminating(old) or not old["metadata"].get("deletionTimestamp"):
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["status"] = {**(new.get("status") or {}), "phase": "Terminating"}
            current = self._commit(NAMESPACES, new, old)
        for spec, ns, obj_name, _ in list(self._live()):
            if spec.namespaced and ns == name and self._stored(spec, ns, obj_name) is not None:
                self.delete(spec, ns, obj_name)
        self._maybe_finalize_namespace(name)
        return copy.deepcopy(current)

    def terminate_namespace(self, name: str) -> JSON:
        """Put a namespace into Terminating without deleting its content (a test hook)."""
        old = self._stored(NAMESPACES, None, name)
        if old is None:
            old = self.create(NAMESPACES, None, {"metadata": {"name": name}})
        old = copy.deepcopy(old)
        new = copy.deepcopy(old)
        new["metadata"].setdefault("deletionTimestamp", now_rfc3339())
        new["metadata"].setdefault("deletionGracePeriodSeconds", 0)
        new["status"] = {**(new.get("status") or {}), "phase": "Terminating"}
        return copy.deepcopy(self._commit(NAMESPACES, new, old))

    def put(self, spec: ResourceSpec, namespace: str | None, body: JSON) -> JSON:
        """Upsert bypassing preconditions and subresource rules (a test hook for arranging state)."""
        new = copy.deepcopy(body)
        meta = new.setdefault("metadata", {})
        ns = self._resolve_namespace(spec, namespace, new)
        name = str(meta.get("name") or "")
        if not name:
            raise errors.bad_request("metadata.name is required")
        old = self.get(spec, ns, name)
        if old is None:
            status = new.pop("status", None)
            created = self.create(spec, ns, new)
            if status is None:
                return created
            created["status"] = status
            return copy.deepcopy(self._commit(spec, created, self.get(spec, ns, name)))
        for field in ("uid", "creationTimestamp"):
            meta[field] = old["metadata"].get(field)
        if spec.has_generation:
            gen = int(old["metadata"].get("generation") or 1)
            meta["generation"] = gen + 1 if _spec_part(new) != _spec_part(old) else gen
        if ns is not None:
            meta["namespace"] = ns
        new["apiVersion"] = spec.api_version
        new["kind"] = spec.kind
        return copy.deepcopy(self._commit(spec, new, old))

    # ----------------------------------------------------------------- watching

    def open_watch(self, spec: ResourceSpec, namespace: str | None, labels: LabelSelector,
                   fields: FieldSelector, since: str | None) -> tuple[Watcher, list[WatchItem]]:
        """Register a stream and compute what it must replay first.

        No (or "0") resourceVersion replays the current state as ADDED events; a specific one replays
        the logged changes after it, or raises 410 Expired when those have been compacted away.
        """
        self._claim_thread()
        watcher = Watcher(spec, namespace, labels, fields)
        backlog: list[WatchItem] = []
        if not since or since == "0":
            backlog = [("ADDED", obj) for obj in self.select(spec, namespace, labels, fields)]
        else:
            try:
                rv = int(since)
            except ValueError:
                raise errors.bad_request(f"invalid resource version: {since!r}") from None
            if rv < self._compacted_rv:
                raise errors.expired(rv, self._compacted_rv)
            for event in self._history:
                if event.rv > rv:
                    item = watcher.translate(event)
                    if item is not None:
                        backlog.append(item)
        self._watchers.add(watcher)
        self.notify_waiters()
        return watcher, backlog

    @property
    def watch_count(self) -> int:
        """How many watch streams are open right now."""
        return len(self._watchers)

    def close_watch(self, watcher: Watcher) -> None:
        """Forget a stream (its HTTP response has ended)."""
        self._watchers.discard(watcher)
        self.notify_waiters()

    def close_all_watches(self) -> None:
        """End every open stream (shutdown, reset)."""
        for watcher in list(self._watchers):
            watcher.close()
        self._watchers.clear()

    def compact(self) -> None:
        """Forget the change log: watches resuming from any older resourceVersion get 410 Gone."""
        self._history.clear()
        self._compacted_rv = self._rv

    def add_waiter(self, waiter: asyncio.Future[None]) -> None:
        """Resolve this future at the next committed change (or served request)."""
        self._claim_thread()
        self._waiters.append(waiter)

    def reset(self) -> None:
        """Drop all objects, CRD-registered resources, the change log, and open watches."""
        self.close_all_watches()
        for specs in list(self._crd_specs.values()):
            for spec in specs:
                self.unregister(spec)
        self._crd_specs.clear()
        self.objects.clear()
        self._history.clear()
        self._compacted_rv = self._rv
        self._cascading.clear()
