"""Faults a real API server produces only under load or churn, from the proxy in front of it.

500s and 429s on writes, answers slower than the client's timeout, a watch cut mid-stream, 410 Gone on
a resumed watch: each must lose no decision and no status, and say what happened.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.fault_proxy import Fault, matcher
from tests.support.k8s_fixtures import CIRCUITS, POLICIES, ClusterHandle
from tests.support.operator_harness import circuit, policy, running_operator
from tests.support.prometheus import PrometheusServer


def medium(cm: dict[str, Any] | None) -> str | None:
    return None if cm is None else json.loads(cm["data"]["decision.json"])["priorities"]["medium"]["zone"]


def status_zone(obj: dict[str, Any] | None) -> str | None:
    return (((obj or {}).get("status") or {}).get("priorities") or {}).get("medium", {}).get("zone")


async def test_failed_status_writes_are_retried_until_they_land(cluster: ClusterHandle, prom: PrometheusServer) -> None:
    api, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_lag", 3000, {"policy": "s500"})
    await prom.async_wait_for_value('sum(test_lag{policy="s500"})', 3000)
    fault = cluster.proxy.inject_fault(500, reason="InternalError", times=3, resource=POLICIES, subresource="status")
    async with running_operator(cluster, prom.url):
        api.create_object(POLICIES, policy("s500", ns))
        await api.wait_for(lambda: medium(api.get_object("configmaps", "sluice-s500", ns)) == "red", timeout_s=15,
                           what="decision published")
        # The backlog never changes again: only a retry of the failed status write can fill it in.
        obj = await api.wait_for_object(POLICIES, "s500", ns, timeout_s=15,
                                        predicate=lambda o: status_zone(o) == "red")
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert len(fault.hits) == 3


async def test_circuit_status_lost_to_500_is_written_on_the_next_probe(
    cluster: ClusterHandle, prom: PrometheusServer
) -> None:
    api, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_errors", 1.0, {"circuit": "c500"})
    await prom.async_wait_for_value('max(test_errors{circuit="c500"})', 1.0)
    fault = cluster.proxy.inject_fault(500, times=4, resource=CIRCUITS, subresource="status")
    async with running_operator(cluster, prom.url):
        api.create_object(CIRCUITS, circuit("c500", namespaces=(ns,), spec={"recoveryTimeoutSeconds": 600}))
        obj = await api.wait_for_object(CIRCUITS, "c500", timeout_s=20,
                                        predicate=lambda o: (o.get("status") or {}).get("state") == "open")
        assert obj["status"]["lastTransitions"][-1]["to"] == "open"
    assert len(fault.hits) == 4


async def test_429_and_slow_answers_on_configmap_writes_delay_but_lose_nothing(
    cluster: ClusterHandle, prom: PrometheusServer
) -> None:
    api, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_lag", 100, {"policy": "busy"})
    await prom.async_wait_for_value('sum(test_lag{policy="busy"})', 100)
    async with running_operator(cluster, prom.url):
        api.create_object(POLICIES, policy("busy", ns))
        await api.wait_for(lambda: medium(api.get_object("configmaps", "sluice-busy", ns)) == "green", timeout_s=15,
                           what="green")
        throttled = cluster.proxy.inject_fault(429, reason="TooManyRequests", times=2, resource="configmaps",
                                               method="PUT")
        slow = cluster.proxy.inject(Fault(delay=11.0, times=1, match=matcher(resource="configmaps", method="PUT")))
        prom.exporter.set("test_lag", 3000, {"policy": "busy"})
        await api.wait_for(lambda: medium(api.get_object("configmaps", "sluice-busy", ns)) == "red", timeout_s=45,
                           what="the red decision, after two 429s and an answer slower than the client timeout")
        assert len(throttled.hits) == 2 and len(slow.hits) == 1


async def test_dropped_watches_and_410_on_resume_miss_no_policy(cluster: ClusterHandle, prom: PrometheusServer) -> None:
    api, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_lag", 10, {"policy": "w1"})
    prom.exporter.set("test_lag", 10, {"policy": "w2"})
    async with running_operator(cluster, prom.url, env={"SLUICE_RESYNC_SECONDS": "3"}) as op:
        api.create_object(POLICIES, policy("w1", ns))
        await api.wait_for_object("configmaps", "sluice-w1", ns, timeout_s=15)
        uid = api.get_object(POLICIES, "w1", ns)["metadata"]["uid"]  # type: ignore[index]
        assert uid in op.runtime.scheduler.objects
        # Every resumed watch is answered 410 Gone (history compacted); then all watches are cut.
        gone = cluster.proxy.inject(Fault(gone_on_resume=True, times=None, match=matcher(watch=True)))
        dropped = cluster.proxy.drop_watches()
        assert dropped >= 3  # policies, circuits, namespaces
        api.create_object(POLICIES, policy("w2", ns))  # created while the watches keep failing
        api.delete_object(POLICIES, "w1", ns)  # deleted meanwhile: a relist just no longer has it
        await api.wait_for_object("configmaps", "sluice-w2", ns, timeout_s=30)
        cluster.proxy.clear_faults()
        await api.wait_for(lambda: uid not in op.runtime.scheduler.objects, timeout_s=30,
                           what="w1 no longer evaluated")
        assert "w2" in {t.name for t in op.runtime.scheduler.objects.values()}
    assert gone.hits, "the operator's watches resumed with a resourceVersion and met 410"
