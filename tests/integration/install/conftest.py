"""A fresh control plane for the install tests: Helm owns what it installs, so nothing may be there first.

The shared `control_plane` fixture already holds the CRDs and the chart's RBAC applied by kubectl;
`helm install` would refuse to adopt them, and what these tests install and uninstall would leak into
the other tests. So each install module gets its own etcd + kube-apiserver + kube-controller-manager.
(`prom` comes from the shared plugin in tests/support/prometheus_fixtures.py.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.control_plane import ControlPlane


@pytest.fixture(scope="module")
def fresh_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane.start(tmp_path_factory.mktemp("install-plane") / "cluster")
    try:
        yield plane
    finally:
        plane.stop()
