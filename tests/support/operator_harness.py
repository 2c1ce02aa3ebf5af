"""Run the real Sluice operator (Kopf + leader election + cycles) in-process against the emulator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from sluice_operator.kube import Connection
from sluice_operator.runtime import OperatorRuntime
from sluice_operator.settings import Settings
from sluice_operator.wiring import build_signals

from tests.support.k8s_emulator_kopf import quick_settings

POLICIES = "sluice.dev/v1alpha1/backpressurepolicies"
CIRCUITS = "sluice.dev/v1alpha1/circuitbreakers"


@dataclass
class OperatorHandle:
    runtime: OperatorRuntime
    task: asyncio.Task[int]
    stop: asyncio.Event

    async def shutdown(self, timeout: float = 20.0) -> int:
        self.stop.set()
        return await asyncio.wait_for(self.task, timeout)


def make_settings(prometheus_url: str, **env: str) -> Settings:
    base = {
        "SLUICE_PROMETHEUS_URL": prometheus_url,
        "SLUICE_LEASE_DURATION_SECONDS": "4",
        "SLUICE_LEASE_RENEW_SECONDS": "1",
        "SLUICE_LEASE_NAMESPACE": "default",
        "SLUICE_QUERY_CACHE_SECONDS": "0.5",
        "SLUICE_HTTP_PORT": "0",
    }
    base.update(env)
    return Settings.from_env(base)


def start_operator(base_url: str, prometheus_url: str, *, identity: str = "op-1",
                   env: Mapping[str, str] | None = None) -> OperatorHandle:
    """Start one operator instance as a task; stop it with `await handle.shutdown()`."""
    settings = make_settings(prometheus_url, **dict(env or {}))
    connection = Connection(server=base_url, insecure=True, default_namespace="default")
    runtime = OperatorRuntime(settings, connection, signals=build_signals(settings), identity=identity)
    stop = asyncio.Event()
    kopf_settings = quick_settings()
    task = asyncio.ensure_future(runtime.run(stop, http=False, kopf_settings=kopf_settings))
    return OperatorHandle(runtime, task, stop)


@contextlib.asynccontextmanager
async def running_operator(base_url: str, prometheus_url: str, **kwargs: Any) -> AsyncIterator[OperatorHandle]:
    handle = start_operator(base_url, prometheus_url, **kwargs)
    try:
        yield handle
    finally:
        if not handle.task.done():
            await handle.shutdown()


def policy(name: str, namespace: str = "default", *, query: str | None = None,
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


def kopf_settings() -> kopf.OperatorSettings:
    return quick_settings()
