"""Fixtures for operator scenarios: one real Prometheus per module, a factory for more, an exporter.

The control plane and the per-test `cluster` come from tests/support/k8s_fixtures.py.
"""

from tests.support.prometheus import prometheus_factory_fixture, prometheus_fixture

prom = prometheus_fixture(scope="module")
make_prometheus = prometheus_factory_fixture()
