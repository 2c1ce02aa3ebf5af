"""ConfigMapDecisions against the Kubernetes API emulator: list, watch, resume, relist on 410, backoff.

The emulator serves from the test's event loop while the source's threads use the sync kubernetes
client, so the tests only ever await (never block) while the source works.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sluice import ConfigMapDecisions, RetryPolicy, ThrottledProducer
from sluice.decision import to_json
from sluice.watch import SourceView
from tests.support import k8s_fixtures
from tests.support.k8s_emulator import EmulatorHandle, KubeEmulator
from tests.support.sdk_helpers import make_circuit, make_decision

k8s_emulator = k8s_fixtures.k8s_emulator
k8s_api_client = k8s_fixtures.k8s_api_client

NAME = "sluice-orders"
FAST_RECONNECT = RetryPolicy(max_attempts=1_000_000, initial_delay=0.01, max_delay=0.05, deadline=float("inf"))


def configmap(data: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": NAME, "namespace": "default"}, "data": data}


@pytest.fixture
def emu(k8s_emulator: EmulatorHandle) -> KubeEmulator:
    return k8s_emulator.emulator


@pytest.fixture
async def source(emu: KubeEmulator, k8s_api_client: Any) -> AsyncIterator[ConfigMapDecisions]:
    watcher = ConfigMapDecisions(
        "default", [NAME], api_client=k8s_api_client, watch_timeout=30, request_timeout=5, reconnect=FAST_RECONNECT
    )
    try:
        yield watcher
    finally:
        await asyncio.to_thread(watcher.close)


async def until(check: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """Await (letting the emulator serve) until ``check()`` is truthy."""
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


async def test_sees_the_configmap_created_and_updated(emu: KubeEmulator, source: ConfigMapDecisions) -> None:
    await until(lambda: source.lists >= 1 and emu.open_watches >= 1, what="first list and watch")
    assert source.view().decision is None

    emu.create_object("configmaps", configmap({"decision.json": to_json(make_decision(epoch=1))}), "default")
    await until(lambda: epoch(source.view()) == 1, what="created decision")

    emu.patch_object("configmaps", NAME, {"data": {
        "decision.json": to_json(make_decision(epoch=2, shed=("low",))),
        "circuit.json": to_json(make_circuit("brokers", "half-open", probe_ratio=0.5)),
    }}, "default")
    view = await until(lambda: (v := source.view()).circuits and epoch(v) == 2 and v, what="update")
    assert view.circuits[0].doc.state == "half-open"
    assert view.connected and view.errors == 0

    emu.delete_object("configmaps", NAME, "default")
    await until(lambda: source.view().circuits == (), what="deleted circuit")
    assert epoch(source.view()) == 2  # a deleted ConfigMap's decision just ages into staleness
    assert source.lists == 1


async def test_a_dropped_watch_resumes_from_the_last_resource_version(
    emu: KubeEmulator, source: ConfigMapDecisions
) -> None:
    emu.create_object("configmaps", configmap({"decision.json": to_json(make_decision(epoch=1))}), "default")
    await until(lambda: epoch(source.view()) == 1 and emu.open_watches >= 1)
    last_rv = source.resource_versions[NAME]
    watches_before = len(emu.recorded(method="GET", resource="configmaps"))

    emu.close_watches()  # the API server drops the connection
    await until(lambda: len(emu.recorded(method="GET", resource="configmaps")) > watches_before
                and emu.open_watches >= 1, what="re-watch")
    resumed = emu.recorded(method="GET", resource="configmaps")[-1]
    assert resumed.query.get("resourceVersion") == last_rv and resumed.query.get("watch") == "true"
    emu.patch_object("configmaps", NAME, {"data": {"decision.json": to_json(make_decision(epoch=2))}}, "default")
    await until(lambda: epoch(source.view()) == 2, what="update after resume")
    assert source.lists == 1  # resumed, not relisted


async def test_410_gone_relists_and_catches_up(emu: KubeEmulator, source: ConfigMapDecisions) -> None:
    emu.create_object("configmaps", configmap({"decision.json": to_json(make_decision(epoch=1))}), "default")
    await until(lambda: epoch(source.view()) == 1 and emu.open_watches >= 1)
    # Without a chance to reconnect in between: drop the watch, change the ConfigMap, compact history.
    emu.close_watches()
    emu.patch_object("configmaps", NAME, {"data": {"decision.json": to_json(make_decision(epoch=7))}}, "default")
    emu.compact_history()
    await until(lambda: epoch(source.view()) == 7, what="relisted state")
    assert source.lists == 2
    emu.patch_object("configmaps", NAME, {"data": {"decision.json": to_json(make_decision(epoch=8))}}, "default")
    await until(lambda: epoch(source.view()) == 8, what="watching again after the relist")


async def test_api_errors_back_off_and_recover(emu: KubeEmulator, k8s_api_client: Any) -> None:
    emu.create_object("configmaps", configmap({"decision.json": to_json(make_decision(epoch=3))}), "default")
    fault = emu.inject_fault(500, times=3, writes_only=False, resource="configmaps", method="GET")
    source = ConfigMapDecisions("default", NAME, api_client=k8s_api_client, request_timeout=5, reconnect=FAST_RECONNECT)
    try:
        await until(lambda: epoch(source.view()) == 3, what="decision after the faults")
        assert len(fault.hits) == 3 and source.reconnects == 3
        assert source.view().errors == 3 and source.view().connected
    finally:
        await asyncio.to_thread(source.close)


async def test_a_bad_document_in_the_configmap_keeps_the_last_good_one(
    emu: KubeEmulator, source: ConfigMapDecisions
) -> None:
    emu.create_object("configmaps", configmap({"decision.json": to_json(make_decision(epoch=1))}), "default")
    await until(lambda: epoch(source.view()) == 1)
    emu.patch_object("configmaps", NAME, {"data": {"decision.json": "{not json"}}, "default")
    await until(lambda: source.view().errors == 1, what="error counted")
    assert epoch(source.view()) == 1


async def test_a_producer_follows_the_watched_configmap(emu: KubeEmulator, source: ConfigMapDecisions) -> None:
    emu.create_object("configmaps", configmap({"decision.json": to_json(make_decision(epoch=1))}), "default")
    await until(lambda: epoch(source.view()) == 1)
    producer = ThrottledProducer({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 1000}, source)
    try:
        assert producer.health()["decision"]["status"] == "fresh"
        assert producer.health()["decision"]["source"] == f"configmap:default/{NAME}"
        emu.patch_object("configmaps", NAME, {"data": {"circuit.json": to_json(make_circuit("b", "open"))}},
                         "default")
        await until(lambda: producer.health()["circuit"]["state"] == "open", what="open circuit seen")
    finally:
        producer.close(0)
