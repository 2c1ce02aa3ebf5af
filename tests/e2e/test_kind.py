"""End to end on kind: chart install, decisions from real Prometheus data, circuit publication, uninstall.

The tests share one cluster and run in file order (each builds on the previous one's state).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from sluice_operator.api.policy import BackpressurePolicy, Window
from tests.e2e.conftest import MANIFESTS, RELEASE, RELEASE_NAMESPACE, REPO_ROOT, Cluster, eventually

pytestmark = pytest.mark.e2e

EXAMPLES = REPO_ROOT / "examples"
POLICY_NAMESPACE = "e2e-orders"
CIRCUIT_NAMESPACES = ("e2e-circuit-a", "e2e-circuit-b")
LAG_SERIES = 'kafka_consumergroup_lag{consumergroup="orders-consumer",topic="orders",partition="0"}'


def _policy() -> BackpressurePolicy:
    return BackpressurePolicy.model_validate(yaml.safe_load((EXAMPLES / "policy-minimal.yaml").read_text()))


def _zone(backlog: float, window: Window) -> str:
    """The zone the design assigns to `backlog` with no hysteresis history (a fresh rise)."""
    if backlog <= window.green:
        return "green"
    return "yellow" if backlog <= window.yellow else "red"


def _expected_zones(backlog: float) -> dict[str, str]:
    thresholds = _policy().spec.thresholds
    return {p: _zone(backlog, getattr(thresholds, p)) for p in ("high", "medium", "low")}


def _configmap_json(cluster: Cluster, namespace: str, name: str, key: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "configmap", "-n", namespace, name, "-o", "json", check=False)
    if result.returncode != 0:
        return None
    data = json.loads(result.stdout).get("data") or {}
    return json.loads(data[key]) if key in data else None


def _decision_zones(cluster: Cluster) -> dict[str, str] | None:
    name = f"sluice-{_policy().metadata.name}"
    decision = _configmap_json(cluster, POLICY_NAMESPACE, name, "decision.json")
    if decision is None:
        return None
    return {p: decision["priorities"][p]["zone"] for p in ("high", "medium", "low")}


def test_operator_pods_run_restricted(operator: Cluster) -> None:
    pods = operator.get("pods", "-n", RELEASE_NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    assert len(pods) == 2
    assert all(p["status"]["phase"] == "Running" for p in pods)
    holder = operator.get("lease", "-n", RELEASE_NAMESPACE, "sluice-operator-leader")["spec"]["holderIdentity"]
    assert any(p["metadata"]["name"] in holder for p in pods)


def test_examples_pass_server_side_validation(operator: Cluster) -> None:
    """The API server (structural schema + CEL rules) accepts every Sluice example."""
    for path in sorted(EXAMPLES.glob("*.yaml")):
        operator.kubectl("apply", "--dry-run=server", "-n", POLICY_NAMESPACE, "-f", str(path))


def test_decision_configmap_appears_with_the_right_zones(operator: Cluster) -> None:
    operator.exec_exporter([f"{LAG_SERIES} 0"])
    operator.apply(EXAMPLES / "policy-minimal.yaml", namespace=POLICY_NAMESPACE)
    expected = _expected_zones(0)
    assert set(expected.values()) == {"green"}
    eventually(lambda: _decision_zones(operator) == expected, timeout=120, what=f"zones {expected}")


def test_changing_the_lag_changes_the_zone(operator: Cluster) -> None:
    backlog = 3000.0
    expected = _expected_zones(backlog)
    assert expected == {"high": "yellow", "medium": "red", "low": "red"}
    operator.exec_exporter([f"{LAG_SERIES} {backlog:g}"])
    eventually(lambda: _decision_zones(operator) == expected, timeout=120, what=f"zones {expected}")
    status = operator.get("bpp", "-n", POLICY_NAMESPACE, _policy().metadata.name)["status"]
    assert status["backlog"] == backlog
    assert status["priorities"]["medium"]["zone"] == "red"


def _circuit_states(cluster: Cluster) -> dict[str, str | None]:
    states: dict[str, str | None] = {}
    for namespace in CIRCUIT_NAMESPACES:
        document = _configmap_json(cluster, namespace, "sluice-circuit-e2e-errors", "circuit.json")
        states[namespace] = None if document is None else document["state"]
    return states


def test_circuit_opens_and_publishes_in_selected_namespaces(operator: Cluster) -> None:
    operator.exec_exporter(["sluice_e2e_error_ratio 0"])
    operator.apply(MANIFESTS / "circuit.yaml")
    closed = dict.fromkeys(CIRCUIT_NAMESPACES, "closed")
    eventually(lambda: _circuit_states(operator) == closed, timeout=120, what="closed circuit ConfigMaps")
    operator.exec_exporter(["sluice_e2e_error_ratio 1"])
    opened = dict.fromkeys(CIRCUIT_NAMESPACES, "open")
    eventually(lambda: _circuit_states(operator) == opened, timeout=120, what="open circuit ConfigMaps")
    status = operator.get("cb", "e2e-errors")["status"]
    assert status["state"] == "open"
    assert set(CIRCUIT_NAMESPACES) <= set(status["publishedNamespaces"])


def test_uninstall_leaves_nothing_stuck(operator: Cluster) -> None:
    # Custom resources first (Sluice adds no finalizers, so any order works; this one is tidiest).
    operator.kubectl("delete", "bpp", "--all", "-A", "--wait", "--timeout=90s", timeout=120)
    operator.kubectl("delete", "cb", "--all", "--wait", "--timeout=90s", timeout=120)
    operator.helm("uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", "--timeout", "3m",
                  timeout=200)
    selector = f"app.kubernetes.io/instance={RELEASE}"
    eventually(lambda: not operator.get("pods", "-n", RELEASE_NAMESPACE, "-l", selector)["items"],
               timeout=120, what="operator pods to go")
    for kind in ("deployments", "services", "serviceaccounts", "roles", "rolebindings", "poddisruptionbudgets"):
        assert operator.get(kind, "-A", "-l", selector)["items"] == [], kind
    for kind in ("clusterroles", "clusterrolebindings"):
        assert operator.get(kind, "-l", selector)["items"] == [], kind
    # Helm keeps CRDs (crds/ is install-only); deleting them must not hang on leftover finalizers.
    operator.kubectl("delete", "-f", str(REPO_ROOT / "crds"), "--wait", "--timeout=90s", timeout=120)
    remaining = operator.kubectl("get", "crd", "-o", "name").stdout
    assert "sluice.dev" not in remaining

