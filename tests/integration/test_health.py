"""/healthz reflects progress, /readyz readiness, /metrics the operator's registry — over real HTTP."""

from __future__ import annotations

import time

import aiohttp

from sluice_operator.health import Health, serve
from sluice_operator.metrics import OperatorMetrics


async def test_endpoints_report_progress_not_just_a_live_process() -> None:
    health = Health(max_age=30)
    metrics = OperatorMetrics()
    metrics.evaluations.labels(kind="BackpressurePolicy", result="ok").inc()
    runner = await serve(health, metrics, port=0, host="127.0.0.1")
    try:
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 503  # not ready until the runtime says so
            health.ready = True
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 200 and "standby" in await response.text()

            # A standby, or a leader with nothing to evaluate, is alive while its loop ticks.
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
            # A leader with objects whose last evaluation is too old is not.
            health.leading, health.active_objects = True, 3
            health.last_evaluation = time.monotonic() - 31
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 503
                assert "no evaluation completed" in await response.text()
            health.evaluated()
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200

            async with session.get(f"{base}/metrics") as response:
                text = await response.text()
                assert 'sluice_evaluations_total{kind="BackpressurePolicy",result="ok"} 1.0' in text
    finally:
        await runner.cleanup()
