"""Build the real signal readers from settings (kept apart so tests can wire their own)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sluice_operator.api.policy import KafkaSource
from sluice_operator.kube import ApiError, KubeClient, resource_path
from sluice_operator.reconcile.signals import Signals
from sluice_operator.settings import Settings
from sluice_operator.sources.kafka import KafkaLagSource, kafka_config_from_secret
from sluice_operator.sources.kafka_probe import KafkaProbe
from sluice_operator.sources.prometheus import PrometheusClient
from sluice_operator.sources.reading import Reading


def prometheus_client(settings: Settings, url: str | None = None) -> PrometheusClient:
    """The shared Prometheus reader: bounded pool, no library retries, short query cache."""
    headers: dict[str, str] = {}
    if settings.prometheus.bearer_token_file:
        token = Path(settings.prometheus.bearer_token_file).read_text(encoding="utf-8").strip()
        headers["Authorization"] = f"Bearer {token}"
    verify: bool | str = True
    if settings.prometheus.insecure_skip_verify:
        verify = False
    elif settings.prometheus.ca_file:
        verify = settings.prometheus.ca_file
    return PrometheusClient(
        url or settings.prometheus.url, max_workers=settings.prometheus.max_concurrent_queries,
        cache_ttl=settings.prometheus.query_cache_seconds, headers=headers, verify_tls=verify,
    )


def build_signals(settings: Settings, *, client: KubeClient | None = None, prometheus_url: str | None = None,
                  with_prometheus: bool = True) -> Signals:
    """Prometheus + Kafka readers, and a Secret loader when the operator may read Secrets."""
    lag = KafkaLagSource(max_workers=max(2, settings.prometheus.max_concurrent_queries // 2))
    prober = KafkaProbe()

    async def kafka_lag(source: KafkaSource, config: Mapping[str, str]) -> Reading:
        return await lag.read_lag(source.bootstrap_servers, source.consumer_group, source.topics,
                                  config=config, timeout_seconds=source.timeout_seconds)

    async def kafka_probe(bootstrap: str, config: Mapping[str, str], timeout: float) -> tuple[bool, str]:
        result = await prober.probe(bootstrap, config=config, timeout_seconds=timeout)
        detail = f"{result.reason} after {result.latency:.2f}s" + (f": {result.message}" if result.message else "")
        return result.healthy, detail

    async def secrets(namespace: str, name: str) -> Mapping[str, str]:
        if client is None:
            raise LookupError("no Kubernetes client to read Secrets with")
        try:
            secret = await client.get(resource_path("v1", "secrets", namespace=namespace, name=name))
        except ApiError as error:
            raise LookupError(f"Secret {namespace}/{name}: {error.reason} {error.message}") from error
        return kafka_config_from_secret(secret.get("data") or {})

    prometheus = prometheus_client(settings, prometheus_url) if with_prometheus else None
    return Signals(settings, prometheus, kafka_lag=kafka_lag, kafka_probe=kafka_probe,
                   secrets=secrets if client is not None else None)
