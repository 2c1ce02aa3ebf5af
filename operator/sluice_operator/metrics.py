"""The operator's own Prometheus metrics (served on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sluice.decision import PRIORITIES

ZONE_VALUE = {"green": 0, "yellow": 1, "red": 2}
CIRCUIT_VALUE = {"closed": 0, "half-open": 1, "open": 2, "forced-closed": 3, "forced-open": 4}


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
            "sluice_circuit_transitions_total", "Circuit state transitions.", ["circuit", "from", "to"], registry=r
        )
        self.configmap_writes = Counter(
            "sluice_configmap_writes_total", "ConfigMap writes by outcome.", ["outcome"], registry=r
        )
        self.leader = Gauge("sluice_leader", "1 while this replica holds the leader Lease.", registry=r)
        self.last_cycle = Gauge(
            "sluice_last_cycle_timestamp_seconds", "When the last evaluation cycle completed.", registry=r
        )

    def forget_policy(self, namespace: str, policy: str) -> None:
        for priority in PRIORITIES:
            for gauge in (self.zone, self.delay_ms):
                try:
                    gauge.remove(namespace, policy, priority)
                except KeyError:
                    pass
        try:
            self.backlog.remove(namespace, policy)
        except KeyError:
            pass
