"""Run the real Kopf against the emulator: login handler, quick settings, an in-process operator.

Kopf must be stopped through its stop flag, never by cancelling its task: on cancellation without
the flag, Kopf schedules a SIGKILL of the main thread (`settings.process.ultimate_exiting_timeout`).
`running_operator()` always stops it via the flag.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

import kopf


def kopf_connection_info(base_url: str) -> kopf.ConnectionInfo:
    """Credentials for the emulator: plain HTTP on loopback, no auth."""
    return kopf.ConnectionInfo(server=base_url, insecure=True, default_namespace="default")


def kopf_login_handler(base_url: str) -> Callable[..., kopf.ConnectionInfo]:
    """A function to decorate with `@kopf.on.login(...)` that points Kopf at the emulator."""
    def login_to_emulator(**_: Any) -> kopf.ConnectionInfo:
        return kopf_connection_info(base_url)
    return login_to_emulator


def register_kopf_login(registry: kopf.OperatorRegistry, base_url: str) -> None:
    """Register the emulator login handler in a (non-global) registry."""
    kopf.on.login(registry=registry, id="login-to-emulator")(kopf_login_handler(base_url))


def quick_settings() -> kopf.OperatorSettings:
    """Kopf settings for tests: short timeouts and backoffs so tests finish in seconds."""
    settings = kopf.OperatorSettings()
    settings.networking.request_timeout = 10
    settings.networking.connect_timeout = 5
    settings.watching.reconnect_backoff = 0.1
    settings.watching.server_timeout = 60
    settings.queueing.exit_timeout = 2
    settings.process.ultimate_exiting_timeout = None
    return settings


@contextlib.asynccontextmanager
async def running_operator(
    registry: kopf.OperatorRegistry,
    base_url: str,
    *,
    settings: kopf.OperatorSettings | None = None,
    clusterwide: bool = True,
    namespaces: Collection[str] = (),
    memo: object | None = None,
    login: bool = True,
    startup_timeout_s: float = 10.0,
    shutdown_timeout_s: float = 10.0,
) -> AsyncIterator[asyncio.Task[None]]:
    """Run `kopf.operator()` (standalone, no peering) in a task until the block exits.

    With `login=True` the emulator login handler is added to `registry` first. The block starts
    once Kopf's startup handlers have finished; a failing startup re-raises here.
    """
    if login:
        register_kopf_login(registry, base_url)
    stop_flag = asyncio.Event()
    ready_flag = asyncio.Event()
    task = asyncio.create_task(kopf.operator(
        registry=registry,
        settings=settings or quick_settings(),
        standalone=True,
        clusterwide=clusterwide,
        namespaces=namespaces,
        memo=memo,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    ), name="kopf-operator-under-test")
    ready_waiter = asyncio.create_task(ready_flag.wait())
    try:
        done, _ = await asyncio.wait({task, ready_waiter}, timeout=startup_timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # re-raise a startup failure
            raise RuntimeError("Kopf exited during startup")
        if ready_waiter not in done:
            raise TimeoutError(f"Kopf was not ready within {startup_timeout_s}s")
        yield task
    finally:
        ready_waiter.cancel()
        stop_flag.set()
        try:
            async with asyncio.timeout(shutdown_timeout_s):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()  # the stop flag is set, so Kopf will not SIGKILL the process
            with contextlib.suppress(asyncio.CancelledError):
                await task
