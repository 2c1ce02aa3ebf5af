"""The API calls the operator makes match the RBAC the chart renders: nothing denied, nothing unused.

Runs after the other operator scenarios (file order) and adds the requests they made through their
proxies to a scenario of its own, so it also holds when run alone.
"""

from __future__ import annotations

import json

from tests.support.control_plane import RBAC_KINDS
from tests.support.fault_proxy import ApiRequest
from tests.support.helm import render
from tests.support.k8s_fixtures import CIRCUITS, POLICIES, ClusterHandle, made_by_operator
from tests.support.operator_harness import circuit, policy, running_operator
from tests.support.prometheus import PrometheusServer

Grant = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def chart_grants() -> set[Grant]:
    grants: set[Grant] = set()
    for manifest in render():
        if manifest.kind not in RBAC_KINDS or manifest.kind in ("ServiceAccount",) or "Binding" in manifest.kind:
            continue
        for rule in manifest.obj.get("rules") or []:
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    for verb in rule.get("verbs") or []:
                        grants.add((group, resource, verb))
    return grants


def used(request: ApiRequest) -> Grant:
    resource = request.resource + (f"/{request.subresource}" if request.subresource else "")
    return (request.group, resource, request.verb)


async def test_every_call_is_granted_and_every_grant_is_used(
    cluster: ClusterHandle, prom: PrometheusServer, api_usage: list[ApiRequest]
) -> None:
    api, ns = cluster.api, cluster.namespace
    prom.exporter.set("test_errors", 0.9, {"circuit": "usage"})
    prom.exporter.set("test_lag", 3000, {"policy": "usage"})
    async with running_operator(cluster, prom.url):
        api.create_object(CIRCUITS, circuit("usage", namespaces=(ns,)))
        api.create_object(POLICIES, policy("usage", ns, spec={"circuitBreakerRef": "usage"}))
        await api.wait_for(lambda: json.loads(((api.get_object("configmaps", "sluice-circuit-usage", ns) or {})
                                               .get("data") or {}).get("circuit.json") or "{}").get("state") == "open",
                           timeout_s=20, what="open circuit")
        await api.wait_for_object("configmaps", "sluice-usage", ns, timeout_s=10)
        api.delete_object(CIRCUITS, "usage")
        await api.wait_for_deletion("configmaps", "sluice-circuit-usage", ns, timeout_s=30)
    requests = [r for r in cluster.proxy.recorded() if made_by_operator(r)] + api_usage
    denied = sorted({used(r) for r in requests if r.denied})
    assert not denied, f"the operator needed calls the chart does not grant: {denied}"
    grants = chart_grants()
    calls = {used(r) for r in requests}
    not_granted = sorted(c for c in calls if c not in grants)
    assert not not_granted, f"calls outside the chart's rules: {not_granted}"
    unused = sorted(grants - calls)
    assert not unused, f"the chart grants what the operator never uses; trim it: {unused}"
