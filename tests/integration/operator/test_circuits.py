"""CircuitBreaker scenarios: trip and recover, namespaces that come and go, restart, deletion."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.support.k8s_emulator import EmulatorHandle
from tests.support.operator_harness import CIRCUITS, POLICIES, ThreadedOperator, circuit, policy, running_operator
from tests.support.prometheus import PrometheusServer

CM = "sluice-circuit-{}"


def state_of(emulator: Any, name: str, namespace: str) -> str | None:
    cm = emulator.get_object("configmaps", CM.format(name), namespace)
    return None if cm is None else str(json.loads(cm["data"]["circuit.json"])["state"])


async def wait_state(emulator: Any, name: str, namespace: str, state: str, timeout: float = 15) -> None:
    await emulator.wait_for(lambda: state_of(emulator, name, namespace) == state, timeout_s=timeout,
                            what=f"circuit {name} {state} in {namespace}")


async def test_circuit_trips_recovers_and_embeds_in_policy(
    k8s_emulator: EmulatorHandle, prom: PrometheusServer
) -> None:
    emulator, base_url = k8s_emulator
    prom.exporter.set("test_errors", 0.0, {"circuit": "trip"})
    prom.exporter.set("test_lag", 10, {"policy": "guarded"})
    await prom.async_wait_for_value('max(test_errors{circuit="trip"})', 0.0)
    async with running_operator(base_url, prom.url):
        emulator.create_object(CIRCUITS, circuit("trip"))
        emulator.create_object(POLICIES, policy("guarded", spec={"circuitBreakerRef": "trip"}))
        await wait_state(emulator, "trip", "default", "closed")
        prom.exporter.set("test_errors", 0.9, {"circuit": "trip"})
        await wait_state(emulator, "trip", "default", "open")

        def embedded() -> str | None:
            cm = emulator.get_object("configmaps", "sluice-guarded", "default")
            doc = json.loads(cm["data"]["decision.json"]) if cm else {}
            return (doc.get("circuit") or {}).get("state")

        await emulator.wait_for(lambda: embedded() == "open", timeout_s=10, what="policy embeds open circuit")
        prom.exporter.set("test_errors", 0.0, {"circuit": "trip"})
        await wait_state(emulator, "trip", "default", "half-open")
        await wait_state(emulator, "trip", "default", "closed")
        obj = await emulator.wait_for_object(
            CIRCUITS, "trip", predicate=lambda o: (o.get("status") or {}).get("state") == "closed")
        moves = [(t["from"], t["to"]) for t in obj["status"]["lastTransitions"]]
        assert moves[-3:] == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
        await emulator.wait_for(
            lambda: {"CircuitOpened", "CircuitHalfOpen", "CircuitClosed"}
            <= {e["reason"] for e in emulator.events(involved_name="trip")},
            timeout_s=5, what="transition events")


async def test_circuit_follows_namespaces_and_cleans_up(
    k8s_emulator: EmulatorHandle, prom: PrometheusServer
) -> None:
    emulator, base_url = k8s_emulator
    prom.exporter.set("test_errors", 0.0, {"circuit": "ns"})
    emulator.create_namespace("team-a", {"sluice": "on"})
    emulator.create_namespace("team-b")
    emulator.create_namespace("listed")
    spec = {"namespaceSelector": {"matchLabels": {"sluice": "on"}}, "namespaces": ["listed"]}
    async with running_operator(base_url, prom.url):
        emulator.create_object(CIRCUITS, circuit("ns", spec=spec))
        await wait_state(emulator, "ns", "team-a", "closed")
        await wait_state(emulator, "ns", "listed", "closed")
        assert state_of(emulator, "ns", "team-b") is None
        cm = emulator.get_object("configmaps", CM.format("ns"), "team-a")
        assert cm is not None and cm["metadata"]["labels"]["sluice.dev/circuit"] == "ns"

        emulator.patch_object("namespaces", "team-b", {"metadata": {"labels": {"sluice": "on"}}})
        await wait_state(emulator, "ns", "team-b", "closed")
        emulator.patch_object("namespaces", "team-a", {"metadata": {"labels": {"sluice": None}}})
        await emulator.wait_for_deletion("configmaps", CM.format("ns"), "team-a", timeout_s=10)

        emulator.delete_object(CIRCUITS, "ns")
        for namespace in ("team-b", "listed"):
            await emulator.wait_for_deletion("configmaps", CM.format("ns"), namespace, timeout_s=10)


async def test_restart_keeps_an_open_circuit_open(k8s_emulator: EmulatorHandle, prom: PrometheusServer) -> None:
    emulator, base_url = k8s_emulator
    prom.exporter.set("test_errors", 1.0, {"circuit": "sticky"})
    await prom.async_wait_for_value('max(test_errors{circuit="sticky"})', 1.0)
    spec = {"recoveryTimeoutSeconds": 600}
    async with running_operator(base_url, prom.url, identity="first"):
        emulator.create_object(CIRCUITS, circuit("sticky", spec=spec))
        await wait_state(emulator, "sticky", "default", "open")
    opened = emulator.get_object(CIRCUITS, "sticky")
    assert opened is not None and opened["status"]["state"] == "open"
    since = opened["status"]["since"]
    # The error signal is gone now: a forgetful operator would start "closed" and stay there.
    prom.exporter.set("test_errors", 0.0, {"circuit": "sticky"})
    await prom.async_wait_for_value('max(test_errors{circuit="sticky"})', 0.0)
    status_writes_before = len(emulator.writes(resource=CIRCUITS, subresource="status"))
    async with running_operator(base_url, prom.url, identity="second") as op:
        await emulator.wait_for(lambda: op.runtime.cycles >= 3, timeout_s=15, what="three probes")
    after = emulator.get_object(CIRCUITS, "sticky")
    assert after is not None and after["status"]["state"] == "open" and after["status"]["since"] == since
    assert state_of(emulator, "sticky", "default") == "open"
    for write in emulator.writes(resource=CIRCUITS, subresource="status")[status_writes_before:]:
        assert (write.body or {}).get("status", {}).get("state") in (None, "open")


async def test_only_the_leader_acts_and_a_standby_takes_over(
    k8s_emulator: EmulatorHandle, prom: PrometheusServer
) -> None:
    emulator, base_url = k8s_emulator
    prom.exporter.set("test_lag", 10, {"policy": "ha"})
    emulator.create_object(POLICIES, policy("ha"))
    first = ThreadedOperator(base_url, prom.url, identity="replica-1", release_on_stop=False)
    await emulator.wait_for_object("configmaps", "sluice-ha", "default", timeout_s=10)
    second = ThreadedOperator(base_url, prom.url, identity="replica-2")
    try:
        await asyncio.sleep(3)
        assert first.runtime.cycles > 0 and second.runtime.cycles == 0
        assert not second.runtime.elector.leading
        lease = emulator.get_object("leases", "sluice-operator-leader", "default")
        assert lease is not None and lease["spec"]["holderIdentity"] == "replica-1"

        # The leader dies without handing over (as in a crash): the standby waits out the lease.
        await first.shutdown()
        loop = asyncio.get_running_loop()
        stopped_at = loop.time()
        await emulator.wait_for(lambda: second.runtime.cycles > 0, timeout_s=15, what="standby acting")
        took = loop.time() - stopped_at
        lease_duration = second.runtime.settings.lease_duration_seconds
        assert took <= lease_duration + 2 * second.runtime.settings.lease_renew_seconds + 1, took
        lease = emulator.get_object("leases", "sluice-operator-leader", "default")
        assert lease is not None and lease["spec"]["holderIdentity"] == "replica-2"
    finally:
        for op in (first, second):
            await op.shutdown()


async def test_a_leader_that_loses_its_lease_stops_at_once(
    k8s_emulator: EmulatorHandle, prom: PrometheusServer
) -> None:
    emulator, base_url = k8s_emulator
    prom.exporter.set("test_lag", 10, {"policy": "fenced"})
    emulator.create_object(POLICIES, policy("fenced"))
    op = ThreadedOperator(base_url, prom.url, identity="old-leader")
    try:
        await emulator.wait_for_object("configmaps", "sluice-fenced", "default", timeout_s=10)
        lease = emulator.get_object("leases", "sluice-operator-leader", "default")
        assert lease is not None
        lease["spec"]["holderIdentity"] = "usurper"
        lease["spec"]["renewTime"] = "2099-01-01T00:00:00.000000Z"
        lease["spec"]["leaseDurationSeconds"] = 3600
        emulator.put_object("leases", lease, "default")
        code = await op.wait_exit(timeout=10)
        assert code == 1
        assert not op.runtime.elector.leading
        cycles = op.runtime.cycles
        await asyncio.sleep(2)
        assert op.runtime.cycles == cycles
    finally:
        await op.shutdown()


async def test_no_finalizers_and_orphans_swept_after_deletion_while_down(
    k8s_emulator: EmulatorHandle, prom: PrometheusServer
) -> None:
    emulator, base_url = k8s_emulator
    prom.exporter.set("test_errors", 0.0, {"circuit": "gone"})
    prom.exporter.set("test_lag", 10, {"policy": "gone"})
    async with running_operator(base_url, prom.url, identity="before"):
        emulator.create_object(CIRCUITS, circuit("gone"))
        emulator.create_object(POLICIES, policy("gone"))
        await wait_state(emulator, "gone", "default", "closed")
        await emulator.wait_for_object("configmaps", "sluice-gone", "default", timeout_s=10)
        for ref, namespace in ((CIRCUITS, None), (POLICIES, "default")):
            obj = emulator.get_object(ref, "gone", namespace)
            assert obj is not None and not obj["metadata"].get("finalizers"), obj["metadata"]
    # The operator is down (uninstalled first): deletion must not hang on a finalizer.
    emulator.delete_object(CIRCUITS, "gone")
    emulator.delete_object(POLICIES, "gone", "default")
    assert emulator.get_object(CIRCUITS, "gone") is None
    assert emulator.get_object(POLICIES, "gone", "default") is None
    await emulator.wait_for_deletion("configmaps", "sluice-gone", "default")  # ownerReference GC
    assert state_of(emulator, "gone", "default") == "closed"  # left behind while no operator ran
    async with running_operator(base_url, prom.url, identity="after"):
        await emulator.wait_for_deletion("configmaps", CM.format("gone"), "default", timeout_s=15)
