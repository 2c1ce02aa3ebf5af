"""CircuitBreaker scenarios on the real API server: trip and recover, namespaces, restart, deletion, HA."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.support.control_plane import OPERATOR_NAMESPACE
from tests.support.k8s_fixtures import ClusterHandle
from tests.support.operator_harness import CIRCUITS, POLICIES, ThreadedOperator, circuit, policy, running_operator
from tests.support.prometheus import PrometheusServer

CM = "sluice-circuit-{}"
LEASES = "coordination.k8s.io/v1/leases"


def state_of(api: Any, name: str, namespace: str) -> str | None:
    cm = api.get_object("configmaps", CM.format(name), namespace)
    return None if cm is None else str(json.loads(cm["data"]["circuit.json"])["state"])


async def wait_state(api: Any, name: str, namespace: str, state: str, timeout: float = 15) -> None:
    await api.wait_for(lambda: state_of(api, name, namespace) == state, timeout_s=timeout,
                       what=f"circuit {name} {state} in {namespace}")


async def test_circuit_trips_recovers_and_embeds_in_policy(cluster: ClusterHandle, prom: PrometheusServer) -> None:
    api, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_errors", 0.0, {"circuit": "trip"})
    prom.exporter.set("test_lag", 10, {"policy": "guarded"})
    await prom.async_wait_for_value('max(test_errors{circuit="trip"})', 0.0)
    async with running_operator(cluster, prom.url):
        api.create_object(CIRCUITS, circuit("trip", namespaces=(ns,)))
        api.create_object(POLICIES, policy("guarded", ns, spec={"circuitBreakerRef": "trip"}))
        await wait_state(api, "trip", ns, "closed")
        prom.exporter.set("test_errors", 0.9, {"circuit": "trip"})
        await wait_state(api, "trip", ns, "open")

        def embedded() -> str | None:
            cm = api.get_object("configmaps", "sluice-guarded", ns)
            doc = json.loads(cm["data"]["decision.json"]) if cm else {}
            return (doc.get("circuit") or {}).get("state")

        await api.wait_for(lambda: embedded() == "open", timeout_s=10, what="policy embeds open circuit")
        prom.exporter.set("test_errors", 0.0, {"circuit": "trip"})
        await wait_state(api, "trip", ns, "half-open")
        await wait_state(api, "trip", ns, "closed")
        obj = await api.wait_for_object(
            CIRCUITS, "trip", predicate=lambda o: (o.get("status") or {}).get("state") == "closed")
        moves = [(t["from"], t["to"]) for t in obj["status"]["lastTransitions"]]
        assert moves[-3:] == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
        assert obj["status"]["since"] and obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        # Events about the cluster-scoped circuit land in the operator's namespace, which the real
        # server accepts only because the reference names that namespace too.
        await api.wait_for(
            lambda: {"CircuitOpened", "CircuitHalfOpen", "CircuitClosed"}
            <= {e["reason"] for e in api.events(OPERATOR_NAMESPACE, involved_name="trip")},
            timeout_s=5, what="transition events in sluice-system")
    rejected = [r for r in cluster.proxy.recorded(resource="events") if r.status >= 400]
    assert not rejected, [(r.namespace, r.status) for r in rejected]
    status_writes = cluster.proxy.writes(resource=CIRCUITS, subresource="status")
    assert status_writes and all(w.status == 200 for w in status_writes), [w.status for w in status_writes]


async def test_circuit_follows_namespaces_and_cleans_up(cluster: ClusterHandle, prom: PrometheusServer) -> None:
    api = cluster.api
    prom.exporter.set("test_errors", 0.0, {"circuit": "ns"})
    key = f"sluice-test-{cluster.lease_name}"  # a label no other test's namespace carries
    team_a = cluster.create_namespace("team-a", {key: "on"})
    team_b = cluster.create_namespace("team-b")
    listed = cluster.create_namespace("listed")
    spec = {"namespaceSelector": {"matchLabels": {key: "on"}}, "namespaces": [listed]}
    async with running_operator(cluster, prom.url):
        api.create_object(CIRCUITS, circuit("ns", spec=spec))
        await wait_state(api, "ns", team_a, "closed")
        await wait_state(api, "ns", listed, "closed")
        assert state_of(api, "ns", team_b) is None
        cm = api.get_object("configmaps", CM.format("ns"), team_a)
        owner = api.get_object(CIRCUITS, "ns")
        assert cm is not None and owner is not None and cm["metadata"]["labels"]["sluice.dev/circuit"] == "ns"
        assert [r["uid"] for r in cm["metadata"]["ownerReferences"]] == [owner["metadata"]["uid"]]

        api.patch_object("namespaces", team_b, {"metadata": {"labels": {key: "on"}}})
        await wait_state(api, "ns", team_b, "closed")
        api.patch_object("namespaces", team_a, {"metadata": {"labels": {key: None}}})
        await api.wait_for_deletion("configmaps", CM.format("ns"), team_a, timeout_s=10)

        api.delete_object(CIRCUITS, "ns")
        for namespace in (team_b, listed):
            await api.wait_for_deletion("configmaps", CM.format("ns"), namespace, timeout_s=20)


async def test_restart_keeps_an_open_circuit_open(cluster: ClusterHandle, prom: PrometheusServer) -> None:
    api, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_errors", 1.0, {"circuit": "sticky"})
    await prom.async_wait_for_value('max(test_errors{circuit="sticky"})', 1.0)
    spec = {"recoveryTimeoutSeconds": 600}
    async with running_operator(cluster, prom.url, identity="first"):
        api.create_object(CIRCUITS, circuit("sticky", namespaces=(ns,), spec=spec))
        await wait_state(api, "sticky", ns, "open")
        opened = await api.wait_for_object(
            CIRCUITS, "sticky", predicate=lambda o: (o.get("status") or {}).get("state") == "open")
    since = opened["status"]["since"]
    # The error signal is gone now: a forgetful operator would start "closed" and stay there.
    prom.exporter.set("test_errors", 0.0, {"circuit": "sticky"})
    await prom.async_wait_for_value('max(test_errors{circuit="sticky"})', 0.0)
    status_writes_before = len(cluster.proxy.writes(resource=CIRCUITS, subresource="status"))
    async with running_operator(cluster, prom.url, identity="second") as op:
        await api.wait_for(lambda: op.runtime.cycles >= 3, timeout_s=15, what="three probes")
    after = api.get_object(CIRCUITS, "sticky")
    assert after is not None and after["status"]["state"] == "open" and after["status"]["since"] == since
    assert state_of(api, "sticky", ns) == "open"
    for write in cluster.proxy.writes(resource=CIRCUITS, subresource="status")[status_writes_before:]:
        assert (write.body or {}).get("status", {}).get("state") in (None, "open")


async def test_only_the_leader_acts_and_a_standby_takes_over(cluster: ClusterHandle, prom: PrometheusServer) -> None:
    api, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_lag", 10, {"policy": "ha"})
    api.create_object(POLICIES, policy("ha", ns))
    first = ThreadedOperator(cluster, prom.url, identity="replica-1", release_on_stop=False)
    await api.wait_for_object("configmaps", "sluice-ha", ns, timeout_s=15)
    second = ThreadedOperator(cluster, prom.url, identity="replica-2")
    try:
        await asyncio.sleep(3)
        assert first.runtime.cycles > 0 and second.runtime.cycles == 0
        assert not second.runtime.elector.leading
        lease = api.get_object(LEASES, cluster.lease_name, OPERATOR_NAMESPACE)
        assert lease is not None and lease["spec"]["holderIdentity"] == "replica-1"

        # The leader dies without handing over (as in a crash): the standby waits out the lease.
        await first.shutdown()
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        await api.wait_for(lambda: second.runtime.cycles > 0, timeout_s=15, what="standby acting")
        took = loop.time() - stopped_at
        lease_duration = second.runtime.settings.leader.lease_duration_seconds
        assert took <= lease_duration + 2 * second.runtime.settings.leader.lease_renew_seconds + 1, took
        lease = api.get_object(LEASES, cluster.lease_name, OPERATOR_NAMESPACE)
        assert lease is not None and lease["spec"]["holderIdentity"] == "replica-2"
    finally:
        for op in (first, second):
            await op.shutdown()


async def test_a_leader_that_loses_its_lease_stops_at_once(cluster: ClusterHandle, prom: PrometheusServer) -> None:
    api, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_lag", 10, {"policy": "fenced"})
    api.create_object(POLICIES, policy("fenced", ns))
    op = ThreadedOperator(cluster, prom.url, identity="old-leader")
    try:
        await api.wait_for_object("configmaps", "sluice-fenced", ns, timeout_s=15)
        lease = api.get_object(LEASES, cluster.lease_name, OPERATOR_NAMESPACE)
        assert lease is not None
        lease["spec"]["holderIdentity"] = "usurper"
        lease["spec"]["renewTime"] = "2099-01-01T00:00:00.000000Z"
        lease["spec"]["leaseDurationSeconds"] = 3600
        api.put_object(LEASES, lease, OPERATOR_NAMESPACE)
        code = await op.wait_exit(timeout=10)
        assert code == 1
        assert not op.runtime.elector.leading
        cycles = op.runtime.cycles
        await asyncio.sleep(2)
        assert op.runtime.cycles == cycles
    finally:
        await op.shutdown()


async def test_deleted_while_down_is_collected_and_label_only_orphans_swept(
    cluster: ClusterHandle, prom: PrometheusServer
) -> None:
    api, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_errors", 0.0, {"circuit": "gone"})
    prom.exporter.set("test_lag", 10, {"policy": "gone"})
    async with running_operator(cluster, prom.url, identity="before"):
        api.create_object(CIRCUITS, circuit("gone", namespaces=(ns,)))
        api.create_object(POLICIES, policy("gone", ns))
        await wait_state(api, "gone", ns, "closed")
        await api.wait_for_object("configmaps", "sluice-gone", ns, timeout_s=10)
        for ref, namespace in ((CIRCUITS, None), (POLICIES, ns)):
            obj = api.get_object(ref, "gone", namespace)
            assert obj is not None and not obj["metadata"].get("finalizers"), obj["metadata"]
    # The operator is down (uninstalled first): deletion must not hang on a finalizer, and the real
    # garbage collector removes both ConfigMaps through their ownerReferences.
    api.delete_object(CIRCUITS, "gone")
    api.delete_object(POLICIES, "gone", ns)
    assert api.get_object(CIRCUITS, "gone") is None
    assert api.get_object(POLICIES, "gone", ns) is None
    await api.wait_for_deletion("configmaps", "sluice-gone", ns, timeout_s=30)
    await api.wait_for_deletion("configmaps", CM.format("gone"), ns, timeout_s=30)
    # A label-only circuit ConfigMap (written before ownerReferences, or with its owner reference
    # removed by hand) has no owner for the collector: the sweep at start removes it.
    api.create_object("configmaps", {"metadata": {
        "name": CM.format("legacy"), "namespace": ns,
        "labels": {"app.kubernetes.io/managed-by": "sluice", "sluice.dev/circuit": "legacy"}},
        "data": {"circuit.json": "{}"}})
    async with running_operator(cluster, prom.url, identity="after"):
        await api.wait_for_deletion("configmaps", CM.format("legacy"), ns, timeout_s=20)
