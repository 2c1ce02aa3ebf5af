"""ConfigMapDecisions against the real kube-apiserver: list, watch, resume, relist on 410, backoff.

The producer authenticates as a ServiceAccount that holds only get/list/watch on its one ConfigMap
(`resourceNames`), which is what the README tells producers to grant. Dropped watches, 410 Gone and
500s come from the fault proxy in front of the real server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import kubernetes
import pytest

from sluice import ConfigMapDecisions, RetryPolicy, ThrottledProducer
from sluice.decision import to_json
from sluice.sources import SourceView
from tests.support.control_plane import ServiceAccountIdentity
from tests.support.fault_proxy import Fault, matcher
from tests.support.k8s_fixtures import ClusterHandle
from tests.support.sdk_helpers import make_circuit, make_decision

NAME = "sluice-orders"
FAST_RECONNECT = RetryPolicy(max_attempts=1_000_000, initial_delay=0.01, max_delay=0.05, deadline=float("inf"))


def configmap(namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": NAME, "namespace": namespace}, "data": data}


def producer_identity(cluster: ClusterHandle) -> ServiceAccountIdentity:
    """A producer ServiceAccount with get/list/watch on exactly one ConfigMap, as the README says."""
    ns = cluster.namespace
    cluster.plane.apply([
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "producer", "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "read-sluice-decision", "namespace": ns},
         "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [NAME],
                    "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "producer-reads-sluice-decision", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-sluice-decision"},
         "subjects": [{"kind": "ServiceAccount", "name": "producer", "namespace": ns}]},
    ])
    return cluster.plane.service_account_identity(ns, "producer")


def create(cluster: ClusterHandle, data: dict[str, str]) -> None:
    cluster.api.create_object("configmaps", configmap(cluster.namespace, data))


def patch(cluster: ClusterHandle, data: dict[str, str]) -> None:
    cluster.api.patch_object("configmaps", NAME, {"data": data}, cluster.namespace)


@pytest.fixture
def api_client(cluster: ClusterHandle) -> Iterator[Any]:
    """The producer's sync kubernetes client, through the proxy, with its bound token."""
    identity = producer_identity(cluster)
    config = kubernetes.client.Configuration()
    config.host = cluster.base_url
    config.api_key = {"authorization": identity.token}
    config.api_key_prefix = {"authorization": "Bearer"}
    client = kubernetes.client.ApiClient(config)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def source(cluster: ClusterHandle, api_client: Any) -> AsyncIterator[ConfigMapDecisions]:
    watcher = ConfigMapDecisions(
        cluster.namespace, [NAME], api_client=api_client, watch_timeout=30, request_timeout=5,
        reconnect=FAST_RECONNECT,
    )
    try:
        yield watcher
    finally:
        await asyncio.to_thread(watcher.close)


async def until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Await until ``check()`` is truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if result:
            return result
        if loop.time() > deadline:
            raise TimeoutError(f"not met within {timeout}s: {what}")
        await asyncio.sleep(0.01)


def epoch(view: SourceView) -> int | None:
    return view.decision.doc.epoch if view.decision is not None else None


async def test_sees_the_configmap_created_and_updated(cluster: ClusterHandle, source: ConfigMapDecisions) -> None:
    await until(lambda: source.lists >= 1 and cluster.proxy.open_watches >= 1, what="first list and watch")
    assert source.view().decision is None

    create(cluster, {"decision.json": to_json(make_decision(epoch=1))})
    await until(lambda: epoch(source.view()) == 1, what="created decision")

    cluster.api.patch_object("configmaps", NAME, {"data": {
        "decision.json": to_json(make_decision(epoch=2, shed=("low",))),
        "circuit.json": to_json(make_circuit("brokers", "half-open", probe_ratio=0.5)),
    }}, cluster.namespace)
    view = await until(lambda: (v := source.view()).circuits and epoch(v) == 2 and v, what="update")
    assert view.circuits[0].doc.state == "half-open"
    assert view.connected and view.errors == 0

    cluster.api.delete_object("configmaps", NAME, cluster.namespace)
    await until(lambda: source.view().circuits == (), what="deleted circuit")
    assert epoch(source.view()) == 2  # a deleted ConfigMap's decision just ages into staleness
    assert source.lists == 1


async def test_a_dropped_watch_resumes_from_the_last_resource_version(
    cluster: ClusterHandle, source: ConfigMapDecisions
) -> None:
    # The list (empty) and the watch come first, so the watch's ADDED event carries a newer
    # resourceVersion than the list did: the resume must use the event's, not the list's.
    await until(lambda: source.lists == 1 and cluster.proxy.open_watches >= 1, what="first list and watch")
    list_rv = source.resource_versions[NAME]
    created = cluster.api.create_object("configmaps", configmap(cluster.namespace, {
        "decision.json": to_json(make_decision(epoch=1))}))
    last_rv = created["metadata"]["resourceVersion"]
    assert last_rv != list_rv
    await until(lambda: epoch(source.view()) == 1 and source.resource_versions[NAME] == last_rv,
                what="the ADDED event read")
    before = len(cluster.proxy.recorded(method="GET", resource="configmaps"))

    assert cluster.proxy.drop_watches() == 1  # the connection drops mid-stream
    await until(lambda: len(cluster.proxy.recorded(method="GET", resource="configmaps")) > before, what="re-watch")
    resumed = cluster.proxy.recorded(method="GET", resource="configmaps")[before]  # the first request after the drop
    assert resumed.query.get("watch") == "true" and resumed.query.get("resourceVersion") == last_rv
    patch(cluster, {"decision.json": to_json(make_decision(epoch=2))})
    await until(lambda: epoch(source.view()) == 2, what="update after resume")
    assert source.lists == 1  # resumed, not relisted


async def test_410_gone_relists_and_catches_up(cluster: ClusterHandle, source: ConfigMapDecisions) -> None:
    create(cluster, {"decision.json": to_json(make_decision(epoch=1))})
    await until(lambda: epoch(source.view()) == 1 and cluster.proxy.open_watches >= 1)
    # The watch drops; while its resume is held up, the ConfigMap changes and history is compacted:
    # the resume gets 410 Gone, and only a relist can catch up.
    cluster.proxy.inject(Fault(gone_on_resume=True, delay=1.0, times=1,
                               match=matcher(resource="configmaps", watch=True)))
    cluster.proxy.drop_watches()
    cluster.api.patch_object("configmaps", NAME, {"data": {"decision.json": to_json(make_decision(epoch=7))}},
                             cluster.namespace)
    await until(lambda: epoch(source.view()) == 7, what="relisted state")
    assert source.lists == 2
    patch(cluster, {"decision.json": to_json(make_decision(epoch=8))})
    await until(lambda: epoch(source.view()) == 8, what="watching again after the relist")


async def test_api_errors_back_off_and_recover(cluster: ClusterHandle, api_client: Any) -> None:
    create(cluster, {"decision.json": to_json(make_decision(epoch=3))})
    fault = cluster.proxy.inject_fault(500, times=3, resource="configmaps", method="GET")
    source = ConfigMapDecisions(cluster.namespace, NAME, api_client=api_client, request_timeout=5,
                                reconnect=FAST_RECONNECT)
    try:
        await until(lambda: epoch(source.view()) == 3, what="decision after the faults")
        assert len(fault.hits) == 3 and source.reconnects == 3
        assert source.view().errors == 3 and source.view().connected
    finally:
        await asyncio.to_thread(source.close)


async def test_a_bad_document_in_the_configmap_keeps_the_last_good_one(
    cluster: ClusterHandle, source: ConfigMapDecisions
) -> None:
    create(cluster, {"decision.json": to_json(make_decision(epoch=1))})
    await until(lambda: epoch(source.view()) == 1)
    cluster.api.patch_object("configmaps", NAME, {"data": {"decision.json": "{not json"}}, cluster.namespace)
    await until(lambda: source.view().errors == 1, what="error counted")
    assert epoch(source.view()) == 1


async def test_a_producer_follows_the_watched_configmap(cluster: ClusterHandle, source: ConfigMapDecisions) -> None:
    create(cluster, {"decision.json": to_json(make_decision(epoch=1))})
    await until(lambda: epoch(source.view()) == 1)
    producer = ThrottledProducer({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 1000}, source)
    try:
        assert producer.health()["decision"]["status"] == "fresh"
        assert producer.health()["decision"]["source"] == f"configmap:{cluster.namespace}/{NAME}"
        cluster.api.patch_object("configmaps", NAME, {"data": {"circuit.json": to_json(make_circuit("b", "open"))}},
                         cluster.namespace)
        await until(lambda: producer.health()["circuit"]["state"] == "open", what="open circuit seen")
    finally:
        producer.close(0)
