"""The Kubernetes API emulator behaves like kube-apiserver where Kopf and Sluice depend on it.

Every test talks real HTTP over loopback with a real client (aiohttp, the sync `kubernetes` client,
or Kopf itself); the direct Python hooks are only used to arrange state or to observe it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf
import pytest
import pytest_asyncio
from kubernetes import client as kubernetes_client
from kubernetes import watch as kubernetes_watch

from tests.support import k8s_fixtures
from tests.support.k8s_emulator import EmulatorHandle, KubeEmulator, make_sync_api_client, running_emulator
from tests.support.k8s_emulator_errors import ApiError
from tests.support.k8s_emulator_kopf import quick_settings, running_operator

# The shared fixtures (the lead registers them in tests/conftest.py as well; either way works).
k8s_emulator = k8s_fixtures.k8s_emulator
k8s_api_client = k8s_fixtures.k8s_api_client

# The sync client's models are Optional everywhere; these tests read what they just wrote.
k8s: Any = kubernetes_client
k8s_watch: Any = kubernetes_watch

CM = "/api/v1/namespaces/{ns}/configmaps"
BPP = "/apis/sluice.dev/v1alpha1/namespaces/{ns}/backpressurepolicies"
CB = "/apis/sluice.dev/v1alpha1/circuitbreakers"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"

JSON = dict[str, Any]


@pytest_asyncio.fixture
async def http(k8s_emulator: EmulatorHandle) -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(base_url=k8s_emulator.base_url, timeout=timeout) as session:
        yield session


@pytest.fixture
def emu(k8s_emulator: EmulatorHandle) -> KubeEmulator:
    return k8s_emulator.emulator


async def call(http: aiohttp.ClientSession, method: str, path: str, body: Any = None, *,
               content_type: str = "application/json", params: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body)
    headers = {"Content-Type": content_type} if body is not None else {}
    async with http.request(method, path, data=data, headers=headers, params=params) as resp:
        return resp.status, await resp.json(content_type=None)


async def collect(http: aiohttp.ClientSession, path: str, params: dict[str, str], count: int,
                  timeout_s: float = 5.0) -> list[JSON]:
    """Read `count` watch events (or until the server ends the stream)."""
    events: list[JSON] = []
    async with asyncio.timeout(timeout_s), http.get(path, params=params) as resp:
        assert resp.status == 200
        async for line in resp.content:
            if line.strip():
                events.append(json.loads(line))
                if len(events) >= count:
                    break
    return events


def cm(name: str, labels: dict[str, str] | None = None, **data: str) -> JSON:
    meta: JSON = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


# ---------------------------------------------------------------------------------------- discovery


async def test_discovery_advertises_every_resource_kopf_and_sluice_use(http: aiohttp.ClientSession) -> None:
    status, api = await call(http, "GET", "/api")
    assert status == 200 and api["versions"] == ["v1"]

    _, core = await call(http, "GET", "/api/v1")
    assert core["groupVersion"] == "v1"
    core_names = {r["name"] for r in core["resources"]}
    assert {"namespaces", "namespaces/status", "configmaps", "events", "secrets"} <= core_names

    _, groups = await call(http, "GET", "/apis")
    group_names = {g["name"] for g in groups["groups"]}
    assert {"sluice.dev", "events.k8s.io", "coordination.k8s.io", "apiextensions.k8s.io"} <= group_names

    _, sluice = await call(http, "GET", "/apis/sluice.dev/v1alpha1")
    by_name = {r["name"]: r for r in sluice["resources"]}
    bpp, cb = by_name["backpressurepolicies"], by_name["circuitbreakers"]
    assert (bpp["kind"], bpp["namespaced"], bpp["shortNames"]) == ("BackpressurePolicy", True, ["bpp"])
    assert (cb["kind"], cb["namespaced"], cb["shortNames"]) == ("CircuitBreaker", False, ["cb"])
    assert {"backpressurepolicies/status", "circuitbreakers/status"} <= set(by_name)
    assert {"list", "watch", "patch", "create", "delete", "get", "update"} <= set(bpp["verbs"])

    for path, plural in [("/apis/events.k8s.io/v1", "events"), ("/apis/coordination.k8s.io/v1", "leases"),
                         ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions")]:
        _, listing = await call(http, "GET", path)
        assert plural in {r["name"] for r in listing["resources"]}

    status, missing = await call(http, "GET", "/apis/sluice.dev/v1alpha1/nonexistent")
    assert status == 404 and missing["kind"] == "Status" and missing["reason"] == "NotFound"


async def test_posting_a_crd_registers_its_resource(emu: KubeEmulator, http: aiohttp.ClientSession) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "subresources": {"status": {}}}]},
    }
    status, created = await call(http, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 201
    assert {c["type"] for c in created["status"]["conditions"]} == {"NamesAccepted", "Established"}
    _, listing = await call(http, "GET", "/apis/example.com/v1")
    assert {"widgets", "widgets/status"} <= {r["name"] for r in listing["resources"]}
    status, _ = await call(http, "POST", "/apis/example.com/v1/namespaces/default/widgets",
                           {"metadata": {"name": "w"}, "spec": {"size": 1}})
    assert status == 201

    await call(http, "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
    status, _ = await call(http, "GET", "/apis/example.com/v1/namespaces/default/widgets")
    assert status == 404


# ---------------------------------------------------------------------------------------- CRUD


async def test_configmap_crud_namespaced_and_cluster_wide(http: aiohttp.ClientSession) -> None:
    status, created = await call(http, "POST", CM.format(ns="default"), cm("a", x="1"))
    assert status == 201
    meta = created["metadata"]
    assert meta["namespace"] == "default" and meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert "generation" not in meta  # ConfigMaps have no generation, like in real clusters

    await call(http, "POST", "/api/v1/namespaces", {"metadata": {"name": "other"}})
    await call(http, "POST", CM.format(ns="other"), cm("b", y="2"))

    _, one_ns = await call(http, "GET", CM.format(ns="default"))
    assert one_ns["kind"] == "ConfigMapList" and [i["metadata"]["name"] for i in one_ns["items"]] == ["a"]
    _, everywhere = await call(http, "GET", "/api/v1/configmaps")
    assert {(i["metadata"]["namespace"], i["metadata"]["name"]) for i in everywhere["items"]} == {
        ("default", "a"), ("other", "b")}
    assert int(everywhere["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])

    status, fetched = await call(http, "GET", CM.format(ns="default") + "/a")
    assert status == 200 and fetched["data"] == {"x": "1"}

    fetched["data"] = {"x": "replaced"}
    status, replaced = await call(http, "PUT", CM.format(ns="default") + "/a", fetched)
    assert status == 200 and replaced["data"] == {"x": "replaced"}

    status, merged = await call(http, "PATCH", CM.format(ns="default") + "/a",
                                {"data": {"y": "2", "x": None}}, content_type=MERGE)
    assert status == 200 and merged["data"] == {"y": "2"}

    status, strategic = await call(http, "PATCH", CM.format(ns="default") + "/a",
                                   {"data": {"z": "3"}}, content_type=STRATEGIC)
    assert status == 200 and strategic["data"] == {"y": "2", "z": "3"}

    status, jsonpatched = await call(http, "PATCH", CM.format(ns="default") + "/a",
                                     [{"op": "add", "path": "/data/w", "value": "4"},
                                      {"op": "remove", "path": "/data/y"}], content_type=JSON_PATCH)
    assert status == 200 and jsonpatched["data"] == {"z": "3", "w": "4"}

    status, _ = await call(http, "DELETE", CM.format(ns="default") + "/a")
    assert status == 200
    status, gone = await call(http, "GET", CM.format(ns="default") + "/a")
    assert status == 404 and gone["reason"] == "NotFound" and gone["message"] == 'configmaps "a" not found'


async def test_list_pagination_with_limit_and_continue(http: aiohttp.ClientSession) -> None:
    for name in ("c1", "c2", "c3"):
        await call(http, "POST", CM.format(ns="default"), cm(name))
    _, page1 = await call(http, "GET", CM.format(ns="default"), params={"limit": "2"})
    assert [i["metadata"]["name"] for i in page1["items"]] == ["c1", "c2"]
    assert page1["metadata"]["remainingItemCount"] == 1
    _, page2 = await call(http, "GET", CM.format(ns="default"),
                          params={"limit": "2", "continue": page1["metadata"]["continue"]})
    assert [i["metadata"]["name"] for i in page2["items"]] == ["c3"]
    assert not page2["metadata"].get("continue")


# ---------------------------------------------------------------------------------------- concurrency


async def test_resource_versions_increase_and_stale_writes_conflict(http: aiohttp.ClientSession) -> None:
    _, first = await call(http, "POST", CM.format(ns="default"), cm("rv", v="1"))
    rv1 = int(first["metadata"]["resourceVersion"])
    _, second = await call(http, "PATCH", CM.format(ns="default") + "/rv", {"data": {"v": "2"}},
                           content_type=MERGE)
    rv2 = int(second["metadata"]["resourceVersion"])
    assert rv2 > rv1

    stale = dict(first, data={"v": "stale"})
    status, conflict = await call(http, "PUT", CM.format(ns="default") + "/rv", stale)
    assert status == 409
    assert conflict["kind"] == "Status" and conflict["reason"] == "Conflict" and conflict["code"] == 409
    assert "the object has been modified" in conflict["message"]
    assert conflict["details"] == {"name": "rv", "kind": "configmaps"}

    status, conflict = await call(http, "PATCH", CM.format(ns="default") + "/rv",
                                  {"metadata": {"resourceVersion": str(rv1)}, "data": {"v": "x"}},
                                  content_type=MERGE)
    assert status == 409 and conflict["reason"] == "Conflict"

    status, failed_test = await call(http, "PATCH", CM.format(ns="default") + "/rv",
                                     [{"op": "test", "path": "/metadata/resourceVersion", "value": str(rv1)},
                                      {"op": "replace", "path": "/data/v", "value": "x"}],
                                     content_type=JSON_PATCH)
    assert status == 422 and failed_test["reason"] == "Invalid"

    status, exists = await call(http, "POST", CM.format(ns="default"), cm("rv"))
    assert status == 409 and exists["reason"] == "AlreadyExists"

    current = dict(second, data={"v": "3"})
    status, ok = await call(http, "PUT", CM.format(ns="default") + "/rv", current)
    assert status == 200 and int(ok["metadata"]["resourceVersion"]) > rv2

    status, same = await call(http, "PATCH", CM.format(ns="default") + "/rv", {"data": {"v": "3"}},
                              content_type=MERGE)
    assert status == 200 and same["metadata"]["resourceVersion"] == ok["metadata"]["resourceVersion"]


async def test_leases_conflict_on_stale_resource_version_with_the_sync_client(k8s_api_client: Any) -> None:
    def scenario() -> int:
        leases = k8s.CoordinationV1Api(k8s_api_client)
        lease = leases.create_namespaced_lease("default", {
            "metadata": {"name": "sluice-leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})
        lease.spec.holder_identity = "b"
        leases.replace_namespaced_lease("sluice-leader", "default", lease)  # its RV was current: accepted
        lease.spec.holder_identity = "c"  # same (now stale) RV: a competing leader lost the race
        try:
            leases.replace_namespaced_lease("sluice-leader", "default", lease)
        except k8s.ApiException as exc:
            assert json.loads(exc.body)["reason"] == "Conflict"
            assert leases.read_namespaced_lease("sluice-leader", "default").spec.holder_identity == "b"
            return int(exc.status)
        raise AssertionError("a stale lease update was accepted")

    assert await asyncio.to_thread(scenario) == 409


# ---------------------------------------------------------------------------------------- CR semantics


async def test_status_subresource_and_generation(http: aiohttp.ClientSession) -> None:
    body = {"metadata": {"name": "p"}, "spec": {"topic": "orders"}, "status": {"zone": "ignored"}}
    status, created = await call(http, "POST", BPP.format(ns="default"), body)
    assert status == 201
    assert created["metadata"]["generation"] == 1 and "status" not in created
    assert created["kind"] == "BackpressurePolicy" and created["apiVersion"] == "sluice.dev/v1alpha1"
    url = BPP.format(ns="default") + "/p"

    _, with_status = await call(http, "PATCH", url + "/status", {"status": {"zone": "green"}, "spec": {"x": 1}},
                                content_type=MERGE)
    assert with_status["status"] == {"zone": "green"}
    assert with_status["spec"] == {"topic": "orders"} and with_status["metadata"]["generation"] == 1

    _, main = await call(http, "PATCH", url, {"spec": {"topic": "payments"}, "status": {"zone": "red"}},
                         content_type=MERGE)
    assert main["spec"] == {"topic": "payments"} and main["status"] == {"zone": "green"}
    assert main["metadata"]["generation"] == 2

    _, annotated = await call(http, "PATCH", url, {"metadata": {"annotations": {"a": "b"}}}, content_type=MERGE)
    assert annotated["metadata"]["generation"] == 2

    annotated["status"] = {"zone": "yellow"}
    annotated["spec"] = {"topic": "ignored-by-status-put"}
    status, put_status = await call(http, "PUT", url + "/status", annotated)
    assert status == 200 and put_status["status"] == {"zone": "yellow"}
    assert put_status["spec"] == {"topic": "payments"} and put_status["metadata"]["generation"] == 2


async def test_cluster_scoped_circuit_breaker(http: aiohttp.ClientSession) -> None:
    status, created = await call(http, "POST", CB, {"metadata": {"name": "kafka", "namespace": "x"},
                                                    "spec": {"threshold": 5}})
    assert status == 201 and "namespace" not in created["metadata"]
    status, _ = await call(http, "GET", CB + "/kafka")
    assert status == 200
    status, _ = await call(http, "GET", "/apis/sluice.dev/v1alpha1/namespaces/default/circuitbreakers/kafka")
    assert status == 404
    _, patched = await call(http, "PATCH", CB + "/kafka/status", {"status": {"state": "open"}}, content_type=MERGE)
    assert patched["status"] == {"state": "open"}


# ---------------------------------------------------------------------------------------- watches


async def test_watch_resumes_after_a_resource_version_and_filters(emu: KubeEmulator,
                                                                  http: aiohttp.ClientSession) -> None:
    _, before = await call(http, "POST", CM.format(ns="default"), cm("old", {"app": "sluice"}))
    since = before["metadata"]["resourceVersion"]
    await call(http, "POST", CM.format(ns="default"), cm("new", {"app": "sluice"}))
    await call(http, "POST", CM.format(ns="default"), cm("other", {"app": "else"}))
    await call(http, "PATCH", CM.format(ns="default") + "/old", {"data": {"k": "v"}}, content_type=MERGE)

    events = await collect(http, CM.format(ns="default"), {"watch": "true", "resourceVersion": since}, 3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "new"), ("ADDED", "other"), ("MODIFIED", "old")]
    assert all(int(e["object"]["metadata"]["resourceVersion"]) > int(since) for e in events)

    labelled = await collect(http, "/api/v1/configmaps",
                             {"watch": "1", "resourceVersion": since, "labelSelector": "app=sluice"}, 2)
    assert [e["object"]["metadata"]["name"] for e in labelled] == ["new", "old"]

    named = await collect(http, CM.format(ns="default"),
                          {"watch": "true", "fieldSelector": "metadata.name=other"}, 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in named] == [("ADDED", "other")]

    # A live stream: an object leaving the selector is DELETED for this stream, entering it is ADDED.
    watching = asyncio.create_task(collect(http, CM.format(ns="default"),
                                           {"watch": "true", "labelSelector": "app=sluice",
                                            "resourceVersion": str(emu.resource_version)}, 2))
    await emu.wait_for(lambda: emu.open_watches >= 1)
    await call(http, "PATCH", CM.format(ns="default") + "/new", {"metadata": {"labels": {"app": "gone"}}},
               content_type=MERGE)
    await call(http, "PATCH", CM.format(ns="default") + "/other", {"metadata": {"labels": {"app": "sluice"}}},
               content_type=MERGE)
    live = await watching
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in live] == [("DELETED", "new"), ("ADDED", "other")]


async def test_watch_timeout_seconds_ends_the_stream(emu: KubeEmulator, http: aiohttp.ClientSession) -> None:
    events = await collect(http, CM.format(ns="default"),
                           {"watch": "true", "resourceVersion": str(emu.resource_version), "timeoutSeconds": "1"},
                           count=10, timeout_s=5)
    assert events == []
    assert emu.open_watches == 0


async def test_watch_from_a_compacted_resource_version_is_410_gone(emu: KubeEmulator,
                                                                   http: aiohttp.ClientSession) -> None:
    _, obj = await call(http, "POST", CM.format(ns="default"), cm("x"))
    await call(http, "PATCH", CM.format(ns="default") + "/x", {"data": {"a": "b"}}, content_type=MERGE)
    emu.compact_history()
    events = await collect(http, CM.format(ns="default"),
                           {"watch": "true", "resourceVersion": obj["metadata"]["resourceVersion"]}, 2)
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


async def test_watch_bookmarks(emu: KubeEmulator, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", CM.format(ns="default"), cm("bm"))
    initial = await collect(http, CM.format(ns="default"),
                            {"watch": "true", "sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan",
                             "allowWatchBookmarks": "true"}, 2)
    assert [e["type"] for e in initial] == ["ADDED", "BOOKMARK"]
    assert initial[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}

    emu.bookmark_interval_s = 0.05
    idle = await collect(http, CM.format(ns="default"),
                         {"watch": "true", "allowWatchBookmarks": "true",
                          "resourceVersion": str(emu.resource_version)}, 1)
    assert idle[0]["type"] == "BOOKMARK"
    assert idle[0]["object"]["metadata"]["resourceVersion"] == str(emu.resource_version)


async def test_sync_client_lists_and_watches_configmaps(emu: KubeEmulator, k8s_api_client: Any) -> None:
    emu.create_object("configmaps", cm("decision", {"app": "sluice"}, v="1"), "default")

    def watch_two_events(since: str) -> list[tuple[str, str, dict[str, str]]]:
        core = k8s.CoreV1Api(k8s_api_client)
        seen: list[tuple[str, str, dict[str, str]]] = []
        stream = k8s_watch.Watch()
        for event in stream.stream(core.list_namespaced_config_map, "default", resource_version=since,
                                   field_selector="metadata.name=decision", timeout_seconds=5):
            seen.append((event["type"], event["object"].metadata.name, event["object"].data))
            if len(seen) == 2:
                stream.stop()
        return seen

    def list_rv() -> tuple[list[str], str]:
        listing = k8s.CoreV1Api(k8s_api_client).list_namespaced_config_map("default", label_selector="app=sluice")
        return [i.metadata.name for i in listing.items], listing.metadata.resource_version

    names, since = await asyncio.to_thread(list_rv)
    assert names == ["decision"]
    watching = asyncio.ensure_future(asyncio.to_thread(watch_two_events, since))
    await emu.wait_for(lambda: emu.open_watches >= 1, timeout_s=5)
    emu.patch_object("configmaps", "decision", {"data": {"v": "2"}}, "default")
    emu.create_object("configmaps", cm("unrelated"), "default")
    emu.delete_object("configmaps", "decision", "default")
    assert await watching == [("MODIFIED", "decision", {"v": "2"}), ("DELETED", "decision", {"v": "2"})]
    watch_request = emu.recorded(method="GET", resource="configmaps")[-1]
    assert watch_request.is_watch and watch_request.query["fieldSelector"] == "metadata.name=decision"


# ---------------------------------------------------------------------------------------- selectors


async def test_label_selectors(http: aiohttp.ClientSession) -> None:
    for name, labels in [("a", {"tier": "high", "team": "x"}), ("b", {"tier": "low"}), ("c", {"team": "y"}),
                         ("d", {})]:
        await call(http, "POST", CM.format(ns="default"), cm(name, labels))

    async def names(selector: str) -> list[str]:
        status, body = await call(http, "GET", CM.format(ns="default"), params={"labelSelector": selector})
        assert status == 200, body
        return [i["metadata"]["name"] for i in body["items"]]

    assert await names("tier=high") == ["a"]
    assert await names("tier==low") == ["b"]
    assert await names("tier!=high") == ["b", "c", "d"]
    assert await names("tier in (high, low)") == ["a", "b"]
    assert await names("tier notin (high)") == ["b", "c", "d"]
    assert await names("team") == ["a", "c"]
    assert await names("!team") == ["b", "d"]
    assert await names("team,tier in (high,low)") == ["a"]
    status, error = await call(http, "GET", CM.format(ns="default"), params={"labelSelector": "tier in"})
    assert status == 400 and error["reason"] == "BadRequest"
    status, error = await call(http, "GET", CM.format(ns="default"), params={"fieldSelector": "data.x=1"})
    assert status == 400 and "field label not supported" in error["message"]


# ---------------------------------------------------------------------------------------- namespaces


async def test_terminating_namespace_forbids_creates(emu: KubeEmulator, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", "/api/v1/namespaces", {"metadata": {"name": "doomed"}})
    await call(http, "POST", CM.format(ns="doomed"), cm("existing"))
    emu.terminate_namespace("doomed")

    _, ns = await call(http, "GET", "/api/v1/namespaces/doomed")
    assert ns["status"]["phase"] == "Terminating"
    status, forbidden = await call(http, "POST", CM.format(ns="doomed"), cm("fresh"))
    assert status == 403 and forbidden["reason"] == "Forbidden"
    assert "unable to create new content in namespace doomed because it is being terminated" in forbidden["message"]
    assert forbidden["details"]["causes"][0]["reason"] == "NamespaceTerminating"
    status, _ = await call(http, "PATCH", CM.format(ns="doomed") + "/existing", {"data": {"a": "b"}},
                           content_type=MERGE)
    assert status == 200  # updates of existing content are still allowed


async def test_deleting_a_namespace_removes_its_content_then_itself(emu: KubeEmulator,
                                                                    http: aiohttp.ClientSession) -> None:
    await call(http, "POST", "/api/v1/namespaces", {"metadata": {"name": "gone"}})
    await call(http, "POST", CM.format(ns="gone"), cm("plain"))
    await call(http, "POST", BPP.format(ns="gone"), {"metadata": {"name": "held", "finalizers": ["x/y"]}})

    status, ns = await call(http, "DELETE", "/api/v1/namespaces/gone")
    assert status == 200 and ns["status"]["phase"] == "Terminating"
    assert emu.get_object("configmaps", "plain", "gone") is None
    assert emu.get_object("bpp", "held", "gone")["metadata"]["deletionTimestamp"]  # type: ignore[index]
    assert emu.get_object("namespaces", "gone") is not None  # waits for the finalizer

    await call(http, "PATCH", BPP.format(ns="gone") + "/held", {"metadata": {"finalizers": None}},
               content_type=MERGE)
    status, _ = await call(http, "GET", "/api/v1/namespaces/gone")
    assert status == 404


async def test_require_namespaces_rejects_creates_in_missing_namespaces() -> None:
    async with running_emulator(require_namespaces=True) as (emu, base_url):
        with pytest.raises(ApiError) as caught:
            emu.create_object("configmaps", cm("x"), "nowhere")
        assert caught.value.code == 404 and caught.value.message == 'namespaces "nowhere" not found'
        async with aiohttp.ClientSession(base_url=base_url) as session:
            status, _ = await call(session, "POST", CM.format(ns="default"), cm("x"))
        assert status == 201


# ---------------------------------------------------------------------------------------- deletion


async def test_finalizers_defer_deletion_until_emptied(emu: KubeEmulator, http: aiohttp.ClientSession) -> None:
    _, created = await call(http, "POST", BPP.format(ns="default"),
                            {"metadata": {"name": "f", "finalizers": ["sluice.dev/cleanup"]}, "spec": {}})
    url = BPP.format(ns="default") + "/f"
    watching = asyncio.create_task(collect(http, BPP.format(ns="default"),
                                           {"watch": "true", "resourceVersion": created["metadata"]["resourceVersion"]},
                                           2))
    await emu.wait_for(lambda: emu.open_watches >= 1)

    status, deleting = await call(http, "DELETE", url)
    assert status == 200 and deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["generation"] == 2
    status, still = await call(http, "GET", url)
    assert status == 200 and still["metadata"]["finalizers"] == ["sluice.dev/cleanup"]

    status, rejected = await call(http, "PATCH", url, {"metadata": {"finalizers": ["sluice.dev/cleanup", "new/one"]}},
                                  content_type=MERGE)
    assert status == 422 and "no new finalizers" in rejected["message"]

    status, _ = await call(http, "PATCH", url,
                           [{"op": "test", "path": "/metadata/resourceVersion",
                             "value": still["metadata"]["resourceVersion"]},
                            {"op": "remove", "path": "/metadata/finalizers/0"}], content_type=JSON_PATCH)
    assert status == 200
    status, _ = await call(http, "GET", url)
    assert status == 404
    events = await watching
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]


async def test_owner_deletion_garbage_collects_dependents(emu: KubeEmulator, http: aiohttp.ClientSession) -> None:
    _, owner = await call(http, "POST", CB, {"metadata": {"name": "breaker"}, "spec": {}})
    _, other_owner = await call(http, "POST", BPP.format(ns="default"), {"metadata": {"name": "p"}, "spec": {}})

    def ref(obj: JSON) -> JSON:
        return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
                "uid": obj["metadata"]["uid"], "controller": True}

    await call(http, "POST", "/api/v1/namespaces", {"metadata": {"name": "team-b"}})
    only = cm("circuit")
    only["metadata"]["ownerReferences"] = [ref(owner)]
    await call(http, "POST", CM.format(ns="default"), only)
    await call(http, "POST", CM.format(ns="team-b"), only)
    shared = cm("shared")
    shared["metadata"]["ownerReferences"] = [ref(owner), dict(ref(other_owner), controller=False)]
    await call(http, "POST", CM.format(ns="default"), shared)

    status, _ = await call(http, "DELETE", CB + "/breaker")
    assert status == 200
    assert emu.get_object("configmaps", "circuit", "default") is None
    assert emu.get_object("configmaps", "circuit", "team-b") is None
    survivor = emu.get_object("configmaps", "shared", "default")
    assert survivor is not None
    assert [r["name"] for r in survivor["metadata"]["ownerReferences"]] == ["p"]


# ---------------------------------------------------------------------------------------- events


async def test_events_are_stored_and_listable(emu: KubeEmulator, http: aiohttp.ClientSession) -> None:
    event = {"metadata": {"generateName": "sluice-", "namespace": "default"}, "type": "Normal",
             "reason": "ZoneChanged", "message": "green -> yellow",
             "involvedObject": {"kind": "BackpressurePolicy", "name": "p", "namespace": "default"}}
    status, posted = await call(http, "POST", "/api/v1/namespaces/default/events", event)
    assert status == 201 and posted["metadata"]["name"].startswith("sluice-")
    assert len(posted["metadata"]["name"]) == len("sluice-") + 5
    _, listed = await call(http, "GET", "/api/v1/namespaces/default/events",
                           params={"fieldSelector": "involvedObject.name=p,reason=ZoneChanged"})
    assert [e["message"] for e in listed["items"]] == ["green -> yellow"]
    assert [e["reason"] for e in emu.events("default", involved_name="p")] == ["ZoneChanged"]

    new_style = {"metadata": {"name": "e1"}, "reason": "Tripped", "note": "open",
                 "regarding": {"kind": "CircuitBreaker", "name": "kafka"}, "action": "Trip",
                 "reportingController": "sluice.dev/operator", "reportingInstance": "x"}
    status, _ = await call(http, "POST", "/apis/events.k8s.io/v1/namespaces/default/events", new_style)
    assert status == 201
    _, listed = await call(http, "GET", "/apis/events.k8s.io/v1/events")
    assert [e["metadata"]["name"] for e in listed["items"]] == ["e1"]


# ---------------------------------------------------------------------------------------- hooks


async def test_request_log_counts_writes(emu: KubeEmulator, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", CM.format(ns="default"), cm("w"))
    await call(http, "PATCH", CM.format(ns="default") + "/w", {"data": {"a": "1"}}, content_type=MERGE)
    await call(http, "GET", CM.format(ns="default") + "/w")
    await call(http, "PATCH", BPP.format(ns="default") + "/missing", {"spec": {}}, content_type=MERGE)

    assert [r.method for r in emu.writes(resource="configmaps")] == ["POST", "PATCH"]
    assert len(emu.writes(resource="cm", method="PATCH", name="w")) == 1
    assert [r.status for r in emu.writes(resource="bpp")] == [404]
    patch = emu.writes(resource="configmaps", method="PATCH")[0]
    assert patch.body == {"data": {"a": "1"}} and patch.content_type == MERGE and patch.namespace == "default"
    assert [r.method for r in emu.recorded(resource="configmaps")] == ["POST", "PATCH", "GET"]


async def test_fault_injection(emu: KubeEmulator, http: aiohttp.ClientSession) -> None:
    await call(http, "POST", CM.format(ns="default"), cm("f", v="0"))
    conflict = emu.inject_fault(409, resource="configmaps", method="PATCH")
    status, body = await call(http, "PATCH", CM.format(ns="default") + "/f", {"data": {"v": "1"}},
                              content_type=MERGE)
    assert status == 409 and body["reason"] == "Conflict"
    assert emu.get_object("configmaps", "f", "default")["data"] == {"v": "0"}  # type: ignore[index]
    status, _ = await call(http, "PATCH", CM.format(ns="default") + "/f", {"data": {"v": "1"}}, content_type=MERGE)
    assert status == 200 and len(conflict.hits) == 1 and conflict.exhausted

    emu.inject_fault(500, times=2, predicate=lambda r: r.name == "f")
    emu.inject_fault(403, resource="secrets")
    statuses = [(await call(http, "PUT", CM.format(ns="default") + "/f", cm("f")))[0] for _ in range(3)]
    assert statuses == [500, 500, 200]
    status, body = await call(http, "POST", "/api/v1/namespaces/default/secrets", {"metadata": {"name": "s"}})
    assert status == 403 and body["reason"] == "Forbidden"

    emu.inject_fault(429, times=None, writes_only=False, resource="leases", retry_after=1)
    async with http.get("/apis/coordination.k8s.io/v1/namespaces/default/leases") as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
    emu.clear_faults()
    status, _ = await call(http, "GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases")
    assert status == 200

    assert [r.status for r in emu.writes(resource="configmaps", include_faulted=True)] == [
        201, 409, 200, 500, 500, 200]
    assert [r.status for r in emu.writes(resource="configmaps")] == [201, 200, 200]


async def test_direct_helpers_and_reset(emu: KubeEmulator, http: aiohttp.ClientSession) -> None:
    emu.put_object("bpp", {"metadata": {"name": "p", "namespace": "default"}, "spec": {"a": 1},
                          "status": {"zone": "red"}})
    status, fetched = await call(http, "GET", BPP.format(ns="default") + "/p")
    assert status == 200 and fetched["status"] == {"zone": "red"}  # put_object may set status directly
    assert emu.objects["sluice.dev/v1alpha1/backpressurepolicies", "default", "p"] >= {"status": {"zone": "red"}}

    emu.patch_object("bpp", "p", {"status": {"zone": "green"}}, "default", subresource="status")
    assert emu.get_object("BackpressurePolicy", "p", "default")["status"] == {"zone": "green"}  # type: ignore[index]
    assert [o["metadata"]["name"] for o in emu.list_objects("namespaces")] == ["default", "kube-system"]

    rv = emu.resource_version
    emu.reset()
    assert emu.get_object("bpp", "p", "default") is None and emu.request_log == []
    assert emu.resource_version >= rv  # resourceVersions never go back, even across a reset
    status, _ = await call(http, "GET", "/api/v1/namespaces/default")
    assert status == 200


async def test_sync_api_client_helper_talks_to_the_emulator(k8s_emulator: EmulatorHandle) -> None:
    def read_namespaces() -> list[str]:
        api = make_sync_api_client(k8s_emulator.base_url)
        try:
            return [ns.metadata.name for ns in k8s.CoreV1Api(api).list_namespace().items]
        finally:
            api.close()

    assert await asyncio.to_thread(read_namespaces) == ["default", "kube-system"]


# ---------------------------------------------------------------------------------------- real Kopf


@pytest.mark.parametrize("initial_streaming", [False, True], ids=["list-then-watch", "initial-events"])
async def test_real_kopf_operator_handles_a_policy(emu: KubeEmulator, k8s_emulator: EmulatorHandle,
                                                   initial_streaming: bool) -> None:
    registry = kopf.OperatorRegistry()
    settings = quick_settings()
    settings.watching.initial_streaming = initial_streaming

    @kopf.on.create("sluice.dev", "v1alpha1", "backpressurepolicies", registry=registry)
    async def created(spec: kopf.Spec, patch: kopf.Patch, body: kopf.Body, **_: Any) -> None:
        patch.status["observedTopic"] = spec.get("topic")
        kopf.info(body, reason="Admitted", message="policy admitted")

    @kopf.on.delete("sluice.dev", "v1alpha1", "backpressurepolicies", registry=registry)
    async def deleted(name: str, **_: Any) -> None:
        emu.create_object("configmaps", cm(f"deleted-{name}"), "team-a")

    emu.create_namespace("team-a")
    async with running_operator(registry, k8s_emulator.base_url, settings=settings) as task:
        emu.create_object("bpp", {"metadata": {"name": "p1"}, "spec": {"topic": "orders"}}, "team-a")
        handled = await emu.wait_for_object(
            "bpp", "p1", "team-a", timeout_s=10,
            predicate=lambda o: (o.get("status") or {}).get("observedTopic") == "orders")
        assert "kopf.zalando.org/KopfFinalizerMarker" in handled["metadata"]["finalizers"]
        assert handled["metadata"]["annotations"]["kopf.zalando.org/last-handled-configuration"]
        events = await emu.wait_for(lambda: emu.events("team-a", involved_name="p1", reason="Admitted"),
                                    timeout_s=10)
        assert events[0]["involvedObject"]["kind"] == "BackpressurePolicy"
        assert events[0]["message"] == "policy admitted" and events[0]["type"] == "Normal"

        # Deletion goes through Kopf's finalizer: JSON patch with a resourceVersion test, then gone.
        emu.delete_object("bpp", "p1", "team-a")
        await emu.wait_for_deletion("bpp", "p1", "team-a", timeout_s=10)
        assert emu.get_object("configmaps", "deleted-p1", "team-a") is not None
        assert emu.writes(resource="bpp", subresource="status")
        assert not task.done()
        bpp_reads = emu.recorded(method="GET", resource="bpp")
        if initial_streaming:  # no LIST: a watch with sendInitialEvents, ended by a BOOKMARK
            assert all(r.is_watch for r in bpp_reads) and bpp_reads[0].query["sendInitialEvents"] == "true"
        else:
            assert not bpp_reads[0].is_watch and bpp_reads[1].is_watch
    assert task.done() and not task.cancelled() and task.exception() is None


async def test_real_kopf_relists_after_410_gone(emu: KubeEmulator, k8s_emulator: EmulatorHandle) -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.create("sluice.dev", "v1alpha1", "backpressurepolicies", registry=registry)
    async def created(patch: kopf.Patch, **_: Any) -> None:
        patch.status["seen"] = True

    def seen(o: JSON) -> bool:
        return bool((o.get("status") or {}).get("seen"))

    async with running_operator(registry, k8s_emulator.base_url):
        emu.create_object("bpp", {"metadata": {"name": "before"}, "spec": {}}, "default")
        await emu.wait_for_object("bpp", "before", "default", predicate=seen, timeout_s=10)
        lists_before = [r for r in emu.recorded(method="GET", resource="bpp") if not r.is_watch]

        emu.create_object("configmaps", cm("unrelated"), "default")  # moves the RV past Kopf's position
        emu.compact_history()
        compacted_at, log_position = emu.resource_version, len(emu.request_log)
        emu.close_watches()  # Kopf reconnects from its last resourceVersion -> 410 -> relists

        await emu.wait_for(lambda: len([r for r in emu.recorded(method="GET", resource="bpp")
                                        if not r.is_watch]) > len(lists_before), timeout_s=10)
        resumed = [r for r in emu.request_log[log_position:] if r.is_watch and r.resource == "backpressurepolicies"]
        assert int(resumed[0].query["resourceVersion"]) < compacted_at  # i.e. it was answered with 410
        emu.create_object("bpp", {"metadata": {"name": "after"}, "spec": {}}, "default")
        await emu.wait_for_object("bpp", "after", "default", predicate=seen, timeout_s=10)


async def test_internal_emulator_errors_fail_the_block() -> None:
    with pytest.raises(ExceptionGroup) as caught:
        async with running_emulator() as (emu, base_url):
            emu["get /explode"] << (lambda: 1 / 0)
            async with aiohttp.ClientSession(base_url=base_url) as session, session.get("/explode") as resp:
                assert resp.status == 500
    assert caught.group_contains(ZeroDivisionError)
