"""Policy scenarios on the real API server: hysteresis, lost signal, bad PromQL, conflicts, 409s, idempotence, 403s."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from tests.support.k8s_fixtures import ClusterHandle
from tests.support.operator_harness import POLICIES, policy, running_operator
from tests.support.prometheus import PrometheusServer


def zones(cm: dict[str, Any] | None) -> dict[str, str] | None:
    if cm is None:
        return None
    doc = json.loads(cm["data"]["decision.json"])
    return {p: v["zone"] for p, v in doc["priorities"].items()}


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


async def wait_event(emulator: Any, name: str, reason: str, namespace: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await emulator.wait_for(
        lambda: emulator.events(namespace, involved_name=name, reason=reason), timeout_s=5, what=f"{reason} event")
    return found


async def wait_medium(emulator: Any, ns: str, name: str, zone: str, timeout: float = 10) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        cm = emulator.get_object("configmaps", f"sluice-{name}", ns)
        z = zones(cm)
        return cm if z is not None and z["medium"] == zone else None
    result: dict[str, Any] = await emulator.wait_for(check, timeout_s=timeout, what=f"medium {zone}")
    return result


async def test_zones_follow_lag_with_hysteresis(cluster: ClusterHandle, prom: PrometheusServer) -> None:
    emulator, ns = cluster.api, cluster.namespace
    labels = {"policy": "hyst"}
    prom.exporter.set("test_lag", 100, labels)
    await prom.async_wait_for_value('sum(test_lag{policy="hyst"})', 100)
    spec = {"hysteresis": {"margin": 0.2, "minDwellSeconds": 0}}
    async with running_operator(cluster, prom.url):
        emulator.create_object(POLICIES, policy("hyst", ns, spec=spec))
        await wait_medium(emulator, ns, "hyst", "green")
        for lag, zone in ((1000, "yellow"), (3000, "red")):
            prom.exporter.set("test_lag", lag, labels)
            await wait_medium(emulator, ns, "hyst", zone)
        # 1900 is below yellow (2000) but not below yellow*(1-margin) = 1600: stays red.
        prom.exporter.set("test_lag", 1900, labels)
        await prom.async_wait_for_value('sum(test_lag{policy="hyst"})', 1900)
        await asyncio.sleep(2.5)
        assert zones(emulator.get_object("configmaps", "sluice-hyst", ns))["medium"] == "red"  # type: ignore[index]
        prom.exporter.set("test_lag", 1500, labels)
        await wait_medium(emulator, ns, "hyst", "yellow")
        prom.exporter.set("test_lag", 100, labels)
        await wait_medium(emulator, ns, "hyst", "green")

        def medium_changes() -> list[str] | None:
            events = emulator.events(ns, involved_name="hyst", reason="ZoneChanged")
            events.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
            found = [e["message"] for e in events if e["message"].startswith("medium")]
            return found if len(found) >= 4 else None

        medium = await emulator.wait_for(medium_changes, timeout_s=5, what="four medium zone changes")
        assert medium == [
            "medium priority: green -> yellow at backlog 1000",
            "medium priority: yellow -> red at backlog 3000",
            "medium priority: red -> yellow at backlog 1500",
            "medium priority: yellow -> green at backlog 100",
        ]


async def test_prometheus_down_engages_fallback_and_recovers(
    cluster: ClusterHandle, make_prometheus: Callable[..., PrometheusServer]
) -> None:
    emulator, ns = cluster.api, cluster.namespace
    server = make_prometheus()
    server.exporter.set("test_lag", 3000, {"policy": "down"})
    await server.async_wait_for_value('sum(test_lag{policy="down"})', 3000)
    spec = {"fallback": {"mode": "Conservative"}}
    async with running_operator(cluster, server.url):
        emulator.create_object(POLICIES, policy("down", ns, spec=spec))
        await wait_medium(emulator, ns, "down", "red")
        await server.async_stop()

        def fallback_doc() -> dict[str, Any] | None:
            cm = emulator.get_object("configmaps", "sluice-down", ns)
            doc = json.loads(cm["data"]["decision.json"]) if cm else {}
            return doc if doc.get("source") == "fallback" else None

        doc = await emulator.wait_for(fallback_doc, timeout_s=10, what="fallback decision")
        assert [doc["priorities"][p]["delayMs"] for p in ("high", "medium", "low")] == [100, 500, 1000]
        obj = await emulator.wait_for_object(
            POLICIES, "down", ns,
            predicate=lambda o: (condition(o, "SignalAvailable") or {}).get("status") == "False")
        assert condition(obj, "SignalAvailable")["reason"] in ("ConnectionError", "Timeout")  # type: ignore[index]
        await wait_event(emulator, "down", "SignalLost", ns)
        await wait_event(emulator, "down", "FallbackEngaged", ns)

        await server.async_start()
        await emulator.wait_for_object(
            POLICIES, "down", ns,
            predicate=lambda o: (condition(o, "SignalAvailable") or {}).get("status") == "True", timeout_s=20)
        await wait_medium(emulator, ns, "down", "red")
        await wait_event(emulator, "down", "SignalRestored", ns)


async def test_promql_syntax_error_sets_valid_false(cluster: ClusterHandle, prom: PrometheusServer) -> None:
    emulator, ns = cluster.api, cluster.namespace
    async with running_operator(cluster, prom.url):
        emulator.create_object(POLICIES, policy("bad", ns, query="sum(rate(test_lag[1m]"))
        obj = await emulator.wait_for_object(
            POLICIES, "bad", ns,
            predicate=lambda o: (condition(o, "Valid") or {}).get("status") == "False", timeout_s=10)
        valid = condition(obj, "Valid")
        assert valid is not None and valid["reason"] == "BadQuery"
        assert "parse error" in valid["message"]


async def test_raw_query_refused_outside_allowed_namespaces(
    cluster: ClusterHandle, prom: PrometheusServer
) -> None:
    emulator = cluster.api
    tenant = cluster.create_namespace("tenant-a")
    async with running_operator(cluster, prom.url, env={"SLUICE_RAW_QUERY_NAMESPACES": "platform-*"}):
        emulator.create_object(POLICIES, policy("raw", tenant))
        obj = await emulator.wait_for_object(
            POLICIES, "raw", tenant,
            predicate=lambda o: (condition(o, "Valid") or {}).get("status") == "False", timeout_s=10)
        assert condition(obj, "Valid")["reason"] == "RawQueryNotAllowed"  # type: ignore[index]
        assert "SLUICE_RAW_QUERY_NAMESPACES" in condition(obj, "Valid")["message"]  # type: ignore[index]


async def test_unmanaged_configmap_is_not_overwritten(cluster: ClusterHandle, prom: PrometheusServer) -> None:
    emulator, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_lag", 10, {"policy": "taken"})
    theirs = {"metadata": {"name": "sluice-taken", "namespace": ns}, "data": {"app": "config"}}
    emulator.create_object("configmaps", theirs, ns)
    async with running_operator(cluster, prom.url):
        emulator.create_object(POLICIES, policy("taken", ns))
        obj = await emulator.wait_for_object(
            POLICIES, "taken", ns,
            predicate=lambda o: (condition(o, "Conflict") or {}).get("status") == "True", timeout_s=10)
        assert condition(obj, "Ready")["status"] == "False"  # type: ignore[index]
        await asyncio.sleep(2)
    cm = emulator.get_object("configmaps", "sluice-taken", ns)
    assert cm is not None and cm["data"] == {"app": "config"}
    assert not cluster.proxy.writes(resource="configmaps", name="sluice-taken", method=["PUT", "PATCH"])
    await wait_event(emulator, "taken", "ConfigMapConflict", ns)


async def test_conflict_on_write_is_retried(cluster: ClusterHandle, prom: PrometheusServer) -> None:
    emulator, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_lag", 10, {"policy": "c409"})
    await prom.async_wait_for_value('sum(test_lag{policy="c409"})', 10)
    fault = cluster.proxy.inject_fault(409, resource="configmaps", method="POST", times=1, reason="AlreadyExists")
    async with running_operator(cluster, prom.url):
        emulator.create_object(POLICIES, policy("c409", ns))
        cm = await emulator.wait_for_object("configmaps", "sluice-c409", ns, timeout_s=10)
        assert len(fault.hits) == 1
        assert zones(cm) == {"high": "green", "medium": "green", "low": "green"}
        # A stale-resourceVersion update (someone else wrote in between) is re-read and retried.
        put_fault = cluster.proxy.inject_fault(409, resource="configmaps", method="PUT", times=1, reason="Conflict")
        prom.exporter.set("test_lag", 3000, {"policy": "c409"})
        await wait_medium(emulator, ns, "c409", "red")
        assert len(put_fault.hits) == 1


async def test_same_input_reconciled_twice_writes_nothing_more(
    cluster: ClusterHandle, prom: PrometheusServer
) -> None:
    emulator, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_lag", 700, {"policy": "steady"})
    await prom.async_wait_for_value('sum(test_lag{policy="steady"})', 700)
    async with running_operator(cluster, prom.url) as op:
        emulator.create_object(POLICIES, policy("steady", ns))
        first = await emulator.wait_for_object("configmaps", "sluice-steady", ns, timeout_s=10)
        await asyncio.sleep(1.5)
        writes_before = len(cluster.proxy.writes(name="sluice-steady")) + len(cluster.proxy.writes(name="steady"))
        cycles_before = op.runtime.cycles
        await asyncio.sleep(3.5)  # >= 3 more one-second cycles with the same backlog
        assert op.runtime.cycles >= cycles_before + 3
        writes_after = len(cluster.proxy.writes(name="sluice-steady")) + len(cluster.proxy.writes(name="steady"))
        second = emulator.get_object("configmaps", "sluice-steady", ns)
    assert writes_after == writes_before
    assert second is not None and second["data"]["decision.json"] == first["data"]["decision.json"]


async def test_terminating_namespace_no_retry_storm(cluster: ClusterHandle, prom: PrometheusServer) -> None:
    emulator = cluster.api
    prom.exporter.set("test_lag", 10, {"policy": "doomed"})
    doomed = cluster.create_namespace("doomed")
    held = policy("doomed", doomed)
    held["metadata"]["finalizers"] = ["sluice.dev/test-hold"]  # outlives the namespace controller's sweep
    emulator.create_object(POLICIES, held)
    emulator.hold_namespace_terminating(doomed)  # a real Terminating namespace
    async with running_operator(cluster, prom.url):
        obj = await emulator.wait_for_object(
            POLICIES, "doomed", doomed,
            predicate=lambda o: (condition(o, "Ready") or {}).get("reason") == "NamespaceTerminating",
            timeout_s=10)
        assert "being terminated" in condition(obj, "Ready")["message"]  # type: ignore[index]
        await asyncio.sleep(4)
    attempts = cluster.proxy.recorded(resource="configmaps", namespace=doomed, method="POST")
    assert 1 <= len(attempts) <= 2, f"{len(attempts)} create attempts in ~5 s: a retry storm"
