"""Operator settings from `SLUICE_*` environment variables, validated once at start.

A bad value stops the operator with one message naming the variable, the value and what is accepted,
rather than a traceback minutes later in some handler. Each variable is declared on the field it
fills (`_env`): its default, how its text is checked and read, and its help text.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any, get_type_hints
from urllib.parse import urlparse

from typing_extensions import dataclass_transform

from sluice_operator.sources.lag_query import DEFAULT_CONSUMPTION_TEMPLATE, DEFAULT_LAG_TEMPLATE


class SettingsError(ValueError):
    """A `SLUICE_*` variable has a value we cannot use."""


#: Turns a variable's text into its value: (variable name, text) -> value, or SettingsError.
Parse = Callable[[str, str], Any]


def _text(_name: str, raw: str) -> str:
    return raw


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={raw!r}: expected true or false")


def _number(minimum: float, maximum: float, *, whole: bool = False) -> Parse:
    """A number between `minimum` and `maximum`; `whole`: truncated to an int (ports, counts)."""

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected a number") from None
        if not minimum <= value <= maximum:
            raise SettingsError(f"{name}={raw!r}: expected a number between {minimum:g} and {maximum:g}")
        return int(value) if whole else value

    return parse


def _one_of(*allowed: str) -> Parse:
    """One of `allowed` in any letter case (they are written all upper or all lower case)."""
    upper = allowed[0].isupper()
    expected = f"{', '.join(allowed[:-1])} or {allowed[-1]}"

    def parse(name: str, raw: str) -> str:
        value = raw.upper() if upper else raw.lower()
        if value not in allowed:
            raise SettingsError(f"{name}={value!r}: expected {expected}")
        return value

    return parse


def _url(name: str, raw: str) -> str:
    url = raw.rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingsError(f"{name}={url!r}: expected an http(s) URL such as http://prometheus:9090")
    return url


def _template(name: str, raw: str) -> str:
    """A PromQL template for structured sources: it must use both placeholders."""
    if "{group}" not in raw or "{topics}" not in raw:
        raise SettingsError(
            f"{name} must contain the placeholders {{group}} and {{topics}} (double other braces: {{{{ and }}}})"
        )
    return raw


def _list(_name: str, raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class Setting:
    """One variable, its default (written here only), how it is read, and its help text.

    The README's settings table and the chart's rendered env are checked against `SETTINGS`
    (tests/unit/test_settings.py, tests/unit/test_chart.py).
    """

    env: str
    default: str
    parse: Parse
    help: str

    def read(self, env: Mapping[str, str]) -> Any:
        """The value in `env` (the default when unset); SettingsError naming the variable when unusable."""
        return self.parse(self.env, env.get(self.env, self.default))


def _env(env: str, default: str, parse: Parse, help: str) -> Any:
    """Declare the variable that fills a settings field (kept in the field's metadata)."""
    return field(metadata={Setting: Setting(env, default, parse, help)})


def _setting(group_field: Field[Any]) -> Setting:
    setting: Setting = group_field.metadata[Setting]
    return setting


@dataclass_transform(frozen_default=True, field_specifiers=(field, _env))
class _Group:
    """A group of settings (`Settings` has one per concern): each subclass is a frozen dataclass."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(frozen=True)(cls)

    @classmethod
    def settings(cls) -> tuple[Setting, ...]:
        """The variables of this group, in field order."""
        return tuple(_setting(f) for f in fields(cls))  # type: ignore[arg-type]

    @classmethod
    def values(cls, env: Mapping[str, str]) -> dict[str, Any]:
        """Field name -> value read from `env`."""
        return {f.name: _setting(f).read(env) for f in fields(cls)}  # type: ignore[arg-type]


class PrometheusSettings(_Group):
    """Where the signals come from, and how hard the operator may lean on it."""

    url: str = _env("SLUICE_PROMETHEUS_URL", "http://prometheus-operated.monitoring.svc:9090", _url,
                    "Base URL of the Prometheus HTTP API the operator queries.")
    bearer_token_file: str = _env("SLUICE_PROMETHEUS_BEARER_TOKEN_FILE", "", _text,
                                  "File holding a bearer token sent to Prometheus (empty: none).")
    ca_file: str = _env("SLUICE_PROMETHEUS_CA_FILE", "", _text, "CA bundle for a TLS Prometheus (empty: system CAs).")
    insecure_skip_verify: bool = _env("SLUICE_PROMETHEUS_INSECURE_SKIP_VERIFY", "false", _bool,
                                      "Skip TLS verification towards Prometheus.")
    query_cache_seconds: float = _env(
        "SLUICE_QUERY_CACHE_SECONDS", "1", _number(0, 60),
        "Policies with the same query inside this window share one Prometheus request.")
    max_concurrent_queries: int = _env(
        "SLUICE_MAX_CONCURRENT_QUERIES", "8", _number(1, 256, whole=True),
        "Size of the thread pool for Prometheus and Kafka calls.")


class ScopeSettings(_Group):
    """Which objects the operator watches, and how often it looks at them."""

    watch_namespaces: tuple[str, ...] = _env(
        "SLUICE_WATCH_NAMESPACES", "", _list,
        "Comma-separated namespaces to watch for BackpressurePolicies; empty watches cluster-wide.")
    circuit_namespaces: tuple[str, ...] = _env(
        "SLUICE_CIRCUIT_NAMESPACES", "", _list,
        "Only with SLUICE_WATCH_NAMESPACES: extra namespaces where CircuitBreakers may publish "
        "(the chart's circuitNamespaces). Selected namespaces outside both lists are skipped, and the "
        "circuit's Published condition names them.")
    default_interval_seconds: float = _env(
        "SLUICE_DEFAULT_INTERVAL_SECONDS", "5", _number(1, 3600),
        "Polling interval for policies that do not set spec.polling.intervalSeconds.")
    resync_seconds: float = _env(
        "SLUICE_RESYNC_SECONDS", "60", _number(1, 86400),
        "How often the objects the operator tracks are checked against a fresh list, so one deleted "
        "while a watch was down (Kopf reports no deletion after a relist) stops being evaluated.")

    def configmap_scope(self) -> frozenset[str] | None:
        """Namespaces the operator may write ConfigMaps in; None when a ClusterRole grants all of them."""
        if not self.watch_namespaces:
            return None
        return frozenset(self.watch_namespaces) | frozenset(self.circuit_namespaces)


class TenancySettings(_Group):
    """What a tenant's policy may make the operator read (its credentials are the operator's)."""

    raw_query_namespaces: tuple[str, ...] = _env(
        "SLUICE_RAW_QUERY_NAMESPACES", "*", _list,
        "Comma-separated globs of namespaces whose policies may use a raw PromQL `query`. "
        "Others must use consumerGroup + topics. Empty allows none.")
    lag_query_template: str = _env(
        "SLUICE_LAG_QUERY_TEMPLATE", DEFAULT_LAG_TEMPLATE, _template,
        "PromQL template for structured sources; {group} and {topics} are filled with escaped values.")
    consumption_query_template: str = _env(
        "SLUICE_CONSUMPTION_QUERY_TEMPLATE", DEFAULT_CONSUMPTION_TEMPLATE, _template,
        "PromQL template for the consumer's drain rate (msgs/s) of structured sources, read by "
        "DrainTime policies; {group} and {topics} as in SLUICE_LAG_QUERY_TEMPLATE.")
    kafka_secrets: bool = _env("SLUICE_KAFKA_SECRETS", "false", _bool,
                               "Allow kafka sources to read credentials from the Secret named in secretRef.")
    circuit_secret_namespace: str = _env(
        "SLUICE_CIRCUIT_SECRET_NAMESPACE", "", _text,
        "Namespace of Secrets referenced by CircuitBreakers (empty: the Lease namespace).")

    def raw_query_allowed(self, namespace: str) -> bool:
        """May a policy in `namespace` send its own PromQL (a read with the operator's credentials)?"""
        return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in self.raw_query_namespaces)


class ApiSettings(_Group):
    """The client-side rate limit of the operator's own API writes."""

    qps: float = _env("SLUICE_API_QPS", "100", _number(0, 100000),
                      "Sustained rate of the operator's own API writes (status, ConfigMaps, Events) per second; "
                      "0 turns the limit off. Lease renewals are never held back.")
    burst: int = _env("SLUICE_API_BURST", "200", _number(1, 100000, whole=True),
                      "Writes allowed at once above SLUICE_API_QPS before the limit applies.")


class LeaderSettings(_Group):
    """Lease-based leader election: one active replica."""

    enabled: bool = _env("SLUICE_LEADER_ELECTION", "true", _bool,
                         "Elect one active replica through a coordination.k8s.io Lease.")
    lease_name: str = _env("SLUICE_LEASE_NAME", "sluice-operator-leader", _text, "Name of the leader-election Lease.")
    lease_namespace: str = _env(
        "SLUICE_LEASE_NAMESPACE", "", _text,
        "Namespace of the Lease (empty: the pod's namespace from POD_NAMESPACE, else 'default').")
    lease_duration_seconds: float = _env("SLUICE_LEASE_DURATION_SECONDS", "15", _number(2, 600),
                                         "A standby takes over this long after renewals stop.")
    lease_renew_seconds: float = _env("SLUICE_LEASE_RENEW_SECONDS", "5", _number(0.2, 300),
                                      "How often the leader renews its Lease.")


class ServerSettings(_Group):
    """The operator's own HTTP endpoints (/healthz, /readyz, /metrics)."""

    http_port: int = _env("SLUICE_HTTP_PORT", "8080", _number(0, 65535, whole=True),
                          "Port of /healthz, /readyz and /metrics.")
    liveness_max_age_seconds: float = _env(
        "SLUICE_LIVENESS_MAX_AGE_SECONDS", "120", _number(5, 86400),
        "Liveness fails when no evaluation cycle completed for this long (while leading).")


class LogSettings(_Group):
    """How the operator logs (`sluice_operator.logs`)."""

    level: str = _env("SLUICE_LOG_LEVEL", "INFO", _one_of("DEBUG", "INFO", "WARNING", "ERROR"),
                      "DEBUG, INFO, WARNING or ERROR.")
    format: str = _env("SLUICE_LOG_FORMAT", "json", _one_of("json", "text"), "json (one object per line) or text.")


@dataclass(frozen=True)
class Settings:
    """The validated settings, one group per concern (Kopf's ``OperatorSettings`` idea); build with
    `Settings.from_env()`. Defaults live in the groups' `_env` declarations only."""

    prometheus: PrometheusSettings
    scope: ScopeSettings
    tenancy: TenancySettings
    api: ApiSettings
    leader: LeaderSettings
    server: ServerSettings
    logging: LogSettings
    extra: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def groups() -> Iterator[tuple[str, type[_Group]]]:
        """(field name, group class) of every group, in field order."""
        types = get_type_hints(Settings)
        return ((f.name, types[f.name]) for f in fields(Settings) if f.name != "extra")

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
        values = {name: group.values(env) for name, group in cls.groups()}
        leader, tenancy = values["leader"], values["tenancy"]
        duration, renew = leader["lease_duration_seconds"], leader["lease_renew_seconds"]
        if renew >= duration:
            raise SettingsError(
                f"SLUICE_LEASE_RENEW_SECONDS ({renew:g}) must be below SLUICE_LEASE_DURATION_SECONDS ({duration:g})"
            )
        leader["lease_namespace"] = leader["lease_namespace"] or env.get("POD_NAMESPACE", "") or "default"
        tenancy["circuit_secret_namespace"] = tenancy["circuit_secret_namespace"] or leader["lease_namespace"]
        built: dict[str, Any] = {name: group(**values[name]) for name, group in cls.groups()}
        return cls(**built)

    def as_dict(self) -> dict[str, Any]:
        """Every group as a plain dict (for logs and tests)."""
        return {f.name: asdict(getattr(self, f.name)) for f in fields(self) if f.name != "extra"}


#: Every variable the operator reads, group by group.
SETTINGS: tuple[Setting, ...] = tuple(s for _name, group in Settings.groups() for s in group.settings())
