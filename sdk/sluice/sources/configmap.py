"""`ConfigMapDecisions`: decision documents watched through the Kubernetes API.

Sub-second propagation (the mounted-volume path waits for the kubelet's 60-90 s refresh) at the
price of RBAC: ``get``, ``list`` and ``watch`` on the named ConfigMaps (``resourceNames`` works,
because every request carries a ``metadata.name`` field selector). One background thread per
ConfigMap lists it, then watches from the list's ``resourceVersion``; after a dropped connection it
resumes from the last ``resourceVersion`` it saw (bookmarks keep that recent), and when the server
answers 410 Gone (the version was compacted away) it lists again. Reconnects back off exponentially
with full jitter so a flapping API server is not hammered by every producer at once.

Needs the ``kubernetes`` package (imported when the class is instantiated, not when the SDK is).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import random
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from sluice.decision import CIRCUIT_KEY, DECISION_KEY, parse_circuit, parse_decision
from sluice.retry import RetryPolicy
from sluice.sources.base import LOGGER_NAME, DecisionSource
from sluice.stale import DEFAULT_MAX_CLOCK_SKEW_S, MAX_TTL_SECONDS

__all__ = ["ConfigMapDecisions"]

log = logging.getLogger(LOGGER_NAME)

_GONE = 410

#: Reconnect pacing: 0.2 s doubling to 30 s, never giving up.
DEFAULT_RECONNECT = RetryPolicy(max_attempts=1_000_000, initial_delay=0.2, max_delay=30.0, deadline=float("inf"))


class _Gone(Exception):
    """The resourceVersion we hold is too old: list again."""


class ConfigMapDecisions(DecisionSource):
    """Watch ``names`` (ConfigMaps in ``namespace``) for ``decision.json`` and ``circuit.json`` keys.

    ``api_client`` is a ``kubernetes.client.ApiClient``; without one the in-cluster service account
    is used, else the local kubeconfig. ``watch_timeout`` is the server-side watch duration after
    which the watch is re-opened (from the same resourceVersion); ``request_timeout`` bounds
    connecting and every read so a silent network cannot hang the thread.
    """

    def __init__(
        self,
        namespace: str,
        names: str | Iterable[str],
        *,
        api_client: Any = None,
        watch_timeout: int = 240,
        request_timeout: float = 10.0,
        reconnect: RetryPolicy = DEFAULT_RECONNECT,
        max_ttl: float = MAX_TTL_SECONDS,
        max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW_S,
        start: bool = True,
    ) -> None:
        self.namespace = namespace
        self.names = (names,) if isinstance(names, str) else tuple(names)
        if not self.names:
            raise ValueError("names must not be empty")
        super().__init__(
            f"configmap:{namespace}/{','.join(self.names)}", max_ttl=max_ttl, max_clock_skew=max_clock_skew
        )
        client = _kube("kubernetes.client")
        self._api: Any = client.CoreV1Api(api_client if api_client is not None else _default_api_client())
        self.watch_timeout = watch_timeout
        self.request_timeout = request_timeout
        self.reconnect = reconnect
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches: dict[str, Any] = {}
        self._healthy: dict[str, bool] = dict.fromkeys(self.names, False)
        #: per ConfigMap: the resourceVersion the watch resumes from; lists and reconnects, for tests/health
        self.resource_versions: dict[str, str | None] = dict.fromkeys(self.names)
        self.lists = 0
        self.reconnects = 0
        self._connected = False
        if start:
            self.start()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ConfigMapDecisions:
        """Start one watcher thread per ConfigMap (idempotent)."""
        if self._threads:
            return self
        self._stop.clear()
        for name in self.names:
            thread = threading.Thread(target=self._run, args=(name,), name=f"sluice-cm-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def close(self) -> None:
        """Stop the watchers (each notices within ``request_timeout`` at worst)."""
        self._stop.set()
        for watch in list(self._watches.values()):
            watch.stop()
            response = getattr(watch, "_resp", None)  # unblock a thread waiting for the next event
            if response is not None:
                with contextlib.suppress(Exception):
                    response.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=0.5)
        self._threads = []

    # -- the loop ------------------------------------------------------------------------------

    def _run(self, name: str) -> None:
        failures = 0
        rv: str | None = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list(name)
                rv = self._watch(name, rv)
                failures = 0
            except _Gone:
                log.info("sluice %s: resourceVersion of %s expired (410 Gone); listing again", self.description, name)
                rv = None
            except Exception as exc:
                if self._stop.is_set():
                    break
                if rv is not None:
                    # A watch that fails mid-stream (a dropped connection) raises instead of returning
                    # its last resourceVersion: resume from the newest one it read, not the list's.
                    rv = self.resource_versions[name] or rv
                self._mark(name, False)
                self._report_error(name, f"watch failed: {_summary(exc)}")
                delay = random.random() * self.reconnect.cap(failures)
                failures += 1
                with self._cond:
                    self.reconnects += 1
                self._stop.wait(delay)

    def _list(self, name: str) -> str:
        resp = self._api.list_namespaced_config_map(
            self.namespace,
            field_selector=f"metadata.name={name}",
            _preload_content=False,
            _request_timeout=self.request_timeout,
        )
        try:
            body = json.loads(resp.data)
        finally:
            resp.release_conn()
        with self._cond:
            self.lists += 1
        items = body.get("items") or []
        if items:
            self._apply(name, items[0])
        else:
            self._forget(name)
        self._mark(name, True)
        rv = str(body.get("metadata", {}).get("resourceVersion", ""))
        self.resource_versions[name] = rv
        return rv

    def _watch(self, name: str, rv: str) -> str:
        api_exception: type[Exception] = _kube("kubernetes.client.exceptions").ApiException
        w = _kube("kubernetes.watch").Watch()
        self._watches[name] = w
        try:
            stream = w.stream(
                self._api.list_namespaced_config_map,
                self.namespace,
                field_selector=f"metadata.name={name}",
                resource_version=rv,
                allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout,
                _request_timeout=(self.request_timeout, self.watch_timeout + self.request_timeout),
            )
            self._mark(name, True)
            for event in stream:
                if self._stop.is_set():
                    break
                rv = self._on_event(name, event, rv)
        except api_exception as exc:
            if getattr(exc, "status", None) == _GONE:
                raise _Gone from exc
            raise
        finally:
            self._watches.pop(name, None)
        return rv

    def _on_event(self, name: str, event: Mapping[str, Any], rv: str) -> str:
        kind = event.get("type")
        raw = event.get("raw_object")  # the plain JSON object (event["object"] is the client's model)
        obj: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        if kind == "ERROR":
            if obj.get("code") == _GONE:
                raise _Gone
            raise RuntimeError(f"watch error: {obj.get('message') or obj}")
        new_rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
        if kind in ("ADDED", "MODIFIED"):
            self._apply(name, obj)
        elif kind == "DELETED":
            self._forget(name)
        self.resource_versions[name] = new_rv
        return new_rv

    # -- documents -----------------------------------------------------------------------------

    def _apply(self, name: str, configmap: Mapping[str, Any]) -> None:
        data: Mapping[str, str] = configmap.get("data") or {}
        origin = f"{self.namespace}/{name}"
        if DECISION_KEY in data:
            key = f"{origin}:{DECISION_KEY}"
            try:
                self._accept_decision(parse_decision(data[DECISION_KEY]), key)
                self._clear_error(key)
            except (ValidationError, ValueError) as exc:
                self._report_error(key, f"invalid document: {type(exc).__name__}")
        key = f"{origin}:{CIRCUIT_KEY}"
        if CIRCUIT_KEY in data:
            try:
                self._accept_circuit(origin, parse_circuit(data[CIRCUIT_KEY]), key)
                self._clear_error(key)
            except (ValidationError, ValueError) as exc:
                self._report_error(key, f"invalid document: {type(exc).__name__}")
        else:
            self._drop_circuit(origin)

    def _forget(self, name: str) -> None:
        """The ConfigMap is gone: its circuit no longer applies; a decision just ages into staleness."""
        self._drop_circuit(f"{self.namespace}/{name}")

    def _mark(self, name: str, healthy: bool) -> None:
        self._healthy[name] = healthy
        self._set_connected(all(self._healthy.values()))


def _kube(module: str) -> Any:
    """Import part of the kubernetes client lazily (untyped: it ships no complete stubs)."""
    return importlib.import_module(module)


def _default_api_client() -> Any:
    config = _kube("kubernetes.config")
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return _kube("kubernetes.client").ApiClient()


def _summary(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return f"{type(exc).__name__}" + (f" {status}" if status else "")
