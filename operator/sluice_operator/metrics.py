"""The operator's own Prometheus metrics (served on /metrics)."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

ZONE_VALUE = {"green": 0, "yellow": 1, "red": 2}
CIRCUIT_VALUE = {"closed": 0, "half-open": 1, "open": 2, "forced-closed": 3, "forced-open": 4}


class PolicyGauge:
    """A per-policy gauge family: named and described here, its samples made at scrape time.

    The operator keeps no `prometheus_client` child per policy and label set: ~30 children per policy
    (each a Gauge with its own lock and value) were most of the heap at 10,000 policies, and the
    garbage collector scanned them all again and again. Like kube-state-metrics, the values live in
    each policy's `PolicySeries` and `PolicyCollector` turns them into samples when /metrics is read.
    """

    __slots__ = ("documentation", "labelnames", "name")

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = ("namespace", "policy", *labelnames)


class PolicySeries:
    """The last value of each of one policy's gauges, by (gauge, labels beyond namespace and policy)."""

    __slots__ = ("conditions", "labels", "values")

    def __init__(self, namespace: str, policy: str) -> None:
        self.labels = (namespace, policy)
        self.values: dict[tuple[PolicyGauge, tuple[str, ...]], float] = {}
        #: The policy's current conditions (its live collection, read at scrape time):
        #: `sluice_policy_condition{type, status, reason}` is 1 for each.
        self.conditions: Collection[Mapping[str, Any]] = ()

    def set(self, gauge: PolicyGauge, value: float, *labels: str) -> None:
        """The sample ``gauge{namespace, policy, *labels}`` reads ``value`` from now on."""
        self.values[(gauge, labels)] = value


class PolicyCollector:
    """Makes the per-policy samples from every `PolicySeries` when the registry is collected.

    Collection may run on another thread (a test's HTTP server): it reads snapshots of the dicts.
    """

    def __init__(self, gauges: Iterable[PolicyGauge], condition: PolicyGauge,
                 policies: dict[tuple[str, str], PolicySeries]) -> None:
        self.gauges = (*gauges, condition)
        self.condition = condition
        self.policies = policies

    def _families(self) -> dict[PolicyGauge, GaugeMetricFamily]:
        return {g: GaugeMetricFamily(g.name, g.documentation, labels=g.labelnames) for g in self.gauges}

    def describe(self) -> Iterator[Metric]:
        """The family names, so that the registry refuses a duplicate at registration."""
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        condition = families[self.condition]
        for series in list(self.policies.values()):
            for (gauge, extra), value in list(series.values.items()):
                families[gauge].add_metric([*series.labels, *extra], value)
            for c in list(series.conditions):
                condition.add_metric(
                    [*series.labels, str(c.get("type")), str(c.get("status")), str(c.get("reason") or "")], 1)
        yield from families.values()


class OperatorMetrics:
    """One set per operator instance, on its own registry (tests run several in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.evaluations = Counter(
            "sluice_evaluations_total", "Policy and circuit evaluations.", ["kind", "result"], registry=r
        )
        self.evaluation_seconds = Histogram(
            "sluice_evaluation_duration_seconds", "Time to read the signal, decide and publish.",
            ["kind"], registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.source_errors = Counter(
            "sluice_source_errors_total", "Signal reads that gave no usable number, by reason.",
            ["source", "reason"], registry=r,
        )
        by_priority = ("priority",)
        self.zone = PolicyGauge(
            "sluice_policy_zone", "Zone per policy and priority (0 green, 1 yellow, 2 red).", by_priority)
        self.delay_ms = PolicyGauge("sluice_policy_delay_ms", "Published delay per policy and priority.", by_priority)
        self.backlog = PolicyGauge("sluice_policy_backlog", "Last backlog read.")
        self.circuit_state = Gauge(
            "sluice_circuit_state",
            "Circuit state (0 closed, 1 half-open, 2 open, 3 forced-closed, 4 forced-open).",
            ["circuit"], registry=r,
        )
        self.circuit_transitions = Counter(
            "sluice_circuit_transitions_total", "Circuit state transitions, by cause.",
            ["circuit", "from", "to", "cause"], registry=r,
        )
        self.configmap_writes = Counter(
            "sluice_configmap_writes_total", "ConfigMap writes by outcome.", ["outcome"], registry=r
        )
        self.leader = Gauge("sluice_leader", "1 while this replica holds the leader Lease.", registry=r)
        self.last_cycle = Gauge(
            "sluice_last_cycle_timestamp_seconds", "When the last evaluation cycle completed.", registry=r
        )

        # What the dashboards and alerts need beyond the above (docs/runbooks.md).
        self.smoothed_backlog = PolicyGauge(
            "sluice_policy_smoothed_backlog", "Backlog after smoothing (what zones are decided on).")
        self.threshold = PolicyGauge(
            "sluice_policy_threshold", "Configured backlog threshold per priority and zone boundary.",
            ("priority", "zone"))
        self.shed = PolicyGauge("sluice_policy_shed", "1 while a priority is shed.", by_priority)
        self.signal_available = PolicyGauge(
            "sluice_policy_signal_available", "1 while the policy's signal is readable.")
        self.fallback = PolicyGauge("sluice_policy_fallback", "1 while the fallback decides.")
        self.epoch = PolicyGauge("sluice_policy_epoch", "Epoch of the published decision.")
        self.last_good = PolicyGauge(
            "sluice_policy_signal_last_good_timestamp_seconds",
            "When the signal was last readable (first evaluation when it never was).")
        self.stale_after = PolicyGauge(
            "sluice_policy_stale_after_seconds", "The policy's fallback.staleAfterSeconds.")
        condition = PolicyGauge(
            "sluice_policy_condition", "1 for each current condition of a policy, with its status and reason.",
            ("type", "status", "reason"))
        self.compliance_producers = PolicyGauge(
            "sluice_policy_compliance_producers", "Producers reporting on the policy (status.compliance).")
        self.compliance_ratio = PolicyGauge(
            "sluice_policy_compliance_ratio", "Share of producers applying the current epoch.")
        # DrainTime control (docs: README "Two ways to control").
        self.admit_ratio = PolicyGauge(
            "sluice_policy_admit_ratio", "Published admitRatio per priority (1: not paced).", by_priority)
        self.offered_rate = PolicyGauge(
            "sluice_policy_offered_rate", "Offered msgs/s per priority the rate loop measured.", by_priority)
        self.allowed_rate = PolicyGauge("sluice_policy_allowed_rate", "Total msgs/s the rate loop admits (R).")
        self.consumption_rate = PolicyGauge(
            "sluice_policy_consumption_rate", "The consumer's drain rate (mu, smoothed, msgs/s).")
        self.circuit_failures = Gauge(
            "sluice_circuit_failures", "Failing evaluations inside the trip window.", ["circuit"], registry=r
        )
        self.circuit_failure_threshold = Gauge(
            "sluice_circuit_failure_threshold", "The circuit's failureThreshold.", ["circuit"], registry=r
        )
        self.api_requests = Counter(
            "sluice_api_requests_total", "Kubernetes API requests by method and status code.",
            ["method", "code"], registry=r,
        )
        self._policies: dict[tuple[str, str], PolicySeries] = {}
        self._bound: dict[tuple[Any, tuple[str, ...]], Any] = {}
        r.register(PolicyCollector(
            (g for g in vars(self).values() if isinstance(g, PolicyGauge)), condition, self._policies))

    def policy(self, namespace: str, policy: str) -> PolicySeries:
        """The per-policy gauges of one policy (kept until `forget_policy`)."""
        series = self._policies.get((namespace, policy))
        if series is None:
            series = self._policies[(namespace, policy)] = PolicySeries(namespace, policy)
        return series

    def bound(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)`` for the operator-wide metrics, looked up once per label set."""
        key = (metric, labels)
        child = self._bound.get(key)
        if child is None:
            child = self._bound[key] = metric.labels(*labels)
        return child

    def set_conditions(self, namespace: str, policy: str, conditions: Collection[Mapping[str, Any]]) -> None:
        """Export these conditions from now on: a live collection (e.g. a dict's values) is read at each
        scrape, so a cycle passes it without copying; a label set that no longer holds goes with it."""
        self.policy(namespace, policy).conditions = conditions

    def forget_policy(self, namespace: str, policy: str) -> None:
        """Drop every series of a deleted policy."""
        self._policies.pop((namespace, policy), None)


def transition_cause(reason: str) -> str:
    """A bounded label for a circuit transition's free-text reason."""
    if "override" in reason or "Force" in reason:
        return "override"
    if "failures within" in reason:
        return "failures"
    if "recovery timeout" in reason:
        return "recovery_timeout"
    if "healthy probe" in reason:
        return "healthy_probes"
    if "failed" in reason or "fail" in reason:
        return "probe_failed"
    return "other"
