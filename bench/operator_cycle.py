"""Operator cycle benchmark: 1,000 policies sharing 10 queries, one polling cycle at a time.

Runs the real policy cycle (signal -> engine -> publish) against the real Prometheus and a real
kube-apiserver (the control plane `make cluster` starts, in a temporary directory), all policies
concurrently, authenticated as the chart's ServiceAccount. Reports Prometheus requests per cycle, API
writes per cycle (first cycle, then steady state), CPU seconds per cycle of this process (the
operator's side only: the API server is another process) and the process's peak RSS. Writes
bench/.cache/operator_cycle.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "operator", ROOT / "sdk"):
    sys.path.insert(0, str(entry))

from sluice_operator.api.policy import BackpressurePolicySpec  # noqa: E402
from sluice_operator.kube import Connection, KubeClient  # noqa: E402
from sluice_operator.metrics import OperatorMetrics  # noqa: E402
from sluice_operator.publish.cluster import ClusterSink  # noqa: E402
from sluice_operator.publish.events import KubeEvents  # noqa: E402
from sluice_operator.reconcile.policy import PolicyCycle, PolicyState  # noqa: E402
from sluice_operator.reconcile.signals import Signals  # noqa: E402
from sluice_operator.settings import Settings  # noqa: E402
from sluice_operator.sources.prometheus import PrometheusClient  # noqa: E402
from tests.support.control_plane import ControlPlane  # noqa: E402
from tests.support.exporter import Exporter  # noqa: E402
from tests.support.kube_api import KubeApi  # noqa: E402
from tests.support.prometheus import PrometheusServer, require_prometheus_binary  # noqa: E402

TARGETS = {"prometheus_requests_per_cycle": 10, "steady_writes_per_cycle": 0, "cpu_seconds_per_cycle": 1.0}


async def bench(policies: int, queries: int, steady_cycles: int) -> dict[str, object]:
    exporter = Exporter().start()
    for q in range(queries):
        exporter.set("bench_lag", 400 * (q + 1), {"group": f"g{q}"})
    server = PrometheusServer(exporter, binary=require_prometheus_binary())
    print(f">> starting Prometheus and waiting for its first scrape ({policies} policies, {queries} queries)",
          flush=True)
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
            print(">> starting a real control plane (etcd, kube-apiserver, kube-controller-manager)", flush=True)
            plane = ControlPlane.start(Path(tmp) / "cluster")
            plane.install_crds()
            identity = plane.install_operator_identity()
            admin = KubeApi(plane.server, plane.admin_token, str(plane.ca_file))
            namespace = "bench"
            admin.create_namespace(namespace)
            settings = Settings.from_env({"SLUICE_PROMETHEUS_URL": server.url})
            prom = PrometheusClient(server.url, max_workers=8, cache_ttl=2.0)
            client = KubeClient(Connection(server=plane.server, ca_path=str(plane.ca_file),
                                           token_path=str(identity.token_file)), timeout=600)
            cycle = PolicyCycle(Signals(settings, prom), ClusterSink(client), KubeEvents(client), OperatorMetrics())
            specs, states = [], []
            for i in range(policies):
                name = f"p{i:04d}"
                body = {
                    "apiVersion": "sluice.dev/v1alpha1", "kind": "BackpressurePolicy",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"source": {"prometheus": {"query": f'sum(bench_lag{{group="g{i % queries}"}})'}}},
                }
                obj = admin.create_object("sluice.dev/v1alpha1/backpressurepolicies", body, namespace)
                specs.append(BackpressurePolicySpec.model_validate(body["spec"]))
                states.append(PolicyState(namespace, name, obj["metadata"]["uid"]))

            async def one_cycle(label: str) -> dict[str, float]:
                prom_before, writes_before = prom.requests_sent, client.writes_sent
                wall, cpu = time.perf_counter(), time.process_time()
                await asyncio.gather(*(cycle.run(s, spec, 1) for s, spec in zip(states, specs, strict=True)))
                result = {
                    "prometheus_requests": prom.requests_sent - prom_before,
                    "api_writes": client.writes_sent - writes_before,
                    "cpu_seconds": round(time.process_time() - cpu, 4),
                    "wall_seconds": round(time.perf_counter() - wall, 4),
                }
                print(f"   {label:<14} {result}", flush=True)
                return result

            first = await one_cycle("first cycle")
            steady = []
            for n in range(steady_cycles):
                await asyncio.sleep(2.1)  # past the query cache: every cycle asks Prometheus again
                steady.append(await one_cycle(f"steady cycle {n + 1}"))
            await client.close()
            prom.close()
            plane.stop()
    finally:
        server.close()
        exporter.stop()
    worst = {k: max(c[k] for c in steady) for k in steady[0]}
    return {
        "policies": policies,
        "distinct_queries": queries,
        "first_cycle": first,
        "steady_cycles": steady,
        "prometheus_requests_per_cycle": worst["prometheus_requests"],
        "steady_writes_per_cycle": worst["api_writes"],
        "cpu_seconds_per_cycle": worst["cpu_seconds"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "kubernetes": "kube-apiserver v1.37.2 (make k8s)",
        "note": "CPU is the operator side only; the real API server runs in its own process",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--steady-cycles", type=int, default=3)
    args = parser.parse_args()
    result = asyncio.run(bench(args.policies, args.queries, args.steady_cycles))
    checks = {
        "prometheus_requests_per_cycle": result["prometheus_requests_per_cycle"] == args.queries,
        "steady_writes_per_cycle": result["steady_writes_per_cycle"] == 0,
        "cpu_seconds_per_cycle": float(result["cpu_seconds_per_cycle"]) < 1.0,  # type: ignore[arg-type]
    }
    result["targets"] = {k: {"target": TARGETS[k], "measured": result[k], "met": v} for k, v in checks.items()}
    out = ROOT / "bench" / ".cache" / "operator_cycle.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print("\n| metric | target | measured | met |\n|---|---|---|---|")
    for key, check in result["targets"].items():  # type: ignore[attr-defined]
        print(f"| {key} | {check['target']} | {check['measured']} | {'MET' if check['met'] else 'NOT MET'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
