"""Producer metrics, exported through a prometheus-client registry the user passes.

The hot path must not pay for metrics: a prometheus-client ``Counter.inc()`` takes a lock, which is
a large share of a ~1 us produce call. So the producer bumps plain integers in `Counts` and a custom
collector turns them into metric families only when Prometheus scrapes. Gauges (decision age,
circuit state, applied epoch, messages in flight) are computed at scrape time too. Only the delay
histogram is a regular prometheus-client metric: it is observed on the delay path, which sleeps
anyway.

=================================================  =========================================================
``sluice_producer_offered_total{priority}``       every produce()/aproduce() call, admitted or not (the
                                                   operator's offered rate, DrainTime control)
``sluice_producer_messages_total{priority,outcome}``  outcome: sent (handed to librdkafka), delayed, shed,
                                                   rejected_open, rejected_stale, rejected_paced (waited
                                                   pacing_max_wait_s for a token), retried (one per retry),
                                                   dead_lettered, failed (known not written),
                                                   in_doubt (may have been written: timeouts, purges
                                                   of messages in flight)
``sluice_producer_observed_total{priority,action}``  Observe mode: what would have happened (delay, shed,
                                                   reject_open, pace)
``sluice_producer_paced_total{priority,action}``   messages that found no pacing token: wait (waited for
                                                   one, counted once) or shed (also counted in shed)
``sluice_producer_delay_seconds{priority}``        histogram of applied delays
``sluice_producer_decision_age_seconds``           seconds since the decision in force arrived (NaN: none)
``sluice_producer_circuit_state``                  0 closed, 1 half-open, 2 open
``sluice_producer_applied_epoch``                  epoch of the decision in force (-1: none)
``sluice_producer_in_flight``                      messages accepted but not yet resolved
``sluice_producer_decision_errors_total``          unreadable or invalid documents the source skipped
``sluice_producer_recreated_total``                underlying producers replaced after a fatal error
``sluice_producer_broker_throttle_seconds_total``  seconds the producer held messages back because a
                                                   broker reported a quota throttle (KIP-219)
=================================================  =========================================================

Every family also carries ``policy_namespace`` and ``policy``: the BackpressurePolicy whose decision
the producer applies (from the document in force; before one arrives, the ``policy=`` the producer was
given, else empty). The operator's compliance check and the Producers dashboard match on them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from sluice.decision import PRIORITIES

__all__ = [
    "OBSERVE_ACTIONS",
    "OUTCOMES",
    "PACED_ACTIONS",
    "POLICY_LABELS",
    "PRIORITY_NAMES",
    "Counts",
    "GaugeState",
    "ProducerMetrics",
]

PRIORITY_NAMES: Final = PRIORITIES  # the wire contract's names
OUTCOMES: Final = (
    "sent",
    "delayed",
    "shed",
    "rejected_open",
    "rejected_stale",
    "rejected_paced",
    "retried",
    "dead_lettered",
    "failed",
    "in_doubt",
)
OBSERVE_ACTIONS: Final = ("delay", "shed", "reject_open", "pace")
PACED_ACTIONS: Final = ("wait", "shed")
POLICY_LABELS: Final = ("policy_namespace", "policy")
#: The per-priority tallies `Counts` keeps: the passthrough and admission paths' own, then every
#: outcome but ``sent`` (the sum of ``fast_sent`` and ``slow_sent``).
_TALLIES: Final = ("fast_sent", "slow_sent", "slow_offered", *(o for o in OUTCOMES if o != "sent"))
DELAY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, float("inf"))


class Counts:
    """Plain per-priority tallies (index 0 high, 1 medium, 2 low); bumped without locks.

    Under CPython's GIL ``list[i] += 1`` on a list only touched by these counters does not lose
    updates in practice; exactness of the *delivery outcome* bookkeeping does not depend on these.

    ``sent`` and ``offered`` are sums, so the passthrough path bumps a single integer per message:
    it counts ``fast_sent`` (a message it handed to librdkafka itself), every other call counts
    ``slow_offered`` once when its `Admission` is created and ``slow_sent`` if it is enqueued. Each
    term only grows, so the sums are monotonic even when read while another thread bumps them.
    """

    __slots__ = (*_TALLIES, "observed", "paced")

    fast_sent: list[int]
    slow_sent: list[int]
    slow_offered: list[int]
    delayed: list[int]
    shed: list[int]
    rejected_open: list[int]
    rejected_stale: list[int]
    rejected_paced: list[int]
    retried: list[int]
    dead_lettered: list[int]
    failed: list[int]
    in_doubt: list[int]
    observed: dict[str, list[int]]
    paced: dict[str, list[int]]

    def __init__(self) -> None:
        for name in _TALLIES:
            setattr(self, name, [0, 0, 0])
        self.observed = {action: [0, 0, 0] for action in OBSERVE_ACTIONS}
        self.paced = {action: [0, 0, 0] for action in PACED_ACTIONS}

    @property
    def sent(self) -> list[int]:
        """Messages handed to librdkafka, per priority (a snapshot: bump ``fast_sent``/``slow_sent``)."""
        return [a + b for a, b in zip(self.fast_sent, self.slow_sent, strict=True)]

    @property
    def offered(self) -> list[int]:
        """``produce()``/``aproduce()`` calls, admitted or not, per priority (a snapshot)."""
        return [a + b for a, b in zip(self.fast_sent, self.slow_offered, strict=True)]

    def offered_of(self, idx: int) -> int:
        """Calls of one priority so far (the pacing rate estimator's counter)."""
        return self.fast_sent[idx] + self.slow_offered[idx]

    def outcome(self, name: str) -> list[int]:
        """The per-priority list of one outcome."""
        counts: list[int] = getattr(self, name)
        return counts

    def as_dict(self) -> dict[str, dict[str, int]]:
        """``{outcome: {priority: count}}`` (for tests and health)."""
        return {o: dict(zip(PRIORITY_NAMES, self.outcome(o), strict=True)) for o in OUTCOMES}


@dataclass(frozen=True, slots=True)
class GaugeState:
    """Scrape-time values the producer computes on demand."""

    decision_age: float | None
    circuit_state: int
    applied_epoch: int
    in_flight: int
    decision_errors: int
    recreated: int
    broker_throttle_seconds: float = 0.0
    policy_namespace: str = ""
    policy_name: str = ""


class _Collector:
    def __init__(self, counts: Counts, state: Callable[[], GaugeState]) -> None:
        self._counts = counts
        self._state = state

    def describe(self) -> Iterable[Metric]:
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._state())

    def _families(self, state: GaugeState | None) -> list[Metric]:
        pol = list(POLICY_LABELS)
        messages = CounterMetricFamily(
            "sluice_producer_messages", "Messages by priority and outcome.", labels=[*pol, "priority", "outcome"]
        )
        observed = CounterMetricFamily(
            "sluice_producer_observed",
            "Observe mode: actions a decision would have applied.",
            labels=[*pol, "priority", "action"],
        )
        age = GaugeMetricFamily(
            "sluice_producer_decision_age_seconds", "Seconds since the decision arrived.", labels=pol
        )
        circuit = GaugeMetricFamily("sluice_producer_circuit_state", "0 closed, 1 half-open, 2 open.", labels=pol)
        epoch = GaugeMetricFamily(
            "sluice_producer_applied_epoch", "Epoch of the decision in force (-1: none).", labels=pol
        )
        in_flight = GaugeMetricFamily(
            "sluice_producer_in_flight", "Messages accepted and not yet resolved.", labels=pol
        )
        errors = CounterMetricFamily(
            "sluice_producer_decision_errors", "Invalid or unreadable documents skipped.", labels=pol
        )
        recreated = CounterMetricFamily(
            "sluice_producer_recreated", "Producers recreated after fatal errors.", labels=pol
        )
        throttle = CounterMetricFamily(
            "sluice_producer_broker_throttle_seconds", "Seconds messages were held back for broker throttles.",
            labels=pol,
        )
        offered = CounterMetricFamily(
            "sluice_producer_offered",
            "produce()/aproduce() calls, admitted or not.",
            labels=[*pol, "priority"],
        )
        paced = CounterMetricFamily(
            "sluice_producer_paced",
            "Messages that found no pacing token: waited for one, or shed.",
            labels=[*pol, "priority", "action"],
        )
        families: list[Metric] = [
            messages, observed, offered, paced, age, circuit, epoch, in_flight, errors, recreated, throttle,
        ]
        if state is None:
            return families
        who = [state.policy_namespace, state.policy_name]
        for outcome in OUTCOMES:
            for priority, value in zip(PRIORITY_NAMES, self._counts.outcome(outcome), strict=True):
                messages.add_metric([*who, priority, outcome], value)
        for action, values in self._counts.observed.items():
            for priority, value in zip(PRIORITY_NAMES, values, strict=True):
                observed.add_metric([*who, priority, action], value)
        for priority, value in zip(PRIORITY_NAMES, self._counts.offered, strict=True):
            offered.add_metric([*who, priority], value)
        for action, values in self._counts.paced.items():
            for priority, value in zip(PRIORITY_NAMES, values, strict=True):
                paced.add_metric([*who, priority, action], value)
        age.add_metric(who, float("nan") if state.decision_age is None else state.decision_age)
        circuit.add_metric(who, state.circuit_state)
        epoch.add_metric(who, state.applied_epoch)
        in_flight.add_metric(who, state.in_flight)
        errors.add_metric(who, state.decision_errors)
        recreated.add_metric(who, state.recreated)
        throttle.add_metric(who, state.broker_throttle_seconds)
        return families


class ProducerMetrics:
    """Registers the producer's metrics on ``registry`` (nothing is registered when it is None)."""

    def __init__(
        self,
        counts: Counts,
        state: Callable[[], GaugeState],
        registry: CollectorRegistry | None,
        policy: Callable[[], tuple[str, str]] = lambda: ("", ""),
    ) -> None:
        self.registry = registry
        self._policy = policy
        self._delay: Histogram | None = None
        if registry is None:
            return
        registry.register(_Collector(counts, state))
        self._delay = Histogram(
            "sluice_producer_delay_seconds",
            "Delays applied before producing.",
            [*POLICY_LABELS, "priority"],
            registry=registry,
            buckets=DELAY_BUCKETS,
        )

    def observe_delay(self, priority: str, seconds: float) -> None:
        """Record an applied delay."""
        if self._delay is not None:
            namespace, name = self._policy()
            self._delay.labels(namespace, name, priority).observe(seconds)
