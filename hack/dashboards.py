"""Generate the Grafana dashboards in charts/sluice/dashboards/ (`python hack/dashboards.py`).

The JSON files are committed (the chart ships them); tests/unit/test_dashboards.py checks they match this
generator, and tests/integration/test_dashboards.py runs every query against a real Prometheus.
Only metric names the operator (operator/sluice_operator/metrics.py) and the SDK (sdk/sluice/metrics.py)
export are used.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "charts" / "sluice" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"
POL = 'namespace=~"$namespace", policy=~"$policy"'
PROD = 'policy_namespace=~"$namespace", policy=~"$policy"'
CIR = 'circuit=~"$circuit"'


def _datasource_var() -> dict[str, Any]:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "options": []}


def _query_var(name: str, label: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS, "query": {"query": query,
            "refId": f"var-{name}"}, "definition": query, "refresh": 2, "includeAll": True, "multi": multi,
            "allValue": ".*", "current": {"selected": True, "text": "All", "value": "$__all"}, "sort": 1,
            "hide": 0, "options": []}


class Board:
    def __init__(self, uid: str, title: str, description: str, variables: list[dict[str, Any]]) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.variables = [_datasource_var(), *variables]
        self.panels: list[dict[str, Any]] = []
        self._x = self._y = 0

    def panel(self, title: str, description: str, targets: list[tuple[str, str]], *, unit: str = "short",
              kind: str = "timeseries", width: int = 12, height: int = 8, **extra: Any) -> None:
        if self._x + width > 24:
            self._x, self._y = 0, self._y + height
        panel: dict[str, Any] = {
            "id": len(self.panels) + 1, "type": kind, "title": title, "description": description,
            "datasource": DS, "gridPos": {"h": height, "w": width, "x": self._x, "y": self._y},
            "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend,
                         "range": True, "instant": False} for i, (expr, legend) in enumerate(targets)],
            "fieldConfig": {"defaults": {"unit": unit, **extra.pop("defaults", {})}, "overrides": []},
            "options": extra.pop("options", {"legend": {"displayMode": "table", "placement": "bottom",
                                                        "showLegend": True},
                                             "tooltip": {"mode": "multi", "sort": "desc"}}),
        }
        panel.update(extra)
        self.panels.append(panel)
        self._x += width

    def json(self) -> dict[str, Any]:
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": ["sluice"],
            "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1, "refresh": "30s",
            "time": {"from": "now-3h", "to": "now"}, "timepicker": {}, "timezone": "",
            "annotations": {"list": []}, "links": [{"title": "Runbooks", "type": "link", "icon": "doc",
                                                    "url": "https://github.com/sluice-dev/sluice/blob/main/docs/runbooks.md"}],
            "templating": {"list": self.variables}, "panels": self.panels,
        }


ZONE_MAPPING = {"mappings": [{"type": "value", "options": {
    "0": {"text": "green", "color": "green"}, "1": {"text": "yellow", "color": "yellow"},
    "2": {"text": "red", "color": "red"}}}]}
CIRCUIT_MAPPING = {"mappings": [{"type": "value", "options": {
    "0": {"text": "closed", "color": "green"}, "1": {"text": "half-open", "color": "yellow"},
    "2": {"text": "open", "color": "red"}, "3": {"text": "forced-closed", "color": "blue"},
    "4": {"text": "forced-open", "color": "purple"}}}]}


def policies() -> Board:
    b = Board("sluice-policies", "Sluice / Policies",
              "Per BackpressurePolicy: is the backlog crossing thresholds, what did the operator decide, and why.",
              [_query_var("namespace", "Namespace", "label_values(sluice_policy_zone, namespace)"),
               _query_var("policy", "Policy", 'label_values(sluice_policy_zone{namespace=~"$namespace"}, policy)')])
    b.panel("Backlog against thresholds", "Raw and smoothed backlog (zones are decided on the smoothed one) "
            "against each priority's green/yellow/red thresholds.", [
                (f"max by (namespace, policy) (sluice_policy_backlog{{{POL}}})", "{{namespace}}/{{policy}} raw"),
                (f"max by (namespace, policy) (sluice_policy_smoothed_backlog{{{POL}}})",
                 "{{namespace}}/{{policy}} smoothed"),
                (f"max by (namespace, policy, priority, zone) (sluice_policy_threshold{{{POL}}})",
                 "{{priority}} {{zone}} threshold"),
            ], width=24)
    b.panel("Zone per priority", "0 green, 1 yellow, 2 red.", [
        (f"max by (namespace, policy, priority) (sluice_policy_zone{{{POL}}})", "{{namespace}}/{{policy}} {{priority}}"),
    ], kind="state-timeline", defaults={**ZONE_MAPPING, "min": 0, "max": 2},
        options={"showValue": "auto", "mergeValues": True, "rowHeight": 0.9, "legend": {"showLegend": False}})
    b.panel("Published delay per priority", "The delay producers apply before each message.", [
        (f"max by (namespace, policy, priority) (sluice_policy_delay_ms{{{POL}}})", "{{namespace}}/{{policy}} {{priority}}"),
    ], unit="ms")
    b.panel("Shed per priority", "1 while a priority's messages are dropped.", [
        (f"max by (namespace, policy, priority) (sluice_policy_shed{{{POL}}})", "{{namespace}}/{{policy}} {{priority}}"),
    ], defaults={"min": 0, "max": 1})
    b.panel("Signal available and fallback", "Signal 1: the backlog was read; fallback 1: the fallback "
            "decides (see SluiceSignalLost).", [
                (f"max by (namespace, policy) (sluice_policy_signal_available{{{POL}}})",
                 "{{namespace}}/{{policy}} signal"),
                (f"max by (namespace, policy) (sluice_policy_fallback{{{POL}}})", "{{namespace}}/{{policy}} fallback"),
            ], defaults={"min": 0, "max": 1})
    b.panel("DrainTime: admitRatio per priority", "Share of its offer each priority may produce "
            "(control.mode DrainTime; 1: not paced).", [
                (f"max by (namespace, policy, priority) (sluice_policy_admit_ratio{{{POL}}})",
                 "{{namespace}}/{{policy}} {{priority}}"),
            ], defaults={"min": 0, "max": 1})
    b.panel("DrainTime: drain rate against admitted and offered", "mu (the consumer's drain rate), R (what "
            "the loop admits in total) and the offer per priority, in msgs/s.", [
                (f"max by (namespace, policy) (sluice_policy_consumption_rate{{{POL}}})",
                 "{{namespace}}/{{policy}} mu"),
                (f"max by (namespace, policy) (sluice_policy_allowed_rate{{{POL}}})", "{{namespace}}/{{policy}} R"),
                (f"max by (namespace, policy, priority) (sluice_policy_offered_rate{{{POL}}})",
                 "{{namespace}}/{{policy}} offered {{priority}}"),
            ])
    b.panel("Decision epoch", "Increases whenever what producers act on changes.", [
        (f"max by (namespace, policy) (sluice_policy_epoch{{{POL}}})", "{{namespace}}/{{policy}}"),
    ])
    b.panel("Producer compliance", "Share of producers applying the current epoch (policies with "
            "spec.compliance; status.compliance).", [
                (f"max by (namespace, policy) (sluice_policy_compliance_ratio{{{POL}}})", "{{namespace}}/{{policy}} ratio"),
                (f"max by (namespace, policy) (sluice_policy_compliance_producers{{{POL}}})",
                 "{{namespace}}/{{policy}} producers"),
            ])
    return b


def circuits() -> Board:
    b = Board("sluice-circuits", "Sluice / Circuits",
              "Per CircuitBreaker: is it open, why did it change, and how close is the failure signal to tripping it.",
              [_query_var("circuit", "Circuit", "label_values(sluice_circuit_state, circuit)")])
    b.panel("State over time", "closed, half-open, open, forced-closed, forced-open.", [
        (f"max by (circuit) (sluice_circuit_state{{{CIR}}})", "{{circuit}}"),
    ], kind="state-timeline", width=24, defaults={**CIRCUIT_MAPPING, "min": 0, "max": 4},
        options={"showValue": "auto", "mergeValues": True, "rowHeight": 0.9, "legend": {"showLegend": False}})
    b.panel("Transitions by cause", "State changes and their cause (failures, recovery_timeout, "
            "healthy_probes, probe_failed, override); the full reason is in the circuit's Events.", [
                (f"sum by (circuit, from, to, cause) (increase(sluice_circuit_transitions_total{{{CIR}}}[{RI}]))",
                 "{{circuit}} {{from}} -> {{to}} ({{cause}})"),
            ], defaults={"custom": {"drawStyle": "bars"}})
    b.panel("Failures against threshold", "Failing evaluations inside the trip window; the circuit opens when "
            "they reach failureThreshold.", [
                (f"max by (circuit) (sluice_circuit_failures{{{CIR}}})", "{{circuit}} failures"),
                (f"max by (circuit) (sluice_circuit_failure_threshold{{{CIR}}})", "{{circuit}} threshold"),
            ])
    b.panel("Producers' view of the circuit", "Circuit state the producers apply (0 closed, 1 half-open, 2 open).", [
        ("max by (policy_namespace, policy) (sluice_producer_circuit_state)", "{{policy_namespace}}/{{policy}}"),
    ], width=24, defaults={"min": 0, "max": 2})
    return b


def producers() -> Board:
    b = Board("sluice-producers", "Sluice / Producers",
              "SDK producers per policy: what happened to their messages, how long they waited, and whether they "
              "apply the current decision.",
              [_query_var("namespace", "Policy namespace", "label_values(sluice_producer_applied_epoch, policy_namespace)"),
               _query_var("policy", "Policy",
                          'label_values(sluice_producer_applied_epoch{policy_namespace=~"$namespace"}, policy)')])
    outcomes = "sent|delayed|shed|rejected_open|rejected_stale|rejected_paced|dead_lettered|failed|in_doubt"
    b.panel("Messages by outcome and priority", "Per second: sent, delayed, shed, rejected (circuit open or "
            "stale decision), dead-lettered, failed, in doubt.", [
                (f'sum by (priority, outcome) (rate(sluice_producer_messages_total{{{PROD}, outcome=~"{outcomes}"}}[{RI}]))',
                 "{{priority}} {{outcome}}"),
            ], unit="ops", width=24)
    b.panel("Delay quantiles", "p50 and p99 of the delays applied before producing.", [
        (f"histogram_quantile(0.5, sum by (le, priority) (rate(sluice_producer_delay_seconds_bucket{{{PROD}}}[{RI}])))",
         "{{priority}} p50"),
        (f"histogram_quantile(0.99, sum by (le, priority) (rate(sluice_producer_delay_seconds_bucket{{{PROD}}}[{RI}])))",
         "{{priority}} p99"),
    ], unit="s")
    b.panel("Delay histogram", "Delays applied, by bucket.", [
        (f"sum by (le) (increase(sluice_producer_delay_seconds_bucket{{{PROD}}}[{RI}]))", "{{le}}"),
    ], kind="heatmap", unit="s", options={"calculate": False, "yAxis": {"unit": "s"}, "cellGap": 1,
                                           "color": {"mode": "scheme", "scheme": "Oranges"}},
        targets_format="heatmap")
    b.panel("Decision age", "Seconds since each producer received the decision in force (SluiceProducersStale "
            "fires above 300 s).", [
                (f"max by (policy_namespace, policy, instance) (sluice_producer_decision_age_seconds{{{PROD}}})",
                 "{{instance}}"),
            ], unit="s")
    b.panel("Applied epoch against the policy's epoch", "Lowest and highest epoch producers apply, and the "
            "epoch the operator published.", [
                (f"min by (policy_namespace, policy) (sluice_producer_applied_epoch{{{PROD}}})",
                 "{{policy_namespace}}/{{policy}} oldest applied"),
                (f"max by (policy_namespace, policy) (sluice_producer_applied_epoch{{{PROD}}})",
                 "{{policy_namespace}}/{{policy}} newest applied"),
                (f"max by (namespace, policy) (sluice_policy_epoch{{{POL}}})", "{{namespace}}/{{policy}} policy epoch"),
            ])
    b.panel("Messages in flight", "Accepted and not yet resolved, per producer.", [
        (f"sum by (instance) (sluice_producer_in_flight{{{PROD}}})", "{{instance}}"),
    ])
    b.panel("Recreated producers and decision errors", "Producers replaced after fatal errors; unreadable or "
            "invalid decision documents skipped.", [
                (f"sum by (instance) (increase(sluice_producer_recreated_total{{{PROD}}}[{RI}]))",
                 "{{instance}} recreated"),
                (f"sum by (instance) (increase(sluice_producer_decision_errors_total{{{PROD}}}[{RI}]))",
                 "{{instance}} decision errors"),
            ])
    b.panel("Broker throttling", "Seconds per second producers held messages for broker quota throttles.", [
        (f"sum by (instance) (rate(sluice_producer_broker_throttle_seconds_total{{{PROD}}}[{RI}]))", "{{instance}}"),
    ], unit="s")
    return b


def operator() -> Board:
    b = Board("sluice-operator", "Sluice / Operator",
              "The operator itself: is it leading, evaluating on time, reading its signals and writing decisions.", [])
    b.panel("Evaluations", "Per second, by kind and result.", [
        (f"sum by (kind, result) (rate(sluice_evaluations_total[{RI}]))", "{{kind}} {{result}}"),
    ], unit="ops")
    b.panel("Evaluation duration", "p50 and p99 of reading the signal, deciding and publishing.", [
        (f"histogram_quantile(0.5, sum by (le, kind) (rate(sluice_evaluation_duration_seconds_bucket[{RI}])))",
         "{{kind}} p50"),
        (f"histogram_quantile(0.99, sum by (le, kind) (rate(sluice_evaluation_duration_seconds_bucket[{RI}])))",
         "{{kind}} p99"),
    ], unit="s")
    b.panel("Source errors by reason", "Signal reads that gave no usable number.", [
        (f"sum by (source, reason) (rate(sluice_source_errors_total[{RI}]))", "{{source}} {{reason}}"),
    ], unit="ops")
    b.panel("ConfigMap writes by outcome", "Decision and circuit documents written (only on change and TTL refresh).", [
        (f"sum by (outcome) (rate(sluice_configmap_writes_total[{RI}]))", "{{outcome}}"),
    ], unit="ops")
    b.panel("Leader", "1 on the replica holding the leader Lease.", [
        ("max by (instance) (sluice_leader)", "{{instance}}"),
    ], defaults={"min": 0, "max": 1})
    b.panel("Seconds since the last evaluation", "SluiceOperatorDown fires above the liveness window (120 s).", [
        ("time() - max(sluice_last_cycle_timestamp_seconds)", "last cycle"),
    ], unit="s")
    b.panel("API requests by method and code", "Requests to the Kubernetes API server, per second.", [
        (f"sum by (method, code) (rate(sluice_api_requests_total[{RI}]))", "{{method}} {{code}}"),
    ], unit="reqps", width=24)
    return b


BOARDS = {"policies": policies, "circuits": circuits, "producers": producers, "operator": operator}


def render() -> dict[str, str]:
    """file name -> JSON text."""
    out: dict[str, str] = {}
    for name, build in BOARDS.items():
        board = build().json()
        for panel in board["panels"]:
            fmt = panel.pop("targets_format", None)
            if fmt:
                for target in panel["targets"]:
                    target["format"] = fmt
        out[f"{name}.json"] = json.dumps(board, indent=2, sort_keys=False) + "\n"
    return out


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(OUT / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
