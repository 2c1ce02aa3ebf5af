"""Real-cluster fixtures: a kind cluster with the operator installed from the chart.

Opt-in: `make e2e` (pytest -m e2e tests/e2e). Everything is skipped, with the reason, unless `kind`,
`docker` (with a running engine), `kubectl` and `helm` are all on PATH. The session creates a kind
cluster (or reuses SLUICE_E2E_CLUSTER), builds the operator image and loads it into the nodes, starts a
real Prometheus scraping an exporter the tests drive, and helm-installs the chart. SLUICE_E2E_KEEP=1
keeps the cluster afterwards for debugging.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = Path(__file__).resolve().parent / "manifests"
CHART = REPO_ROOT / "charts" / "sluice"
IMAGE_REPOSITORY = "sluice-operator"
IMAGE_TAG = "e2e"
RELEASE = "sluice"
RELEASE_NAMESPACE = "sluice-system"
MONITORING_NAMESPACE = "sluice-e2e-monitoring"
TOOLS = ("kind", "docker", "kubectl", "helm")

T = TypeVar("T")


def missing_requirement() -> str | None:
    """Why the e2e tests cannot run here, or None when they can."""
    absent = [tool for tool in TOOLS if shutil.which(tool) is None]
    if absent:
        return f"e2e needs {', '.join(TOOLS)} on PATH; missing: {', '.join(absent)}"
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                              text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "docker info timed out: no running Docker engine"
    if info.returncode != 0 or not info.stdout.strip():
        return f"no running Docker engine: {(info.stderr or info.stdout).strip()[:200]}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the whole directory cleanly (one reason, no setup) when the tools are not there."""
    here = Path(__file__).resolve().parent
    e2e_items = [item for item in items if here in Path(str(item.fspath)).resolve().parents]
    if not e2e_items:
        return
    reason = missing_requirement()
    if reason is None:
        return
    for item in e2e_items:
        item.add_marker(pytest.mark.skip(reason=reason))


def run(args: list[str], *, timeout: float = 120, env: dict[str, str] | None = None,
        input_text: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with a deadline; on failure the error carries its output."""
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, input=input_text,
                            check=False, cwd=REPO_ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def eventually(probe: Callable[[], T | None], *, timeout: float, interval: float = 1.0, what: str) -> T:
    """Poll `probe` until it returns something other than None (or a falsy value); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except AssertionError as error:  # e.g. the object does not exist yet
            last = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f": {last}" if last else ""))


@dataclass(frozen=True)
class Cluster:
    """kubectl and helm bound to the test cluster's kubeconfig."""

    name: str
    kubeconfig: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, timeout: float = 60, input_text: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["kubectl", *args], timeout=timeout, env=self.env, input_text=input_text, check=check)

    def helm(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["helm", *args], timeout=timeout, env=self.env, check=check)

    def get(self, *args: str) -> dict[str, Any]:
        """`kubectl get ... -o json` parsed; AssertionError when it fails (e.g. not found)."""
        out: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json").stdout)
        return out

    def apply(self, path: Path, namespace: str | None = None) -> None:
        args = ["apply", "-f", str(path)] + (["-n", namespace] if namespace else [])
        self.kubectl(*args)

    def exec_exporter(self, lines: list[str]) -> None:
        """Set exporter samples (`name{labels} value` lines) from inside its pod."""
        script = ("import sys, urllib.request as u; "
                  "u.urlopen(u.Request('http://127.0.0.1:9100/set', data=sys.stdin.read().encode(), "
                  "method='POST'), timeout=5)")
        self.kubectl("exec", "-i", "-n", MONITORING_NAMESPACE, "deploy/lag-exporter", "--",
                     "python", "-c", script, input_text="\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = missing_requirement()
    if reason is not None:
        pytest.skip(reason)
    name = os.environ.get("SLUICE_E2E_CLUSTER", "sluice-e2e")
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    existing = run(["kind", "get", "clusters"], timeout=30).stdout.split()
    created = name not in existing
    if created:
        image = os.environ.get("SLUICE_E2E_NODE_IMAGE")  # e.g. kindest/node:v1.29.14 (CI matrix)
        run(["kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig), "--wait", "180s",
             *(["--image", image] if image else [])],
            timeout=600)
    else:
        kubeconfig.write_text(run(["kind", "get", "kubeconfig", "--name", name], timeout=30).stdout)
    try:
        yield Cluster(name, kubeconfig)
    finally:
        if created and os.environ.get("SLUICE_E2E_KEEP") != "1":
            run(["kind", "delete", "cluster", "--name", name], timeout=300, check=False)


@pytest.fixture(scope="session")
def image(cluster: Cluster) -> str:
    """The operator image, built from this checkout and loaded into the kind nodes."""
    ref = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"
    run(["docker", "build", "-t", ref, str(REPO_ROOT)], timeout=900)
    run(["kind", "load", "docker-image", ref, "--name", cluster.name], timeout=300)
    return ref


@pytest.fixture(scope="session")
def prometheus(cluster: Cluster, image: str) -> str:
    """A real Prometheus in the cluster scraping the test-driven exporter; returns its in-cluster URL."""
    cluster.apply(MANIFESTS / "lag-exporter.yaml")
    cluster.apply(MANIFESTS / "prometheus.yaml")
    for deployment in ("lag-exporter", "prometheus"):
        cluster.kubectl("rollout", "status", "-n", MONITORING_NAMESPACE, f"deploy/{deployment}",
                        "--timeout=300s", timeout=330)
    return f"http://prometheus.{MONITORING_NAMESPACE}.svc:9090"


@pytest.fixture(scope="session")
def operator(cluster: Cluster, image: str, prometheus: str) -> Cluster:
    """The chart installed into a namespace that enforces Pod Security Standard "restricted"."""
    cluster.kubectl("create", "namespace", RELEASE_NAMESPACE, check=False)
    cluster.kubectl("label", "--overwrite", "namespace", RELEASE_NAMESPACE,
                    "pod-security.kubernetes.io/enforce=restricted")
    cluster.apply(MANIFESTS / "namespaces.yaml")
    cluster.helm(
        "upgrade", "--install", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE,
        "--set", f"image.repository={IMAGE_REPOSITORY}", "--set", f"image.tag={IMAGE_TAG}",
        "--set", "image.pullPolicy=Never",
        "--set", f"settings.prometheusUrl={prometheus}",
        "--set", "settings.defaultIntervalSeconds=1",
        "--set", "settings.logLevel=DEBUG",
        "--wait", "--timeout", "5m", timeout=330,
    )
    eventually(lambda: _lease_holder(cluster), timeout=120, what="a leader to hold the Lease")
    return cluster


def _lease_holder(cluster: Cluster) -> str | None:
    lease = cluster.get("lease", "-n", RELEASE_NAMESPACE, "sluice-operator-leader")
    holder = lease.get("spec", {}).get("holderIdentity")
    return str(holder) if holder else None
