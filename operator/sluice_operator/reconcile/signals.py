"""Turn a policy's or circuit's `source`/`signal` into a Reading, enforcing tenancy rules first.

A namespaced policy's raw PromQL runs with the operator's credentials, i.e. it can read any
tenant's metrics; only namespaces the admin allows may send one. Everyone else uses structured
fields, which become a query from the admin's template with escaped values.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Literal, Protocol

from sluice_operator.api.circuit import CircuitBreakerSpec
from sluice_operator.api.policy import BackpressurePolicySpec, KafkaSource
from sluice_operator.settings import Settings
from sluice_operator.sources.lag_query import LagTemplateError, build_lag_query
from sluice_operator.sources.reading import Reading, SignalStatus

SignalKind = Literal["prometheus", "kafka"]
ProbeResult = Literal["ok", "fail", "unknown"]


class PromReader(Protocol):
    async def read(
        self, query: str, *, aggregate: Literal["max", "sum"] | None = None,
        empty_result: Literal["unavailable", "zero"] = "unavailable", timeout: float | None = None,
    ) -> Reading: ...


#: (namespace, secret name) -> decoded librdkafka settings; raises LookupError when missing.
SecretLoader = Callable[[str, str], Awaitable[Mapping[str, str]]]
KafkaLagReader = Callable[[KafkaSource, Mapping[str, str]], Awaitable[Reading]]
ProbeFn = Callable[[str, Mapping[str, str], float], Awaitable[tuple[bool, str]]]


@dataclass(eq=False)
class Signals:
    """Everything a cycle needs to read signals; built once per operator."""

    settings: Settings
    prometheus: PromReader | None
    _: KW_ONLY
    kafka_lag: KafkaLagReader | None = None
    kafka_probe: ProbeFn | None = None
    secrets: SecretLoader | None = None

    def policy_query(self, namespace: str, spec: BackpressurePolicySpec) -> Reading | str:
        """The PromQL to run for a policy, or a SPEC_ERROR Reading saying why there is none."""
        source = spec.source.prometheus
        assert source is not None
        if source.query is not None:
            if not self.settings.raw_query_allowed(namespace):
                return Reading(
                    SignalStatus.SPEC_ERROR, reason="RawQueryNotAllowed",
                    message=(f"raw PromQL is not allowed in namespace {namespace!r} (operator setting "
                             "SLUICE_RAW_QUERY_NAMESPACES); use source.prometheus.consumerGroup and topics"),
                )
            return source.query
        try:
            return build_lag_query(
                self.settings.tenancy.lag_query_template, source.consumer_group or "", source.topics or []
            )
        except LagTemplateError as error:
            return Reading(SignalStatus.SPEC_ERROR, reason="BadTemplate", message=str(error))

    async def _kafka_config(self, namespace: str, secret_name: str | None) -> Mapping[str, str] | Reading:
        if secret_name is None:
            return {}
        if not self.settings.tenancy.kafka_secrets or self.secrets is None:
            return Reading(
                SignalStatus.SPEC_ERROR, reason="SecretsDisabled",
                message=("secretRef is set but the operator may not read Secrets; install the chart with "
                         "kafka.secrets.enabled=true (SLUICE_KAFKA_SECRETS=true)"),
            )
        try:
            return await self.secrets(namespace, secret_name)
        except LookupError as error:
            return Reading(SignalStatus.UNAVAILABLE, reason="SecretNotFound", message=str(error))
        except ValueError as error:  # a key we refuse to pass to librdkafka, or bad base64
            return Reading(SignalStatus.SPEC_ERROR, reason="SecretInvalid", message=str(error))

    async def read_policy(self, namespace: str, spec: BackpressurePolicySpec) -> tuple[Reading, SignalKind]:
        """Read the backlog of one policy."""
        timeout = spec.polling.timeout_seconds
        if spec.source.prometheus is not None:
            if self.prometheus is None:
                return Reading(SignalStatus.SPEC_ERROR, reason="NoPrometheus",
                               message="no Prometheus URL is configured (SLUICE_PROMETHEUS_URL / --prometheus)"), \
                    "prometheus"
            query = self.policy_query(namespace, spec)
            if isinstance(query, Reading):
                return query, "prometheus"
            source = spec.source.prometheus
            reading = await self.prometheus.read(
                query, aggregate=source.aggregate, empty_result=source.empty_result, timeout=timeout
            )
            return reading, "prometheus"
        kafka = spec.source.kafka
        assert kafka is not None
        if self.kafka_lag is None:
            return Reading(SignalStatus.UNAVAILABLE, reason="NoKafkaClient",
                           message="the kafka source needs confluent-kafka installed in the operator"), "kafka"
        config = await self._kafka_config(namespace, kafka.secret_ref.name if kafka.secret_ref else None)
        if isinstance(config, Reading):
            return config, "kafka"
        return await self.kafka_lag(kafka, config), "kafka"

    async def probe_circuit(self, spec: CircuitBreakerSpec) -> tuple[ProbeResult, str]:
        """One evaluation of a circuit's failure signal: ok, fail, or unknown (neither)."""
        signal = spec.signal
        if signal.prometheus is not None:
            if self.prometheus is None:
                return "unknown", "no Prometheus URL is configured"
            reading = await self.prometheus.read(
                signal.prometheus.query, aggregate=signal.prometheus.aggregate,
                timeout=signal.prometheus.timeout_seconds,
            )
            if not reading.ok or reading.value is None:
                return "unknown", f"{reading.reason}: {reading.message}".strip(": ")
            above = signal.prometheus.fail_when.above
            if reading.value > above:
                return "fail", f"signal {reading.value:g} > {above:g}"
            return "ok", f"signal {reading.value:g} <= {above:g}"
        kafka = signal.kafka
        assert kafka is not None
        if self.kafka_probe is None:
            return "unknown", "the kafka probe needs confluent-kafka installed in the operator"
        config = await self._kafka_config(
            kafka.secret_namespace or self.settings.tenancy.circuit_secret_namespace,
            kafka.secret_ref.name if kafka.secret_ref else None,
        )
        if isinstance(config, Reading):
            return "unknown", config.message
        healthy, reason = await self.kafka_probe(kafka.bootstrap_servers, config, kafka.timeout_seconds)
        return ("ok" if healthy else "fail"), reason
