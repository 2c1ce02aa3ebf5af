"""The DrainTime loop's two measurements: the consumer's drain rate and the offer per priority.

mu, the drain rate (msgs/s):

* prometheus source: ``source.prometheus.consumptionQuery``, else the admin's consumption template
  (SLUICE_CONSUMPTION_QUERY_TEMPLATE) filled with the policy's consumerGroup + topics;
* kafka source: the change of the group's committed position between two polls (the reading
  carries it), so the first poll after a start has no mu yet.

lambda per priority (msgs/s): ``spec.control.offeredQuery``, else the SDK's
``sluice_producer_offered_total`` of this policy, summed by ``priority``; one query per priority
selects its series. No series at all means no producer reports, which is *unknown*, never zero;
a priority without a series while others have one offers nothing.

Each function returns the number or a sentence saying what to fix; the engine turns a missing
number into ``ControlDegraded`` and the Zones behaviour.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sluice.decision import PRIORITIES
from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.engine.drain import Rates
from sluice_operator.reconcile.signals import Signals
from sluice_operator.sources.lag_query import LagTemplateError, build_lag_query, promql_escape
from sluice_operator.sources.reading import Reading

__all__ = ["OFFERED_METRIC", "KafkaPosition", "default_offered_query", "offered_for", "read_rates"]

OFFERED_METRIC = "sluice_producer_offered_total"
#: The window of the default offered-rate query: two scrapes at Prometheus' usual 15-30 s.
OFFERED_WINDOW = "1m"


@dataclass(frozen=True, slots=True)
class KafkaPosition:
    """The group's committed position at a monotonic time (kafka mode's mu comes from two)."""

    at: float
    consumed: float


def default_offered_query(namespace: str, name: str) -> str:
    """The SDK's offered counter of this policy, as a rate, one series per priority."""
    selector = f'policy_namespace="{promql_escape(namespace)}",policy="{promql_escape(name)}"'
    return f"sum by (priority) (rate({OFFERED_METRIC}{{{selector}}}[{OFFERED_WINDOW}]))"


def offered_for(query: str, priority: str) -> str:
    """The one series of ``query`` whose ``priority`` label is ``priority`` (summed)."""
    return f'sum(({query}) and on(priority) label_replace(vector(1), "priority", "{priority}", "", ""))'


def _problem(what: str, reading: Reading) -> str:
    return f"{what}: {reading.reason or 'Unavailable'}: {reading.message}".rstrip(": ")


async def _consumption(
    signals: Signals, namespace: str, spec: BackpressurePolicySpec, reading: Reading,
    previous: KafkaPosition | None, now: float,
) -> tuple[float | str, KafkaPosition | None]:
    if spec.source.kafka is not None:
        if reading.consumed is None:
            return "no drain rate: the Kafka offsets could not be read", previous
        position = KafkaPosition(now, reading.consumed)
        if previous is None or now <= previous.at:
            return "measuring the drain rate: kafka mode needs two polls", position
        if reading.consumed < previous.consumed:
            return "the group's committed offsets went back (reset?); measuring again", position
        return (reading.consumed - previous.consumed) / (now - previous.at), position
    source = spec.source.prometheus
    assert source is not None
    prometheus = signals.prometheus
    if prometheus is None:
        return "no Prometheus URL is configured (SLUICE_PROMETHEUS_URL)", None
    if source.consumption_query is not None:
        if not signals.settings.raw_query_allowed(namespace):
            return (f"source.prometheus.consumptionQuery is not allowed in namespace {namespace!r} "
                    "(SLUICE_RAW_QUERY_NAMESPACES); omit it and use consumerGroup + topics"), None
        query = source.consumption_query
    elif source.query is not None:
        return ("no drain rate: a raw source.prometheus.query has no template to build one from; "
                "set source.prometheus.consumptionQuery"), None
    else:
        try:
            query = build_lag_query(
                signals.settings.tenancy.consumption_query_template, source.consumer_group or "", source.topics or []
            )
        except LagTemplateError as error:
            return f"bad SLUICE_CONSUMPTION_QUERY_TEMPLATE: {error}", None
    answer = await prometheus.read(query, aggregate="sum", timeout=spec.polling.timeout_seconds)
    if not answer.ok or answer.value is None:
        return _problem("no drain rate", answer), None
    return answer.value, None


async def _offered(
    signals: Signals, namespace: str, name: str, spec: BackpressurePolicySpec
) -> tuple[float, float, float] | str:
    prometheus = signals.prometheus
    if prometheus is None:
        return "no offered rate: no Prometheus URL is configured (SLUICE_PROMETHEUS_URL)"
    if spec.control.offered_query is not None and not signals.settings.raw_query_allowed(namespace):
        return (f"spec.control.offeredQuery is not allowed in namespace {namespace!r} "
                "(SLUICE_RAW_QUERY_NAMESPACES); omit it to use the SDK's metrics")
    query = spec.control.offered_query or default_offered_query(namespace, name)
    values: list[float] = []
    empty = 0
    answers = await asyncio.gather(*(
        prometheus.read(offered_for(query, priority), aggregate="sum", timeout=spec.polling.timeout_seconds)
        for priority in PRIORITIES
    ))
    for answer in answers:
        if answer.ok and answer.value is not None:
            values.append(answer.value)
        elif answer.reason == "Empty":
            empty += 1
            values.append(0.0)
        else:
            return _problem("no offered rate", answer)
    if empty == len(PRIORITIES):
        return (f"no offered rate: no producer reports {OFFERED_METRIC} for this policy (are the SDK's "
                "metrics scraped by Prometheus, with the policy set on the producer?)")
    return (values[0], values[1], values[2])


async def read_rates(
    signals: Signals, namespace: str, name: str, spec: BackpressurePolicySpec, reading: Reading,
    previous: KafkaPosition | None, now: float,
) -> tuple[Rates, str | None, KafkaPosition | None]:
    """mu and lambda for one DrainTime poll; the str says what is missing (None: both read)."""
    (mu, position), offered = await asyncio.gather(
        _consumption(signals, namespace, spec, reading, previous, now), _offered(signals, namespace, name, spec)
    )
    problems = [p for p in (mu, offered) if isinstance(p, str)]
    problem = "; ".join(problems) or None
    rates = Rates(
        consumed=None if isinstance(mu, str) else mu,
        offered=None if isinstance(offered, str) else offered,
        problem=problem,
    )
    return rates, problem, position
