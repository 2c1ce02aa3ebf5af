"""A policy's ConfigMap, status and Events, with the real Kopf, emulator and Prometheus."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.support.k8s_emulator import EmulatorHandle
from tests.support.operator_harness import POLICIES, policy, running_operator
from tests.support.prometheus import PrometheusServer


def decision_of(cm: dict[str, Any]) -> dict[str, Any]:
    return json.loads(cm["data"]["decision.json"])


async def test_policy_creates_configmap_with_decision(k8s_emulator: EmulatorHandle, prom: PrometheusServer) -> None:
    emulator, base_url = k8s_emulator
    prom.exporter.set("test_lag", 3000, {"policy": "p1"})
    await prom.async_wait_for_value('sum(test_lag{policy="p1"})', 3000)
    async with running_operator(base_url, prom.url) as op:
        # Let the operator win the Lease and open its watches, then time the policy alone.
        await emulator.wait_for(lambda: op.runtime.health.leading and emulator.open_watches >= 3, timeout_s=10)
        loop = asyncio.get_running_loop()
        created = loop.time()
        emulator.create_object(POLICIES, policy("p1"))  # intervalSeconds: 1
        cm = await emulator.wait_for_object("configmaps", "sluice-p1", "default", timeout_s=10)
        assert loop.time() - created <= 2 * 1.0, "the ConfigMap must appear within two polling intervals"
        doc = decision_of(cm)
        assert doc["priorities"]["high"] == {"zone": "yellow", "delayMs": 255, "shed": False}
        assert doc["priorities"]["medium"]["zone"] == "red" and doc["priorities"]["medium"]["delayMs"] == 2000
        assert doc["priorities"]["low"]["shed"] is True
        assert cm["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "sluice"
        owner = emulator.get_object(POLICIES, "p1", "default")
        assert owner is not None
        assert cm["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
        obj = await emulator.wait_for_object(
            POLICIES, "p1", "default", predicate=lambda o: (o.get("status") or {}).get("epoch"), timeout_s=5)
        status = obj["status"]
        assert status["priorities"]["medium"]["zone"] == "red"
        assert status["backlog"] == 3000
        assert status["observedGeneration"] == obj["metadata"]["generation"]
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        assert conditions["Ready"] == "True" and conditions["Valid"] == "True"
        assert conditions["SignalAvailable"] == "True"
