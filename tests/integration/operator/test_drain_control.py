"""DrainTime control end to end: real Prometheus rates in, admitRatio in the ConfigMap and status out,
and ControlDegraded (with the Zones decision) when a rate goes missing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.k8s_fixtures import ClusterHandle
from tests.support.operator_harness import POLICIES, policy, running_operator
from tests.support.prometheus import PrometheusServer

MU, OFFER = 1000.0, {"high": 200.0, "medium": 600.0, "low": 800.0}


def decision_of(cm: dict[str, Any]) -> dict[str, Any]:
    return json.loads(cm["data"]["decision.json"])


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def drain_policy(name: str, namespace: str) -> dict[str, Any]:
    body = policy(name, namespace, spec={"control": {
        "mode": "DrainTime", "targetLag": 500, "drainSeconds": 60, "integralSeconds": 0, "rateSmoothing": 1,
        "offeredQuery": f'sum by (priority) (test_offered{{policy="{name}"}})',
    }})
    body["spec"]["source"]["prometheus"]["consumptionQuery"] = f'sum(test_mu{{policy="{name}"}})'
    return body


async def test_drain_time_publishes_admit_ratios_and_degrades_to_zones(
    cluster: ClusterHandle, prom: PrometheusServer
) -> None:
    api, ns, name = cluster.api, cluster.namespace, "drain1"
    prom.exporter.set("test_lag", 3000, {"policy": name})
    prom.exporter.set("test_mu", MU, {"policy": name})
    for priority, rate in OFFER.items():
        prom.exporter.set("test_offered", rate, {"policy": name, "priority": priority})
    await prom.async_wait_for_value(f'sum(test_offered{{policy="{name}"}})', sum(OFFER.values()))
    await prom.async_wait_for_value(f'sum(test_mu{{policy="{name}"}})', MU)
    async with running_operator(cluster, prom.url):
        api.create_object(POLICIES, drain_policy(name, ns))
        cm = await api.wait_for_object(
            "configmaps", f"sluice-{name}", ns, timeout_s=15,
            predicate=lambda o: "admitRatio" in decision_of(o)["priorities"]["low"],
        )
        doc = decision_of(cm)["priorities"]
        allowed = MU - (3000 - 500) / 60
        assert doc["high"]["admitRatio"] == 1.0 and doc["high"]["excess"] == "wait"
        assert doc["medium"]["admitRatio"] == 1.0 and doc["medium"]["excess"] == "wait"
        assert doc["low"]["shed"] and doc["low"]["admitRatio"] == 0.0  # 3000 is deep in low's red: the
        assert doc["low"]["excess"] == "shed"  # zones shed it, and R goes to high and medium
        assert [doc[p]["delayMs"] for p in ("high", "medium", "low")] == [0, 0, 0]
        assert doc["medium"]["zone"] == "red"  # zones are still computed and shown
        obj = await api.wait_for_object(
            POLICIES, name, ns, timeout_s=10,
            predicate=lambda o: conditions(o).get("ControlDegraded", {}).get("status") == "False",
        )
        control = obj["status"]["control"]
        assert control["pacing"] is True
        assert control["consumptionRate"] == pytest.approx(MU)
        assert control["allowedRate"] == pytest.approx(allowed)
        assert control["offeredRates"] == pytest.approx(OFFER)

        # No producer reports any more: the offered rate is unknown, never zero -> Zones, and it says so.
        for priority in OFFER:
            prom.exporter.remove("test_offered", {"policy": name, "priority": priority})
        obj = await api.wait_for_object(
            POLICIES, name, ns, timeout_s=20,
            predicate=lambda o: conditions(o).get("ControlDegraded", {}).get("status") == "True",
        )
        message = conditions(obj)["ControlDegraded"]["message"]
        assert "no offered rate" in message and "sluice_producer_offered_total" in message
        cm = await api.wait_for_object(
            "configmaps", f"sluice-{name}", ns, timeout_s=10,
            predicate=lambda o: "admitRatio" not in decision_of(o)["priorities"]["low"],
        )
        doc = decision_of(cm)["priorities"]
        assert doc["medium"]["delayMs"] == 2000  # the Zones decision at backlog 3000
        assert "DrainTime degraded to Zones" in decision_of(cm)["reason"]
        def reasons() -> set[str]:  # Events are written after status, through the rate limiter
            return {e.get("reason") for e in api.list_objects("events", ns)
                    if e.get("involvedObject", {}).get("name") == name}
        await api.wait_for(lambda: "ControlDegraded" in reasons(), timeout_s=10, what="a ControlDegraded Event")


async def test_a_raw_source_query_without_consumption_query_says_what_to_set(
    cluster: ClusterHandle, prom: PrometheusServer
) -> None:
    api, ns, name = cluster.api, cluster.namespace, "drain2"
    prom.exporter.set("test_lag", 100, {"policy": name})
    await prom.async_wait_for_value(f'sum(test_lag{{policy="{name}"}})', 100)
    async with running_operator(cluster, prom.url):
        api.create_object(POLICIES, policy(name, ns, spec={"control": {"mode": "DrainTime"}}))
        obj = await api.wait_for_object(
            POLICIES, name, ns, timeout_s=15,
            predicate=lambda o: conditions(o).get("ControlDegraded", {}).get("status") == "True",
        )
        message = conditions(obj)["ControlDegraded"]["message"]
        assert "consumptionQuery" in message
        assert conditions(obj)["Ready"]["status"] == "True"  # the Zones decision is still published
