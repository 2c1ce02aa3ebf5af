"""status.compliance and the Compliant condition on the real control plane: two SDK producers on librdkafka's
mock cluster, on different epochs, scraped by a real Prometheus the operator queries."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from sluice import ThrottledProducer
from sluice.decision import Decision, parse_decision
from sluice.sources import StaticDecisions
from tests.support.exporter import Exporter
from tests.support.k8s_fixtures import ClusterHandle
from tests.support.operator_harness import POLICIES, policy, running_operator
from tests.support.ops_helpers import ScrapingPrometheus, served
from tests.support.sdk_helpers import InProcessKafka


def _compliant(obj: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == "Compliant"), None)


async def test_compliance_with_producers_on_two_epochs(cluster: ClusterHandle) -> None:
    api, ns = cluster.api, cluster.namespace
    exporter = Exporter().start()
    exporter.set("test_lag", 50, {"policy": "c1"})
    reg_a, reg_b = CollectorRegistry(), CollectorRegistry()
    with served(reg_a) as target_a, served(reg_b) as target_b, \
            InProcessKafka(num_brokers=1, topics={"t": 1}) as kafka:
        prom = ScrapingPrometheus(exporter, [target_a, target_b])
        prom.start()
        producers: list[ThrottledProducer] = []
        try:
            async with running_operator(cluster, prom.url):
                api.create_object(POLICIES, policy("c1", ns, spec={
                    "compliance": {"intervalSeconds": 1}, "smoothing": {"alpha": 1}}))
                obj = await api.wait_for_object(POLICIES, "c1", ns, predicate=_compliant, timeout_s=30)
                assert _compliant(obj)["reason"] == "NoProducers"  # type: ignore[index]
                assert obj["status"]["compliance"]["producers"] == 0

                async def decision(after: int = 0) -> Decision:
                    cm = await api.wait_for_object(
                        "configmaps", "sluice-c1", ns, timeout_s=30,
                        predicate=lambda o: parse_decision(o["data"]["decision.json"]).epoch > after)
                    return parse_decision(cm["data"]["decision.json"])

                first = await decision()
                sources = [StaticDecisions(first), StaticDecisions(first)]
                for source, registry in zip(sources, (reg_a, reg_b), strict=True):
                    producer = ThrottledProducer({"bootstrap.servers": kafka.bootstrap_servers}, source,
                                                 metrics_registry=registry)
                    producer.produce("t", b"x", priority="high")
                    producers.append(producer)

                def compliance_is(**expected: Any) -> Any:
                    def check(o: dict[str, Any]) -> bool:
                        found = (o.get("status") or {}).get("compliance") or {}
                        return all(found.get(k) == v for k, v in expected.items())
                    return check

                obj = await api.wait_for_object(POLICIES, "c1", ns, timeout_s=40, predicate=compliance_is(
                    producers=2, onCurrentEpoch=2, ratio=1.0, oldestEpoch=first.epoch, epoch=first.epoch))
                assert _compliant(obj)["status"] == "True"  # type: ignore[index]
                assert obj["status"]["compliance"]["summary"] == "2/2"

                exporter.set("test_lag", 3000, {"policy": "c1"})  # a new decision: a new epoch
                second = await decision(after=first.epoch)
                await asyncio.sleep(2.5)  # alpha 1: the epoch settles at once; make sure it did
                second = await decision(after=first.epoch)
                sources[0].set_decision(second)
                producers[0].produce("t", b"y", priority="high")  # only producer A moves on
                obj = await api.wait_for_object(POLICIES, "c1", ns, timeout_s=40, predicate=compliance_is(
                    producers=2, onCurrentEpoch=1, ratio=0.5, oldestEpoch=first.epoch, epoch=second.epoch))
                condition = _compliant(obj)
                assert condition is not None and condition["status"] == "False"
                assert condition["reason"] == "ProducersBehind"
                assert f"1 of 2 producers apply epoch {second.epoch}" in condition["message"]
                assert obj["status"]["epoch"] == second.epoch
                printed = cluster.plane.kubectl("get", "bpp", "c1", "-n", ns).stdout
                assert "COMPLIANCE" in printed and "1/2" in printed
        finally:
            for producer in producers:
                producer.close(5)
            prom.close()
            exporter.stop()
