"""Every dashboard query returns data from a real Prometheus scraping a local-mode operator, an SDK producer
on librdkafka's mock cluster, and (for the API request panel) the operator in cluster mode on the real
control plane."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from sluice import ThrottledProducer
from sluice.sources.directory import DirectoryDecisions
from sluice_operator.local import LocalOperator
from sluice_operator.metrics import OperatorMetrics
from sluice_operator.settings import Settings
from sluice_operator.wiring import build_signals
from tests.support.exporter import Exporter
from tests.support.k8s_fixtures import ClusterHandle
from tests.support.operator_harness import running_operator
from tests.support.ops_helpers import Forward, ScrapingPrometheus, served
from tests.support.sdk_helpers import InProcessKafka
from tests.unit.test_dashboards import concrete, queries

POLICIES = """\
apiVersion: sluice.dev/v1alpha1
kind: BackpressurePolicy
metadata: {name: orders, namespace: orders}
spec:
  source: {prometheus: {query: 'sum(test_lag{policy="orders"})'}}
  thresholds:
    high: {green: 1000, yellow: 2000, red: 3000}
    medium: {green: 100, yellow: 2000, red: 3000}
    low: {green: 50, yellow: 100, red: 150}
  delays: {yellow: {minMs: 5, maxMs: 20}, red: {minMs: 20, maxMs: 40}}
  polling: {intervalSeconds: 1, jitterSeconds: 0, timeoutSeconds: 0.8}
  hysteresis: {margin: 0.1, minDwellSeconds: 0}
  compliance: {intervalSeconds: 1}
---
apiVersion: sluice.dev/v1alpha1
kind: BackpressurePolicy
metadata: {name: broken, namespace: orders}
spec:
  source: {prometheus: {query: 'sum(no_such_metric_anywhere)'}}
  polling: {intervalSeconds: 1, jitterSeconds: 0, timeoutSeconds: 0.8}
---
# DrainTime, fed by the real SDK's offered counter of the producer of "orders" (the DrainTime panels)
apiVersion: sluice.dev/v1alpha1
kind: BackpressurePolicy
metadata: {name: paced, namespace: orders}
spec:
  source: {prometheus: {query: 'sum(test_lag{policy="orders"})', consumptionQuery: 'sum(test_mu)'}}
  polling: {intervalSeconds: 1, jitterSeconds: 0, timeoutSeconds: 0.8}
  control:
    mode: DrainTime
    offeredQuery: 'sum by (priority) (sluice_producer_offered_total{policy="orders"})'
---
apiVersion: sluice.dev/v1alpha1
kind: CircuitBreaker
metadata: {name: brokers}
spec:
  signal: {prometheus: {query: 'max(test_errors{circuit="brokers"})', failWhen: {above: 0.5}, timeoutSeconds: 0.8}}
  failureThreshold: 1
  tripWindowSeconds: 10
  recoveryTimeoutSeconds: 1
  probeIntervalSeconds: 1
  recoveryThreshold: 1
  halfOpenProbeRatio: 0.5
  namespaces: [orders]
"""


def _produce(producer: ThrottledProducer, stop: threading.Event) -> None:
    while not stop.is_set():
        for priority in ("high", "medium", "low"):
            with contextlib.suppress(Exception):  # low is shed; that is an outcome too
                producer.produce("orders", b"m", priority=priority)
        producer.poll(0)
        stop.wait(0.02)


async def test_every_dashboard_query_returns_series(cluster: ClusterHandle, tmp_path: Path) -> None:
    policies, decisions = tmp_path / "policies", tmp_path / "decisions"
    policies.mkdir()
    (policies / "all.yaml").write_text(POLICIES)
    local_metrics, cluster_registry, sdk_registry = OperatorMetrics(), CollectorRegistry(), CollectorRegistry()
    forward = Forward()
    cluster_registry.register(forward)  # type: ignore[arg-type]
    exporter = Exporter().start()
    exporter.set("test_lag", 500, {"policy": "orders"})
    exporter.set("test_errors", 1, {"circuit": "brokers"})
    exporter.set("test_mu", 100)
    with served(local_metrics.registry) as local_target, served(cluster_registry) as cluster_target, \
            served(sdk_registry) as sdk_target, InProcessKafka(num_brokers=1, topics={"orders": 1}) as kafka:
        prom = ScrapingPrometheus(exporter, [local_target, cluster_target, sdk_target])
        prom.start()
        stop, producing = asyncio.Event(), threading.Event()
        try:
            settings = Settings.from_env({"SLUICE_PROMETHEUS_URL": prom.url, "SLUICE_QUERY_CACHE_SECONDS": "0"})
            local = LocalOperator(policies, decisions, build_signals(settings), metrics=local_metrics)
            task = asyncio.ensure_future(local.run(stop))
            for _ in range(100):
                if (decisions / "orders" / "orders" / "decision.json").exists():
                    break
                await asyncio.sleep(0.1)
            source = DirectoryDecisions(decisions / "orders" / "orders", poll_interval=0.2)
            producer = ThrottledProducer({"bootstrap.servers": kafka.bootstrap_servers}, source,
                                         metrics_registry=sdk_registry)
            thread = threading.Thread(target=_produce, args=(producer, producing), daemon=True)
            thread.start()
            async with running_operator(cluster, prom.url) as op:
                forward.target = op.runtime.metrics.registry
                missing = await _wait_for_all(prom, exporter)
            producing.set()
            thread.join(10)
            producer.close(5)
            source.close()
            stop.set()
            await asyncio.wait_for(task, 10)
        finally:
            stop.set()
            producing.set()
            prom.close()
            exporter.stop()
    assert not missing, "queries that returned no series:\n" + "\n".join(f"{d} / {t}: {q}" for d, t, q in missing)


async def _wait_for_all(prom: ScrapingPrometheus, exporter: Exporter) -> list[tuple[str, str, str]]:
    """Poll until every query has series (the circuit is flipped open and closed meanwhile)."""
    pending = queries()
    deadline = time.monotonic() + 90
    flip = 0
    while pending and time.monotonic() < deadline:
        flip += 1
        exporter.set("test_errors", 1 if flip % 6 < 3 else 0, {"circuit": "brokers"})
        still = []
        for dashboard, title, expr in pending:
            answer = await asyncio.to_thread(prom.query, concrete(expr))
            if not answer["result"]:
                still.append((dashboard, title, expr))
        pending = still
        if pending:
            await asyncio.sleep(1)
    return pending
