"""`kubectl sluice status` and `kubectl sluice explain`, run by the real kubectl (which finds kubectl-sluice on
PATH) with the admin's kubeconfig against the real control plane, while the real operator reconciles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.k8s_fixtures import ClusterHandle
from tests.support.operator_harness import CIRCUITS, POLICIES, circuit, policy, running_operator
from tests.support.prometheus import PrometheusServer

VENV_BIN = Path(sys.executable).parent


def kubectl_sluice(cluster: ClusterHandle, *args: str) -> subprocess.CompletedProcess[str]:
    assert shutil.which("kubectl-sluice", path=str(VENV_BIN)), "kubectl-sluice is installed with the package"
    env = dict(os.environ, KUBECONFIG=str(cluster.plane.admin_kubeconfig),
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run([str(cluster.plane.bin_dir / "kubectl"), "sluice", *args], capture_output=True,
                            text=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result


async def test_status_and_explain(cluster: ClusterHandle, prom: PrometheusServer) -> None:
    api, ns = cluster.api, cluster.namespace
    name, cb = f"ks-{ns[-6:]}", f"ks-{ns[-6:]}-cb"
    prom.exporter.set("test_lag", 3000, {"policy": name})
    prom.exporter.set("test_errors", 1, {"circuit": cb})
    await prom.async_wait_for_value(f'sum(test_lag{{policy="{name}"}})', 3000)
    async with running_operator(cluster, prom.url):
        api.create_object(POLICIES, policy(name, ns, spec={"smoothing": {"alpha": 1}}))
        api.create_object(CIRCUITS, circuit(cb, namespaces=(ns,), spec={"recoveryTimeoutSeconds": 600}))
        await api.wait_for_object(POLICIES, name, ns, timeout_s=20, predicate=lambda o: (
            ((o.get("status") or {}).get("priorities") or {}).get("medium", {}).get("zone") == "red"))
        await api.wait_for_object(CIRCUITS, cb, timeout_s=20,
                                  predicate=lambda o: (o.get("status") or {}).get("state") == "open")
        # Down to 1900: medium's raw zone is yellow (<= 2000) but hysteresis holds red until <= 1800.
        prom.exporter.set("test_lag", 1900, {"policy": name})
        await api.wait_for_object(POLICIES, name, ns, timeout_s=20,
                                  predicate=lambda o: (o.get("status") or {}).get("backlog") == 1900)

        table = kubectl_sluice(cluster, "status", "-n", ns).stdout
        assert "NAMESPACE" in table and name in table and "CIRCUIT" in table
        row = next(line for line in table.splitlines() if name in line and ns in line)
        assert "red/" in row and "1900" in row
        assert any(line.startswith(cb) and "open" in line for line in table.splitlines())

        report: dict[str, Any] = json.loads(kubectl_sluice(cluster, "status", "-A", "--output", "json").stdout)
        mine = next(p for p in report["policies"] if p["name"] == name)
        assert set(mine) == {"namespace", "name", "zones", "backlog", "smoothedBacklog", "source", "enforcement",
                             "epoch", "decisionAgeSeconds", "lastEvaluatedSeconds", "compliance", "conditions"}
        assert mine["namespace"] == ns and mine["backlog"] == 1900 and mine["epoch"] >= 1
        assert mine["zones"]["medium"]["zone"] == "red" and mine["zones"]["low"]["shed"] is True
        assert mine["decisionAgeSeconds"] is not None and mine["decisionAgeSeconds"] < 120
        assert mine["conditions"] == []  # every condition is good news
        circuit_row = next(c for c in report["circuits"] if c["name"] == cb)
        assert circuit_row["state"] == "open" and circuit_row["sinceSeconds"] is not None
        assert "failures within" in circuit_row["reason"]

        text = kubectl_sluice(cluster, "explain", f"bpp/{name}", "-n", ns).stdout
        assert "medium: red" in text
        assert "held in red by hysteresis: it leaves only at backlog <= 1800" in text
        assert "crossed green 500 (<= yellow 2000): yellow" in text  # medium's raw zone at 1900
        assert "delay = (red.minMs + (red.maxMs - red.minMs) * r) * priorityScale.medium = (500 + 4500 * 0.000) * 1" \
            in text
        assert "LastKnown keeps the last decision for staleAfterSeconds 60" in text

        explained = json.loads(kubectl_sluice(cluster, "explain", f"bpp/{name}", "-n", ns, "-o", "json").stdout)
        assert set(explained) == {"namespace", "name", "epoch", "source", "enforcement", "backlog",
                                  "smoothedBacklog", "priorities", "fallback", "lines"}
        medium = explained["priorities"]["medium"]
        assert medium["zone"] == "red" and medium["rawZone"] == "yellow" and medium["held"]
        high = explained["priorities"]["high"]
        assert high["zone"] == "yellow"
        assert "r = (backlog - green) / (yellow - green) = (1900 - 1000)" in high["formula"]
        assert explained["fallback"]["mode"] == "LastKnown"
        assert explained["fallback"]["conservative"] == {"high": 100, "medium": 500, "low": 1000}
