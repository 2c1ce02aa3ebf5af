"""Pytest fixtures for the real Prometheus (registered in tests/conftest.py).

* `prom` (per module): a started Prometheus scraping its own exporter every second.
* `make_prometheus`: ``make(**PrometheusServer kwargs)`` for tests that stop and start one.
"""

from tests.support.prometheus import prometheus_factory_fixture, prometheus_fixture

prom = prometheus_fixture(scope="module")
make_prometheus = prometheus_factory_fixture()
