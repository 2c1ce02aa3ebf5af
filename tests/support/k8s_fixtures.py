"""Pytest fixtures for the real control plane (registered in tests/conftest.py).

* `control_plane` (session): etcd + kube-apiserver + kube-controller-manager, CRDs applied.
* `kube` (session): the admin's `KubeApi`.
* `operator_identity` (session): the chart's ServiceAccount and RBAC (default values) in sluice-system,
  with a bound token in a token file.
* `cluster` (per test): a fresh namespace, a recording fault proxy in front of the API server, a Lease
  name of its own, and clean-up of what the test created.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.control_plane import OPERATOR_NAMESPACE, ControlPlane, ServiceAccountIdentity
from tests.support.fault_proxy import ApiRequest, FaultProxy
from tests.support.kube_api import ApiFailure, KubeApi

POLICIES = "sluice.dev/v1alpha1/backpressurepolicies"
CIRCUITS = "sluice.dev/v1alpha1/circuitbreakers"


@dataclass
class ClusterHandle:
    """One test's slice of the shared control plane."""

    plane: ControlPlane
    api: KubeApi
    proxy: FaultProxy
    identity: ServiceAccountIdentity
    namespace: str
    lease_name: str
    created_namespaces: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        """Where the operator under test connects: the proxy, which forwards to the real server."""
        return self.proxy.url

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> str:
        """A namespace unique to this test run (`name` plus a suffix); returns its real name."""
        real = unique_name(name)
        self.api.create_namespace(real, labels)
        self.created_namespaces.append(real)
        return real


def unique_name(prefix: str) -> str:
    prefix = re.sub(r"[^a-z0-9-]", "-", prefix.lower())[:40].strip("-")
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    directory = Path(os.environ.get("SLUICE_TEST_CLUSTER_DIR") or tmp_path_factory.mktemp("control-plane"))
    plane = ControlPlane.start(directory)
    try:
        plane.install_crds()
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> KubeApi:
    return KubeApi(control_plane.server, control_plane.admin_token, str(control_plane.ca_file))


@pytest.fixture(scope="session")
def operator_identity(control_plane: ControlPlane) -> ServiceAccountIdentity:
    """The chart's ServiceAccount with exactly the RBAC `helm template` renders with default values."""
    return control_plane.install_operator_identity()


@pytest.fixture(scope="session")
def api_usage() -> list[ApiRequest]:
    """Every request an operator made through any test's proxy in this run (for the RBAC-usage test)."""
    return []


def made_by_operator(request: ApiRequest) -> bool:
    return request.user_agent.startswith(("sluice-operator", "kopf"))


@pytest.fixture
def cluster(control_plane: ControlPlane, kube: KubeApi, operator_identity: ServiceAccountIdentity,
            api_usage: list[ApiRequest], request: pytest.FixtureRequest) -> Iterator[ClusterHandle]:
    namespace = unique_name(request.node.name.split("[")[0].removeprefix("test_")[:30])
    kube.create_namespace(namespace)
    proxy = FaultProxy(control_plane.server, str(control_plane.ca_file)).start()
    handle = ClusterHandle(control_plane, kube, proxy, operator_identity, namespace,
                           lease_name=unique_name("lease"), created_namespaces=[namespace])
    try:
        yield handle
    finally:
        proxy.stop()
        api_usage.extend(r for r in proxy.recorded() if made_by_operator(r))
        cleanup(kube, handle)


def cleanup(kube: KubeApi, handle: ClusterHandle) -> None:
    """Delete what the test made so the next test's cluster-wide operator does not see it."""
    with contextlib.suppress(ApiFailure):
        for item in kube.list_objects(CIRCUITS):
            kube.delete_object(CIRCUITS, item["metadata"]["name"])
    for namespace in handle.created_namespaces:
        with contextlib.suppress(ApiFailure):
            for item in kube.list_objects(POLICIES, namespace):
                if item["metadata"].get("finalizers"):
                    kube.patch_object(POLICIES, item["metadata"]["name"], {"metadata": {"finalizers": None}}, namespace)
                kube.delete_object(POLICIES, item["metadata"]["name"], namespace)
            kube.release_namespace(namespace)
            kube.delete_object("namespaces", namespace)
    with contextlib.suppress(ApiFailure):
        kube.delete_object("coordination.k8s.io/v1/leases", handle.lease_name, OPERATOR_NAMESPACE)
