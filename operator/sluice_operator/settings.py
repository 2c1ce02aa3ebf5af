"""Operator settings from `SLUICE_*` environment variables, validated once at start.

A bad value stops the operator with one message naming the variable, the value and what is accepted,
rather than a traceback minutes later in some handler.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from urllib.parse import urlparse

from sluice_operator.sources.lag_query import DEFAULT_CONSUMPTION_TEMPLATE, DEFAULT_LAG_TEMPLATE


class SettingsError(ValueError):
    """A `SLUICE_*` variable has a value we cannot use."""


@dataclass(frozen=True)
class Setting:
    """One variable, its default (written here only) and its help text.

    The README's settings table and the chart's rendered env are checked against this table
    (tests/unit/test_settings.py, tests/unit/test_chart.py).
    """

    env: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("SLUICE_PROMETHEUS_URL", "http://prometheus-operated.monitoring.svc:9090",
            "Base URL of the Prometheus HTTP API the operator queries."),
    Setting("SLUICE_PROMETHEUS_BEARER_TOKEN_FILE", "",
            "File holding a bearer token sent to Prometheus (empty: none)."),
    Setting("SLUICE_PROMETHEUS_CA_FILE", "", "CA bundle for a TLS Prometheus (empty: system CAs)."),
    Setting("SLUICE_PROMETHEUS_INSECURE_SKIP_VERIFY", "false", "Skip TLS verification towards Prometheus."),
    Setting("SLUICE_WATCH_NAMESPACES", "",
            "Comma-separated namespaces to watch for BackpressurePolicies; empty watches cluster-wide."),
    Setting("SLUICE_CIRCUIT_NAMESPACES", "",
            "Only with SLUICE_WATCH_NAMESPACES: extra namespaces where CircuitBreakers may publish "
            "(the chart's circuitNamespaces). Selected namespaces outside both lists are skipped, and the "
            "circuit's Published condition names them."),
    Setting("SLUICE_DEFAULT_INTERVAL_SECONDS", "5",
            "Polling interval for policies that do not set spec.polling.intervalSeconds."),
    Setting("SLUICE_RAW_QUERY_NAMESPACES", "*",
            "Comma-separated globs of namespaces whose policies may use a raw PromQL `query`. "
            "Others must use consumerGroup + topics. Empty allows none."),
    Setting("SLUICE_LAG_QUERY_TEMPLATE", DEFAULT_LAG_TEMPLATE,
            "PromQL template for structured sources; {group} and {topics} are filled with escaped values."),
    Setting("SLUICE_CONSUMPTION_QUERY_TEMPLATE", DEFAULT_CONSUMPTION_TEMPLATE,
            "PromQL template for the consumer's drain rate (msgs/s) of structured sources, read by "
            "DrainTime policies; {group} and {topics} as in SLUICE_LAG_QUERY_TEMPLATE."),
    Setting("SLUICE_QUERY_CACHE_SECONDS", "1",
            "Policies with the same query inside this window share one Prometheus request."),
    Setting("SLUICE_MAX_CONCURRENT_QUERIES", "8", "Size of the thread pool for Prometheus and Kafka calls."),
    Setting("SLUICE_API_QPS", "100",
            "Sustained rate of the operator's own API writes (status, ConfigMaps, Events) per second; "
            "0 turns the limit off. Lease renewals are never held back."),
    Setting("SLUICE_API_BURST", "200", "Writes allowed at once above SLUICE_API_QPS before the limit applies."),
    Setting("SLUICE_LEADER_ELECTION", "true", "Elect one active replica through a coordination.k8s.io Lease."),
    Setting("SLUICE_LEASE_NAME", "sluice-operator-leader", "Name of the leader-election Lease."),
    Setting("SLUICE_LEASE_NAMESPACE", "",
            "Namespace of the Lease (empty: the pod's namespace from POD_NAMESPACE, else 'default')."),
    Setting("SLUICE_LEASE_DURATION_SECONDS", "15", "A standby takes over this long after renewals stop."),
    Setting("SLUICE_LEASE_RENEW_SECONDS", "5", "How often the leader renews its Lease."),
    Setting("SLUICE_HTTP_PORT", "8080", "Port of /healthz, /readyz and /metrics."),
    Setting("SLUICE_LIVENESS_MAX_AGE_SECONDS", "120",
            "Liveness fails when no evaluation cycle completed for this long (while leading)."),
    Setting("SLUICE_RESYNC_SECONDS", "60",
            "How often the objects the operator tracks are checked against a fresh list, so one deleted "
            "while a watch was down (Kopf reports no deletion after a relist) stops being evaluated."),
    Setting("SLUICE_KAFKA_SECRETS", "false",
            "Allow kafka sources to read credentials from the Secret named in secretRef."),
    Setting("SLUICE_CIRCUIT_SECRET_NAMESPACE", "",
            "Namespace of Secrets referenced by CircuitBreakers (empty: the Lease namespace)."),
    Setting("SLUICE_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR."),
    Setting("SLUICE_LOG_FORMAT", "json", "json (one object per line) or text."),
)


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={raw!r}: expected true or false")


def _number(name: str, raw: str, *, minimum: float, maximum: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a number") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name}={raw!r}: expected a number between {minimum:g} and {maximum:g}")
    return value


def _template(name: str, raw: str) -> str:
    """A PromQL template for structured sources: it must use both placeholders."""
    if "{group}" not in raw or "{topics}" not in raw:
        raise SettingsError(
            f"{name} must contain the placeholders {{group}} and {{topics}} (double other braces: {{{{ and }}}})"
        )
    return raw


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class PrometheusSettings:
    """Where the signals come from, and how hard the operator may lean on it."""

    url: str
    bearer_token_file: str
    ca_file: str
    insecure_skip_verify: bool
    query_cache_seconds: float
    max_concurrent_queries: int


@dataclass(frozen=True)
class ScopeSettings:
    """Which objects the operator watches, and how often it looks at them."""

    watch_namespaces: tuple[str, ...]
    circuit_namespaces: tuple[str, ...]
    default_interval_seconds: float
    resync_seconds: float

    def configmap_scope(self) -> frozenset[str] | None:
        """Namespaces the operator may write ConfigMaps in; None when a ClusterRole grants all of them."""
        if not self.watch_namespaces:
            return None
        return frozenset(self.watch_namespaces) | frozenset(self.circuit_namespaces)


@dataclass(frozen=True)
class TenancySettings:
    """What a tenant's policy may make the operator read (its credentials are the operator's)."""

    raw_query_namespaces: tuple[str, ...]
    lag_query_template: str
    consumption_query_template: str
    kafka_secrets: bool
    circuit_secret_namespace: str

    def raw_query_allowed(self, namespace: str) -> bool:
        """May a policy in `namespace` send its own PromQL (a read with the operator's credentials)?"""
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.raw_query_namespaces)


@dataclass(frozen=True)
class ApiSettings:
    """The client-side rate limit of the operator's own API writes."""

    qps: float
    burst: int


@dataclass(frozen=True)
class LeaderSettings:
    """Lease-based leader election: one active replica."""

    enabled: bool
    lease_name: str
    lease_namespace: str
    lease_duration_seconds: float
    lease_renew_seconds: float


@dataclass(frozen=True)
class ServerSettings:
    """The operator's own HTTP endpoints (/healthz, /readyz, /metrics)."""

    http_port: int
    liveness_max_age_seconds: float


@dataclass(frozen=True)
class LogSettings:
    level: str
    format: str


@dataclass(frozen=True)
class Settings:
    """The validated settings, one group per concern (Kopf's ``OperatorSettings`` idea); build with
    `Settings.from_env()`. Defaults live in `SETTINGS` only."""

    prometheus: PrometheusSettings
    scope: ScopeSettings
    tenancy: TenancySettings
    api: ApiSettings
    leader: LeaderSettings
    server: ServerSettings
    logging: LogSettings
    extra: Mapping[str, str] = field(default_factory=dict)

    def raw_query_allowed(self, namespace: str) -> bool:
        """Shorthand for ``tenancy.raw_query_allowed`` (the question every signal read asks)."""
        return self.tenancy.raw_query_allowed(namespace)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every `SLUICE_*` variable; raise SettingsError naming the bad one."""
        env = os.environ if env is None else env
        known = {s.env for s in SETTINGS}
        unknown = sorted(k for k in env if k.startswith("SLUICE_") and k not in known)
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )

        def get(name: str) -> str:
            default = next(s.default for s in SETTINGS if s.env == name)
            return env.get(name, default)

        url = get("SLUICE_PROMETHEUS_URL").rstrip("/")
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise SettingsError(
                f"SLUICE_PROMETHEUS_URL={url!r}: expected an http(s) URL such as http://prometheus:9090"
            )
        template = _template("SLUICE_LAG_QUERY_TEMPLATE", get("SLUICE_LAG_QUERY_TEMPLATE"))
        consumption = _template("SLUICE_CONSUMPTION_QUERY_TEMPLATE", get("SLUICE_CONSUMPTION_QUERY_TEMPLATE"))
        level = get("SLUICE_LOG_LEVEL").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise SettingsError(f"SLUICE_LOG_LEVEL={level!r}: expected DEBUG, INFO, WARNING or ERROR")
        log_format = get("SLUICE_LOG_FORMAT").lower()
        if log_format not in ("json", "text"):
            raise SettingsError(f"SLUICE_LOG_FORMAT={log_format!r}: expected json or text")
        duration = _number("SLUICE_LEASE_DURATION_SECONDS", get("SLUICE_LEASE_DURATION_SECONDS"),
                           minimum=2, maximum=600)
        renew = _number("SLUICE_LEASE_RENEW_SECONDS", get("SLUICE_LEASE_RENEW_SECONDS"),
                        minimum=0.2, maximum=300)
        if renew >= duration:
            raise SettingsError(
                f"SLUICE_LEASE_RENEW_SECONDS ({renew:g}) must be below SLUICE_LEASE_DURATION_SECONDS ({duration:g})"
            )
        lease_ns = get("SLUICE_LEASE_NAMESPACE") or env.get("POD_NAMESPACE", "") or "default"
        return cls(
            prometheus=PrometheusSettings(
                url=url,
                bearer_token_file=get("SLUICE_PROMETHEUS_BEARER_TOKEN_FILE"),
                ca_file=get("SLUICE_PROMETHEUS_CA_FILE"),
                insecure_skip_verify=_bool("SLUICE_PROMETHEUS_INSECURE_SKIP_VERIFY",
                                           get("SLUICE_PROMETHEUS_INSECURE_SKIP_VERIFY")),
                query_cache_seconds=_number("SLUICE_QUERY_CACHE_SECONDS", get("SLUICE_QUERY_CACHE_SECONDS"),
                                            minimum=0, maximum=60),
                max_concurrent_queries=int(_number("SLUICE_MAX_CONCURRENT_QUERIES",
                                                   get("SLUICE_MAX_CONCURRENT_QUERIES"), minimum=1, maximum=256)),
            ),
            scope=ScopeSettings(
                watch_namespaces=_list(get("SLUICE_WATCH_NAMESPACES")),
                circuit_namespaces=_list(get("SLUICE_CIRCUIT_NAMESPACES")),
                default_interval_seconds=_number("SLUICE_DEFAULT_INTERVAL_SECONDS",
                                                 get("SLUICE_DEFAULT_INTERVAL_SECONDS"), minimum=1, maximum=3600),
                resync_seconds=_number("SLUICE_RESYNC_SECONDS", get("SLUICE_RESYNC_SECONDS"),
                                       minimum=1, maximum=86400),
            ),
            tenancy=TenancySettings(
                raw_query_namespaces=_list(get("SLUICE_RAW_QUERY_NAMESPACES")),
                lag_query_template=template,
                consumption_query_template=consumption,
                kafka_secrets=_bool("SLUICE_KAFKA_SECRETS", get("SLUICE_KAFKA_SECRETS")),
                circuit_secret_namespace=get("SLUICE_CIRCUIT_SECRET_NAMESPACE") or lease_ns,
            ),
            api=ApiSettings(
                qps=_number("SLUICE_API_QPS", get("SLUICE_API_QPS"), minimum=0, maximum=100000),
                burst=int(_number("SLUICE_API_BURST", get("SLUICE_API_BURST"), minimum=1, maximum=100000)),
            ),
            leader=LeaderSettings(
                enabled=_bool("SLUICE_LEADER_ELECTION", get("SLUICE_LEADER_ELECTION")),
                lease_name=get("SLUICE_LEASE_NAME"),
                lease_namespace=lease_ns,
                lease_duration_seconds=duration,
                lease_renew_seconds=renew,
            ),
            server=ServerSettings(
                http_port=int(_number("SLUICE_HTTP_PORT", get("SLUICE_HTTP_PORT"), minimum=0, maximum=65535)),
                liveness_max_age_seconds=_number("SLUICE_LIVENESS_MAX_AGE_SECONDS",
                                                 get("SLUICE_LIVENESS_MAX_AGE_SECONDS"), minimum=5, maximum=86400),
            ),
            logging=LogSettings(level=level, format=log_format),
        )

    def as_dict(self) -> dict[str, Any]:
        """Every group as a plain dict (for logs and tests)."""
        return {f.name: asdict(getattr(self, f.name)) for f in fields(self) if f.name != "extra"}
