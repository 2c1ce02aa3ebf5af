"""Run the real Sluice operator (Kopf + leader election + cycles) in-process against the real API server.

It authenticates as the chart's ServiceAccount (token file), connects through the test's recording
proxy, and keeps its Lease in sluice-system under a name of the test's own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from sluice_operator.kube import Connection
from sluice_operator.manager import Manager
from sluice_operator.settings import Settings
from sluice_operator.wiring import build_signals
from tests.support.control_plane import OPERATOR_NAMESPACE, ServiceAccountIdentity
from tests.support.k8s_fixtures import CIRCUITS, POLICIES, ClusterHandle

__all__ = ["CIRCUITS", "POLICIES", "OperatorHandle", "ThreadedOperator", "circuit", "policy", "running_operator",
           "start_operator"]


def quick_settings() -> kopf.OperatorSettings:
    """Kopf settings for tests: short timeouts and backoffs so tests finish in seconds.

    Kopf must be stopped through its stop flag, never by cancelling its task: on cancellation without
    the flag, Kopf schedules a SIGKILL of the main thread (`settings.process.ultimate_exiting_timeout`).
    """
    settings = kopf.OperatorSettings()
    settings.networking.request_timeout = 10
    settings.networking.connect_timeout = 5
    settings.watching.reconnect_backoff = 0.1
    settings.watching.server_timeout = 60
    settings.queueing.exit_timeout = 2
    settings.process.ultimate_exiting_timeout = None
    return settings


@dataclass
class OperatorHandle:
    runtime: Manager
    task: asyncio.Task[int]
    stop: asyncio.Event

    async def shutdown(self, timeout: float = 20.0) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, timeout)


def make_settings(cluster: ClusterHandle, prometheus_url: str, **env: str) -> Settings:
    base = {
        "SLUICE_PROMETHEUS_URL": prometheus_url,
        "SLUICE_LEASE_DURATION_SECONDS": "4",
        "SLUICE_LEASE_RENEW_SECONDS": "1",
        "SLUICE_LEASE_NAMESPACE": OPERATOR_NAMESPACE,
        "SLUICE_LEASE_NAME": cluster.lease_name,
        "SLUICE_QUERY_CACHE_SECONDS": "0.5",
        "SLUICE_HTTP_PORT": "0",
    }
    base.update(env)
    return Settings.from_env(base)


def connection_for(cluster: ClusterHandle, account: ServiceAccountIdentity | None = None) -> Connection:
    """The ServiceAccount's token file (re-read on change), through the test's proxy."""
    account = account or cluster.identity
    return Connection(server=cluster.base_url, token_path=str(account.token_file),
                      default_namespace=account.namespace)


def start_operator(cluster: ClusterHandle, prometheus_url: str, *, identity: str = "op-1",
                   env: Mapping[str, str] | None = None, release_on_stop: bool = True,
                   account: ServiceAccountIdentity | None = None,
                   namespaces: tuple[str, ...] = ()) -> OperatorHandle:
    """Start one operator instance as a task; stop it with `await handle.shutdown()`."""
    settings = make_settings(cluster, prometheus_url, **dict(env or {}))
    connection = connection_for(cluster, account)
    runtime = Manager(settings, connection, signals=build_signals(settings), identity=identity)
    stop = asyncio.Event()
    kopf_settings = quick_settings()
    task = asyncio.ensure_future(
        runtime.run(stop, http=False, kopf_settings=kopf_settings, release_on_stop=release_on_stop,
                    namespaces=namespaces)
    )
    return OperatorHandle(runtime, task, stop)


@contextlib.asynccontextmanager
async def running_operator(cluster: ClusterHandle, prometheus_url: str, **kwargs: Any
                           ) -> AsyncIterator[OperatorHandle]:
    handle = start_operator(cluster, prometheus_url, **kwargs)
    try:
        yield handle
    finally:
        if not handle.task.done():
            await handle.shutdown()


def policy(name: str, namespace: str, *, query: str | None = None,
           spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A BackpressurePolicy object with a 1 s interval (the minimum) so tests run in seconds."""
    body: dict[str, Any] = {
        "source": {"prometheus": {"query": query or f'sum(test_lag{{policy="{name}"}})'}},
        "polling": {"intervalSeconds": 1, "jitterSeconds": 0, "timeoutSeconds": 0.8},
        "hysteresis": {"margin": 0.1, "minDwellSeconds": 0},
    }
    body.update(spec or {})
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "BackpressurePolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def circuit(name: str, *, namespaces: tuple[str, ...] = (), query: str | None = None,
            spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A CircuitBreaker over a Prometheus error signal, tuned to trip and recover in seconds."""
    body: dict[str, Any] = {
        "signal": {"prometheus": {"query": query or f'max(test_errors{{circuit="{name}"}})',
                                  "failWhen": {"above": 0.5}, "timeoutSeconds": 0.8}},
        "failureThreshold": 2,
        "tripWindowSeconds": 10,
        "recoveryTimeoutSeconds": 2,
        "probeIntervalSeconds": 1,
        "recoveryThreshold": 2,
        "halfOpenProbeRatio": 0.25,
        "namespaces": list(namespaces),
    }
    body.update(spec or {})
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": "CircuitBreaker", "metadata": {"name": name}, "spec": body}


class ThreadedOperator:
    """An operator on its own thread and event loop, like a separate replica.

    Kopf cancels every task created in its loop after it started once it stops, so two in-process
    replicas must not share a loop; separate loops also make "replica crashed" realistic.
    """

    def __init__(self, cluster: ClusterHandle, prometheus_url: str, *, identity: str,
                 env: Mapping[str, str] | None = None, release_on_stop: bool = True) -> None:
        import threading

        settings = make_settings(cluster, prometheus_url, **dict(env or {}))
        connection = connection_for(cluster)
        self.runtime = Manager(settings, connection, signals=build_signals(settings), identity=identity)
        self.exit_code: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._release = release_on_stop
        self._thread = threading.Thread(target=self._main, name=f"operator-{identity}", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def _main(self) -> None:
        async def body() -> int:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            return await self.runtime.run(self._stop, http=False, kopf_settings=quick_settings(),
                                          release_on_stop=self._release)

        self.exit_code = asyncio.run(body())

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    async def shutdown(self, timeout: float = 20.0) -> int | None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join, timeout)
        return self.exit_code

    async def wait_exit(self, timeout: float) -> int | None:
        await asyncio.to_thread(self._thread.join, timeout)
        return self.exit_code
