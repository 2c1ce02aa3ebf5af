"""Fixtures for operator scenarios: the emulator, one real Prometheus per module, an exporter."""

from tests.support.k8s_fixtures import k8s_emulator
from tests.support.prometheus import prometheus_fixture

prom = prometheus_fixture(scope="module")

__all__ = ["k8s_emulator", "prom"]

from tests.support.prometheus import prometheus_factory_fixture  # noqa: E402

make_prometheus = prometheus_factory_fixture()
__all__ += ["make_prometheus"]
