"""The per-policy series: made at scrape time from each policy's values, gone with the policy."""

from __future__ import annotations

import math

import pytest
from prometheus_client import Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sluice_operator.metrics import OperatorMetrics


def samples(metrics: OperatorMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = generate_latest(metrics.registry).decode()
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def labels(**kv: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kv.items()))


def test_a_policy_value_is_exported_with_its_labels_and_type() -> None:
    m = OperatorMetrics()
    m.policy("orders", "checkout").set(m.zone, 2, "medium")
    m.policy("orders", "checkout").set(m.backlog, 3000)
    text = generate_latest(m.registry).decode()
    assert "# TYPE sluice_policy_zone gauge" in text
    assert "# HELP sluice_policy_zone Zone per policy and priority (0 green, 1 yellow, 2 red)." in text
    assert 'sluice_policy_zone{namespace="orders",policy="checkout",priority="medium"} 2.0' in text
    assert samples(m, "sluice_policy_backlog") == {labels(namespace="orders", policy="checkout"): 3000}


def test_the_last_value_set_wins_and_nan_is_exported_as_nan() -> None:
    m = OperatorMetrics()
    series = m.policy("ns", "p")
    series.set(m.offered_rate, 5.0, "high")
    series.set(m.offered_rate, float("nan"), "high")
    series.set(m.epoch, 1)
    series.set(m.epoch, 7)
    assert math.isnan(samples(m, "sluice_policy_offered_rate")[labels(namespace="ns", policy="p", priority="high")])
    assert samples(m, "sluice_policy_epoch") == {labels(namespace="ns", policy="p"): 7}


def test_conditions_export_the_current_label_sets_only() -> None:
    m = OperatorMetrics()
    m.set_conditions("ns", "p", [{"type": "Ready", "status": "False", "reason": "PublishFailed"}])
    m.set_conditions("ns", "p", [{"type": "Ready", "status": "True", "reason": "Published"},
                                 {"type": "SignalAvailable", "status": "True", "reason": None}])
    assert samples(m, "sluice_policy_condition") == {
        labels(namespace="ns", policy="p", type="Ready", status="True", reason="Published"): 1,
        labels(namespace="ns", policy="p", type="SignalAvailable", status="True", reason=""): 1,
    }


def test_forgetting_a_policy_drops_every_series_of_it_and_keeps_the_others() -> None:
    m = OperatorMetrics()
    for name in ("gone", "kept"):
        m.policy("ns", name).set(m.zone, 1, "low")
        m.policy("ns", name).set(m.threshold, 500, "low", "yellow")
        m.set_conditions("ns", name, [{"type": "Ready", "status": "True", "reason": "Published"}])
    m.forget_policy("ns", "gone")
    for metric in ("sluice_policy_zone", "sluice_policy_threshold", "sluice_policy_condition"):
        assert {dict(k)["policy"] for k in samples(m, metric)} == {"kept"}, metric
    m.forget_policy("ns", "never-seen")  # no error


def test_the_registry_refuses_a_second_metric_of_a_per_policy_name() -> None:
    m = OperatorMetrics()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Gauge("sluice_policy_zone", "again", ["namespace"], registry=m.registry)


def test_two_operators_in_one_process_keep_their_own_series() -> None:
    a, b = OperatorMetrics(), OperatorMetrics()
    a.policy("ns", "a").set(a.epoch, 1)
    assert samples(b, "sluice_policy_epoch") == {}
    assert samples(a, "sluice_policy_epoch") == {labels(namespace="ns", policy="a"): 1}
