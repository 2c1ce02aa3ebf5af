"""A policy's ConfigMap, status and Events, with the real Kopf, kube-apiserver and Prometheus."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.support.k8s_fixtures import ClusterHandle
from tests.support.operator_harness import POLICIES, policy, running_operator
from tests.support.prometheus import PrometheusServer


def decision_of(cm: dict[str, Any]) -> dict[str, Any]:
    return json.loads(cm["data"]["decision.json"])


async def test_policy_creates_configmap_with_decision(cluster: ClusterHandle, prom: PrometheusServer) -> None:
    api, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_lag", 3000, {"policy": "p1"})
    await prom.async_wait_for_value('sum(test_lag{policy="p1"})', 3000)
    async with running_operator(cluster, prom.url) as op:
        # Let the operator win the Lease and open its watches, then time the policy alone.
        await api.wait_for(lambda: op.runtime.health.leading
                           and len(cluster.proxy.recorded(verb="watch")) >= 3, timeout_s=15, what="watches")
        loop = asyncio.get_running_loop()
        created = loop.time()
        api.create_object(POLICIES, policy("p1", ns))  # intervalSeconds: 1
        cm = await api.wait_for_object("configmaps", "sluice-p1", ns, timeout_s=10)
        assert loop.time() - created <= 2 * 1.0, "the ConfigMap must appear within two polling intervals"
        doc = decision_of(cm)
        assert doc["priorities"]["high"] == {"zone": "yellow", "delayMs": 255, "shed": False}
        assert doc["priorities"]["medium"]["zone"] == "red" and doc["priorities"]["medium"]["delayMs"] == 2000
        assert doc["priorities"]["low"]["shed"] is True
        assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "sluice"
        owner = api.get_object(POLICIES, "p1", ns)
        assert owner is not None
        assert cm["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
        obj = await api.wait_for_object(
            POLICIES, "p1", ns, predicate=lambda o: (o.get("status") or {}).get("epoch"), timeout_s=5)
        status = obj["status"]
        assert status["priorities"]["medium"]["zone"] == "red"
        assert status["backlog"] == 3000
        assert status["observedGeneration"] == obj["metadata"]["generation"]
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        assert conditions["Ready"] == "True" and conditions["Valid"] == "True"
        assert conditions["SignalAvailable"] == "True"
