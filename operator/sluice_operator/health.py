"""Liveness, readiness and /metrics over HTTP.

Liveness reflects progress, not just a live process: the leader is unhealthy when it has objects
to evaluate and no evaluation completed for `max_age` seconds, or when its event loop stops ticking.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sluice_operator.metrics import OperatorMetrics


@dataclass
class Health:
    max_age: float = 120.0
    started: float = field(default_factory=time.monotonic)
    last_evaluation: float | None = None
    last_heartbeat: float = field(default_factory=time.monotonic)
    leading: bool = False
    ready: bool = False
    active_objects: int = 0

    def evaluated(self) -> None:
        self.last_evaluation = time.monotonic()

    def heartbeat(self) -> None:
        self.last_heartbeat = time.monotonic()

    def live(self) -> tuple[bool, str]:
        now = time.monotonic()
        if now - self.last_heartbeat > self.max_age:
            return False, f"event loop made no progress for {now - self.last_heartbeat:.0f}s"
        if self.leading and self.active_objects > 0:
            reference = self.last_evaluation if self.last_evaluation is not None else self.started
            age = now - reference
            if age > self.max_age:
                return False, f"no evaluation completed for {age:.0f}s (limit {self.max_age:.0f}s)"
        return True, "ok"


async def _heartbeat(health: Health, every: float) -> None:
    while True:
        health.heartbeat()
        await asyncio.sleep(every)


async def serve(health: Health, metrics: OperatorMetrics, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    """Start the HTTP endpoints; the caller owns the returned runner (cleanup on shutdown)."""

    async def healthz(_: web.Request) -> web.Response:
        ok, reason = health.live()
        return web.Response(status=200 if ok else 503, text=reason + "\n")

    async def readyz(_: web.Request) -> web.Response:
        role = "leader" if health.leading else "standby"
        return web.Response(status=200 if health.ready else 503,
                            text=f"{'ready' if health.ready else 'starting'} ({role})\n")

    async def metrics_view(_: web.Request) -> web.Response:
        # ~30 samples per policy: at 10,000 policies rendering takes about a second, off the event loop
        # (the per-policy collector reads snapshots, so cycles may go on meanwhile).
        body = await asyncio.to_thread(generate_latest, metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    tasks: list[asyncio.Task[None]] = []

    async def start_heartbeat(_: web.Application) -> None:
        tasks.append(asyncio.get_running_loop().create_task(_heartbeat(health, min(5.0, health.max_age / 4))))

    async def stop_heartbeat(_: web.Application) -> None:
        for task in tasks:
            task.cancel()

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    app.on_startup.append(start_heartbeat)
    app.on_cleanup.append(stop_heartbeat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
