"""The operator's own Prometheus metrics (served on /metrics)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sluice.decision import PRIORITIES

ZONE_VALUE = {"green": 0, "yellow": 1, "red": 2}
CIRCUIT_VALUE = {"closed": 0, "half-open": 1, "open": 2, "forced-closed": 3, "forced-open": 4}


class PolicySeries:
    """One policy's gauge children, looked up once, and the value each was last set to.

    A steady cycle sets ~30 gauges per policy; `Gauge.labels()` validates and locks on every call,
    which cost more than the evaluation itself. `set` binds the child on first use and skips values
    that did not change (`forget_policy` drops the whole object with the label sets).
    """

    __slots__ = ("_children", "_labels", "_last")

    def __init__(self, namespace: str, policy: str) -> None:
        self._labels = (namespace, policy)
        self._children: dict[tuple[Gauge, tuple[str, ...]], Any] = {}
        self._last: dict[tuple[Gauge, tuple[str, ...]], float] = {}

    def set(self, gauge: Gauge, value: float, *labels: str) -> None:
        """``gauge.labels(namespace, policy, *labels).set(value)``, done only when the value changed."""
        key = (gauge, labels)
        if self._last.get(key) == value:  # NaN never equals: always set, as before
            return
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = gauge.labels(*self._labels, *labels)
        child.set(value)
        self._last[key] = value


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
        self.zone = Gauge(
            "sluice_policy_zone", "Zone per policy and priority (0 green, 1 yellow, 2 red).",
            ["namespace", "policy", "priority"], registry=r,
        )
        self.delay_ms = Gauge(
            "sluice_policy_delay_ms", "Published delay per policy and priority.",
            ["namespace", "policy", "priority"], registry=r,
        )
        self.backlog = Gauge("sluice_policy_backlog", "Last backlog read.", ["namespace", "policy"], registry=r)
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
        pol = ["namespace", "policy"]
        self.smoothed_backlog = Gauge(
            "sluice_policy_smoothed_backlog", "Backlog after smoothing (what zones are decided on).", pol, registry=r
        )
        self.threshold = Gauge(
            "sluice_policy_threshold", "Configured backlog threshold per priority and zone boundary.",
            [*pol, "priority", "zone"], registry=r,
        )
        self.shed = Gauge("sluice_policy_shed", "1 while a priority is shed.", [*pol, "priority"], registry=r)
        self.signal_available = Gauge(
            "sluice_policy_signal_available", "1 while the policy's signal is readable.", pol, registry=r
        )
        self.fallback = Gauge("sluice_policy_fallback", "1 while the fallback decides.", pol, registry=r)
        self.epoch = Gauge("sluice_policy_epoch", "Epoch of the published decision.", pol, registry=r)
        self.last_good = Gauge(
            "sluice_policy_signal_last_good_timestamp_seconds",
            "When the signal was last readable (first evaluation when it never was).", pol, registry=r,
        )
        self.stale_after = Gauge(
            "sluice_policy_stale_after_seconds", "The policy's fallback.staleAfterSeconds.", pol, registry=r
        )
        self.condition = Gauge(
            "sluice_policy_condition", "1 for each current condition of a policy, with its status and reason.",
            [*pol, "type", "status", "reason"], registry=r,
        )
        self.compliance_producers = Gauge(
            "sluice_policy_compliance_producers", "Producers reporting on the policy (status.compliance).",
            pol, registry=r,
        )
        self.compliance_ratio = Gauge(
            "sluice_policy_compliance_ratio", "Share of producers applying the current epoch.", pol, registry=r
        )
        # DrainTime control (docs: README "Two ways to control").
        self.admit_ratio = Gauge(
            "sluice_policy_admit_ratio", "Published admitRatio per priority (1: not paced).",
            [*pol, "priority"], registry=r,
        )
        self.offered_rate = Gauge(
            "sluice_policy_offered_rate", "Offered msgs/s per priority the rate loop measured.",
            [*pol, "priority"], registry=r,
        )
        self.allowed_rate = Gauge(
            "sluice_policy_allowed_rate", "Total msgs/s the rate loop admits (R).", pol, registry=r
        )
        self.consumption_rate = Gauge(
            "sluice_policy_consumption_rate", "The consumer's drain rate (mu, smoothed, msgs/s).", pol, registry=r
        )
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
        self._conditions: dict[tuple[str, str], set[tuple[str, str, str]]] = {}
        self._policies: dict[tuple[str, str], PolicySeries] = {}
        self._bound: dict[tuple[Any, tuple[str, ...]], Any] = {}

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

    def set_conditions(self, namespace: str, policy: str, conditions: Iterable[dict[str, Any]]) -> None:
        """Export the policy's current conditions, dropping label sets that no longer hold."""
        now = {(str(c.get("type")), str(c.get("status")), str(c.get("reason") or "")) for c in conditions}
        before = self._conditions.get((namespace, policy), set())
        if now == before and (namespace, policy) in self._conditions:
            return  # the same label sets, all already at 1
        for gone in before - now:
            try:
                self.condition.remove(namespace, policy, *gone)
            except KeyError:
                pass
        for labels in now:
            self.condition.labels(namespace, policy, *labels).set(1)
        self._conditions[(namespace, policy)] = now

    def forget_policy(self, namespace: str, policy: str) -> None:
        self._policies.pop((namespace, policy), None)
        for priority in PRIORITIES:
            for gauge in (self.zone, self.delay_ms, self.shed, self.admit_ratio, self.offered_rate):
                try:
                    gauge.remove(namespace, policy, priority)
                except KeyError:
                    pass
            for zone in ("green", "yellow", "red"):
                try:
                    self.threshold.remove(namespace, policy, priority, zone)
                except KeyError:
                    pass
        for gauge in (self.backlog, self.smoothed_backlog, self.signal_available, self.fallback, self.epoch,
                      self.last_good, self.stale_after, self.compliance_producers, self.compliance_ratio,
                      self.allowed_rate, self.consumption_rate):
            try:
                gauge.remove(namespace, policy)
            except KeyError:
                pass
        self.set_conditions(namespace, policy, [])
        self._conditions.pop((namespace, policy), None)


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
