"""Helpers for the operations tests (dashboards, compliance, kubectl sluice): a real Prometheus that scrapes
extra targets besides the test exporter, and registries served over HTTP the way a pod serves /metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from tests.support.exporter import Exporter
from tests.support.prometheus import PrometheusServer

__all__ = ["Forward", "ScrapingPrometheus", "served"]


class Forward:
    """A collector that forwards to a registry set later (an operator runtime builds its own)."""

    def __init__(self) -> None:
        self.target: CollectorRegistry | None = None

    def collect(self) -> Iterator[Any]:
        if self.target is not None:
            yield from self.target.collect()


class ScrapingPrometheus(PrometheusServer):
    """A PrometheusServer whose config also scrapes `targets` (job "sluice", one instance per target)."""

    def __init__(self, exporter: Exporter, targets: list[str], **kwargs: Any) -> None:
        self.extra_targets = list(targets)
        super().__init__(exporter, **kwargs)

    def _write_config(self) -> None:
        super()._write_config()
        config = json.loads(self.config_path.read_text())
        config["scrape_configs"].append({"job_name": "sluice", "static_configs": [{"targets": self.extra_targets}]})
        self.config_path.write_text(json.dumps(config, indent=2))


@contextmanager
def served(registry: CollectorRegistry) -> Iterator[str]:
    """Serve `registry` on a free loopback port; yields "host:port"."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
