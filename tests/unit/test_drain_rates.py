"""How the cycle measures mu and lambda for DrainTime: the queries it builds and what a gap means.

Prometheus itself is exercised in tests/integration/operator/test_drain_control.py; here a scripted
reader answers so every branch (kafka position deltas, empty answers, raw-query tenancy) is pinned.
"""

from __future__ import annotations

from typing import Any, Literal

from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.reconcile.rates import KafkaPosition, default_offered_query, offered_for, read_rates
from sluice_operator.reconcile.signals import Signals
from sluice_operator.settings import Settings
from sluice_operator.sources.reading import Reading, SignalStatus


class Scripted:
    """Answers each query from a dict of substring -> Reading; records what was asked."""

    def __init__(self, answers: dict[str, Reading]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def read(self, query: str, *, aggregate: Literal["max", "sum"] | None = None,
                   empty_result: Literal["unavailable", "zero"] = "unavailable",
                   timeout: float | None = None) -> Reading:
        self.asked.append(query)
        for needle, reading in self.answers.items():
            if needle in query:
                return reading
        return Reading(SignalStatus.UNAVAILABLE, reason="Empty", message="no series")


def ok(value: float) -> Reading:
    return Reading(SignalStatus.OK, value=value, reason="Ok")


OFFERED = {'"high"': ok(10), '"medium"': ok(20), '"low"': ok(30)}


def spec(source: dict[str, Any]) -> BackpressurePolicySpec:
    return BackpressurePolicySpec.model_validate({"source": source, "control": {"mode": "DrainTime"}})


KAFKA = spec({"kafka": {"bootstrapServers": "k:9092", "consumerGroup": "g", "topics": ["t"]}})
STRUCTURED = spec({"prometheus": {"consumerGroup": 'g"x', "topics": ["orders"]}})


async def test_kafka_mode_measures_mu_between_two_polls() -> None:
    signals = Signals(Settings.from_env({}), Scripted(OFFERED))
    first = Reading(SignalStatus.OK, value=5.0, consumed=1000.0)
    rates, problem, position = await read_rates(signals, "ns", "p", KAFKA, first, None, 100.0)
    assert rates.consumed is None and problem is not None and "two polls" in problem
    assert position == KafkaPosition(100.0, 1000.0)
    second = Reading(SignalStatus.OK, value=5.0, consumed=1500.0)
    rates, problem, position = await read_rates(signals, "ns", "p", KAFKA, second, position, 105.0)
    assert problem is None and rates.consumed == 100.0 and rates.offered == (10, 20, 30)
    reset = Reading(SignalStatus.OK, value=5.0, consumed=10.0)
    rates, problem, _ = await read_rates(signals, "ns", "p", KAFKA, reset, position, 110.0)
    assert rates.consumed is None and problem is not None and "went back" in problem


async def test_structured_sources_use_the_escaped_consumption_template() -> None:
    reader = Scripted({"kafka_consumergroup_current_offset": ok(250.0), **OFFERED})
    signals = Signals(Settings.from_env({}), reader)
    rates, problem, _ = await read_rates(signals, "ns", "p", STRUCTURED, ok(1.0), None, 0.0)
    assert problem is None and rates.consumed == 250.0
    consumption = next(q for q in reader.asked if "current_offset" in q)
    assert 'consumergroup="g\\"x"' in consumption and 'topic=~"orders"' in consumption
    assert sum(1 for q in reader.asked if "sluice_producer_offered_total" in q) == 3


async def test_no_producer_reporting_is_unknown_not_zero_but_a_silent_priority_offers_nothing() -> None:
    reader = Scripted({"kafka_consumergroup_current_offset": ok(250.0)})
    signals = Signals(Settings.from_env({}), reader)
    rates, problem, _ = await read_rates(signals, "ns", "p", STRUCTURED, ok(1.0), None, 0.0)
    assert rates.offered is None and problem is not None and "no producer reports" in problem
    reader.answers['"high"'] = ok(40.0)
    rates, problem, _ = await read_rates(signals, "ns", "p", STRUCTURED, ok(1.0), None, 0.0)
    assert problem is None and rates.offered == (40.0, 0.0, 0.0)


async def test_raw_rate_queries_follow_the_raw_query_rule() -> None:
    raw = spec({"prometheus": {"query": "sum(lag)", "consumptionQuery": "sum(rate(x[1m]))"}})
    raw = raw.model_copy(update={"control": raw.control.model_copy(update={"offered_query": "sum by (priority)(y)"})})
    signals = Signals(Settings.from_env({"SLUICE_RAW_QUERY_NAMESPACES": "platform"}), Scripted({}))
    rates, problem, _ = await read_rates(signals, "tenant", "p", raw, ok(1.0), None, 0.0)
    assert rates == (None, None, problem)
    assert problem is not None and "consumptionQuery is not allowed" in problem
    assert "offeredQuery is not allowed" in problem


def test_the_per_priority_selector_keeps_only_that_priority() -> None:
    query = offered_for(default_offered_query('n"s', "p"), "low")
    assert 'policy_namespace="n\\"s"' in query
    assert query.startswith("sum((sum by (priority) (rate(sluice_producer_offered_total{")
    assert query.endswith('and on(priority) label_replace(vector(1), "priority", "low", "", ""))')
