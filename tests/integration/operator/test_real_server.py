"""What only a real API server shows: name limits, garbage collection, rotated tokens, namespaced RBAC."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from sluice_operator.publish.names import LABEL_VALUE_MAX, circuit_configmap, label_value, policy_configmap
from tests.support.control_plane import OPERATOR_NAMESPACE, ControlPlane, ServiceAccountIdentity
from tests.support.k8s_fixtures import CIRCUITS, POLICIES, ClusterHandle
from tests.support.operator_harness import circuit, policy, running_operator
from tests.support.prometheus import PrometheusServer


def zones(cm: dict[str, Any] | None) -> dict[str, str] | None:
    if cm is None:
        return None
    return {p: v["zone"] for p, v in json.loads(cm["data"]["decision.json"])["priorities"].items()}


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    return next((dict(c) for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == type_),
                None)


def long_name(stem: str, length: int = 253) -> str:
    """A legal object name of exactly `length` characters (a DNS subdomain: dot-separated labels)."""
    text = stem
    while len(text) < length:
        text += "." + "x" * min(62, length - len(text) - 1)
    return text[:length].rstrip(".")


async def test_names_of_every_legal_length_publish_and_never_collide(
    cluster: ClusterHandle, prom: PrometheusServer
) -> None:
    api, ns = cluster.api, cluster.namespace
    names = [long_name("a", 253), long_name("a", 252), "b" * 63, long_name("c", 64), "d"]
    assert len(names[0]) == 253 and names[0][:200] == names[1][:200]  # a shared long prefix
    for name in names:
        prom.exporter.set("test_lag", 3000, {"policy": name})
    prom.exporter.set("test_errors", 0.0, {"circuit": names[0]})
    async with running_operator(cluster, prom.url):
        for name in names:
            api.create_object(POLICIES, policy(name, ns))
        api.create_object(CIRCUITS, circuit(names[0], namespaces=(ns,)))
        red = {"high": "yellow", "medium": "red", "low": "red"}
        for name in names:
            cm = await api.wait_for_object("configmaps", policy_configmap(name), ns, timeout_s=20,
                                           predicate=lambda c: zones(c) == red)
            assert cm["metadata"]["labels"]["sluice.dev/policy"] == label_value(name)
            assert cm["metadata"]["annotations"]["sluice.dev/owner-name"] == name
        cm = await api.wait_for_object("configmaps", circuit_configmap(names[0]), ns, timeout_s=20)
        assert json.loads(cm["data"]["circuit.json"])["state"] == "closed"
        obj = await api.wait_for_object(CIRCUITS, names[0], predicate=lambda o: (o.get("status") or {}).get("state"))
        assert obj["status"]["state"] == "closed"
    assert len({policy_configmap(n) for n in names}) == len(names)
    assert len({label_value(n) for n in names}) == len(names)
    assert all(len(label_value(n)) <= LABEL_VALUE_MAX for n in names)
    # kubectl finds each policy's ConfigMap by its label, as the README says.
    for name in names:
        found = cluster.plane.kubectl("get", "configmaps", "-n", ns, "-l", f"sluice.dev/policy={label_value(name)}",
                                      "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
        assert found == [policy_configmap(name)]
    rejected = [(r.method, r.resource, r.status) for r in cluster.proxy.recorded() if r.status == 422]
    assert not rejected


@pytest.fixture
def paused_garbage_collector(cluster: ClusterHandle) -> Iterator[None]:
    process = cluster.plane.processes["kube-controller-manager"]
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


async def test_policy_deleted_and_recreated_before_collection_keeps_its_configmap(
    cluster: ClusterHandle, prom: PrometheusServer
) -> None:
    api, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_lag", 3000, {"policy": "again"})
    await prom.async_wait_for_value('sum(test_lag{policy="again"})', 3000)
    async with running_operator(cluster, prom.url):
        api.create_object(POLICIES, policy("again", ns))
        first = await api.wait_for_object("configmaps", "sluice-again", ns, timeout_s=15)
        old_uid = first["metadata"]["ownerReferences"][0]["uid"]
        process = cluster.plane.processes["kube-controller-manager"]
        os.kill(process.pid, signal.SIGSTOP)  # the garbage collector has not run yet
        try:
            api.delete_object(POLICIES, "again", ns)
            created = api.create_object(POLICIES, policy("again", ns))
            new_uid = created["metadata"]["uid"]
            adopted = await api.wait_for_object(
                "configmaps", "sluice-again", ns, timeout_s=15,
                predicate=lambda cm: cm["metadata"]["ownerReferences"][0]["uid"] == new_uid)
            assert zones(adopted) == {"high": "yellow", "medium": "red", "low": "red"}
        finally:
            os.kill(process.pid, signal.SIGCONT)
        # The collector now runs; it must leave the ConfigMap alone (its owner exists).
        await asyncio.sleep(4)
        kept = api.get_object("configmaps", "sluice-again", ns)
        assert kept is not None and [r["uid"] for r in kept["metadata"]["ownerReferences"]] == [new_uid] != [old_uid]
        obj = api.get_object(POLICIES, "again", ns)
        assert (condition(obj, "Conflict") or {}).get("status") != "True"
        assert (condition(obj, "Ready") or {}).get("status") == "True"
    # And deleting it for good lets the real collector remove the ConfigMap.
    api.delete_object(POLICIES, "again", ns)
    await api.wait_for_deletion("configmaps", "sluice-again", ns, timeout_s=30)


async def test_a_replaced_token_is_picked_up_without_a_restart(
    cluster: ClusterHandle, prom: PrometheusServer, tmp_path: Any
) -> None:
    api, ns, plane = cluster.api, cluster.namespace, cluster.plane
    # A token file of this test's own for the chart's ServiceAccount (RBAC binds the name).
    identity = plane.service_account_identity(OPERATOR_NAMESPACE, "sluice", directory=tmp_path / "sa")
    prom.exporter.set("test_lag", 100, {"policy": "rotated"})
    await prom.async_wait_for_value('sum(test_lag{policy="rotated"})', 100)
    env = {"SLUICE_LEASE_DURATION_SECONDS": "15"}  # the chart's default: 401s for a few seconds keep the Lease
    try:
        async with running_operator(cluster, prom.url, account=identity, env=env) as op:
            api.create_object(POLICIES, policy("rotated", ns))
            await api.wait_for(lambda: medium(api, ns, "rotated") == "green", timeout_s=15, what="green")
            # Recreating the ServiceAccount invalidates every token bound to it.
            recreate_service_account(plane, OPERATOR_NAMESPACE, "sluice")
            await api.wait_for(lambda: any(r.status == 401 for r in cluster.proxy.recorded()), timeout_s=15,
                               what="the operator's old token refused")
            prom.exporter.set("test_lag", 3000, {"policy": "rotated"})
            await prom.async_wait_for_value('sum(test_lag{policy="rotated"})', 3000)
            await asyncio.sleep(1.5)
            assert medium(api, ns, "rotated") == "green", "no write can pass with the refused token"
            # The kubelet writes a fresh token into the projected volume: the operator recovers by itself.
            plane.refresh_token(OPERATOR_NAMESPACE, "sluice", identity.token_file)
            await api.wait_for(lambda: medium(api, ns, "rotated") == "red", timeout_s=30,
                               what="the newest decision published after the rotation")
            # Kopf logged in again too: a policy created after the rotation is seen and published.
            prom.exporter.set("test_lag", 3000, {"policy": "after"})
            api.create_object(POLICIES, policy("after", ns))
            await api.wait_for_object("configmaps", "sluice-after", ns, timeout_s=30)
            assert op.runtime.health.leading and not op.task.done()
    finally:
        plane.refresh_token(OPERATOR_NAMESPACE, "sluice", cluster.identity.token_file)  # for later tests
    statuses = [r.status for r in cluster.proxy.recorded()]
    assert 401 in statuses and statuses[-1] < 400


def medium(api: Any, namespace: str, policy_name: str) -> str | None:
    return (zones(api.get_object("configmaps", f"sluice-{policy_name}", namespace)) or {}).get("medium")


def recreate_service_account(plane: ControlPlane, namespace: str, name: str) -> None:
    plane.kubectl("delete", "serviceaccount", name, "-n", namespace, "--wait=true")
    plane.apply([{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}])


@pytest.fixture(scope="module")
def namespaced_identity(control_plane: ControlPlane) -> tuple[ServiceAccountIdentity, list[str]]:
    """The chart rendered with watchNamespaces (+ circuitNamespaces) under a release of its own."""
    watched = ["ns-watched-a", "ns-watched-b"]
    extra = ["ns-circuit-only"]
    identity = control_plane.install_operator_identity(
        {"fullnameOverride": "sluice-ns", "watchNamespaces": watched, "circuitNamespaces": extra})
    return identity, [*watched, *extra]


async def test_watch_namespaces_mode_under_namespaced_rbac(
    cluster: ClusterHandle, prom: PrometheusServer, namespaced_identity: tuple[ServiceAccountIdentity, list[str]]
) -> None:
    api = cluster.api
    identity, (watched_a, watched_b, circuit_only) = namespaced_identity
    outside = cluster.namespace  # selected by the circuit, but not granted to this operator
    prom.exporter.set("test_errors", 0.0, {"circuit": "scoped"})
    prom.exporter.set("test_lag", 10, {"policy": "scoped"})
    env = {"SLUICE_WATCH_NAMESPACES": f"{watched_a},{watched_b}", "SLUICE_CIRCUIT_NAMESPACES": circuit_only}
    spec = {"namespaces": [watched_a, circuit_only, outside]}
    try:
        async with running_operator(cluster, prom.url, account=identity, env=env,
                                    namespaces=(watched_a, watched_b)):
            api.create_object(CIRCUITS, circuit("scoped", spec=spec))
            api.create_object(POLICIES, policy("scoped", watched_a, spec={"circuitBreakerRef": "scoped"}))
            for namespace in (watched_a, circuit_only):
                await api.wait_for_object("configmaps", circuit_configmap("scoped"), namespace, timeout_s=20)
            obj = await api.wait_for_object(
                CIRCUITS, "scoped", timeout_s=15,
                predicate=lambda o: (condition(o, "Published") or {}).get("reason") == "NamespaceNotWatched")
            assert outside in condition(obj, "Published")["message"]  # type: ignore[index]
            assert obj["status"]["state"] == "closed"
            prom.exporter.set("test_errors", 0.9, {"circuit": "scoped"})
            await api.wait_for(lambda: json.loads((api.get_object("configmaps", "sluice-scoped", watched_a) or {
                "data": {"decision.json": "{}"}})["data"]["decision.json"]).get("circuit", {}).get("state") == "open",
                timeout_s=20, what="the policy embeds the open circuit")
            # Un-list a namespace: its ConfigMap goes, by name, with no cluster-wide list.
            api.patch_object(CIRCUITS, "scoped", {"spec": {"namespaces": [watched_a]}})
            await api.wait_for_deletion("configmaps", circuit_configmap("scoped"), circuit_only, timeout_s=20)
            api.delete_object(CIRCUITS, "scoped")
            await api.wait_for_deletion("configmaps", circuit_configmap("scoped"), watched_a, timeout_s=30)
        assert api.get_object("configmaps", circuit_configmap("scoped"), outside) is None
        forbidden = [(r.verb, r.resource, r.namespace) for r in cluster.proxy.recorded() if r.denied]
        assert not forbidden, forbidden
    finally:
        for namespace in (watched_a, watched_b):
            for item in api.list_objects(POLICIES, namespace):
                api.delete_object(POLICIES, item["metadata"]["name"], namespace)
