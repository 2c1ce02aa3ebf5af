"""DrainTime pacing on the mock cluster: a request-driven (open-loop) producer under admitRatio 0.4.

Messages arrive at a fixed rate and each is its own produce call (``aproduce()`` in its own task for
the waiting priority, ``produce()`` for the shedding one and for the unpaced one), the shape of a
service producing one message per request. The admitted rate is measured over a window after the
rate estimator's first window and compared with admitRatio x offered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from sluice import PacedError, ShedError, StaticDecisions, ThrottledProducer
from sluice.config import DEFAULT_PACING_WINDOW_S
from tests.support.sdk_helpers import make_decision

RATIO = 0.4
RATES = {"high": 50.0, "medium": 200.0, "low": 200.0}  # offered, messages per second
RUN_S = 9.0
#: Measure after the first estimator window (and a margin), until the arrivals stop.
MEASURE = (DEFAULT_PACING_WINDOW_S + 1.0, RUN_S)
MAX_WAIT_S = 3.0


class Tally:
    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = {p: [] for p in RATES}
        self.admitted: dict[str, list[float]] = {p: [] for p in RATES}
        self.latency: dict[str, list[float]] = {p: [] for p in RATES}
        self.shed: dict[str, int] = dict.fromkeys(RATES, 0)
        self.paced: dict[str, list[float]] = {p: [] for p in RATES}

    def in_window(self, times: list[float], start: float) -> int:
        lo, hi = start + MEASURE[0], start + MEASURE[1]
        return sum(1 for t in times if lo <= t < hi)


async def _one(producer: ThrottledProducer, topic: str, priority: str, tally: Tally) -> None:
    called = time.monotonic()
    tally.calls[priority].append(called)
    try:
        if priority == "medium":
            await producer.aproduce(topic, b"request", priority=priority)
        else:
            producer.produce(topic, b"request", priority=priority)
    except ShedError as exc:
        assert exc.paced
        tally.shed[priority] += 1
        return
    except PacedError:
        tally.paced[priority].append(time.monotonic() - called)
        return
    done = time.monotonic()
    tally.admitted[priority].append(done)
    tally.latency[priority].append(done - called)


async def _open_loop(producer: ThrottledProducer, topic: str, tally: Tally) -> float:
    """Arrivals at RATES for RUN_S seconds, each its own task; returns the start time."""
    start = time.monotonic()
    sent = dict.fromkeys(RATES, 0)
    tasks: list[asyncio.Task[None]] = []
    while (now := time.monotonic()) < start + RUN_S:
        for priority, rate in RATES.items():
            due = int((now - start) * rate) + 1
            while sent[priority] < due:
                sent[priority] += 1
                tasks.append(asyncio.create_task(_one(producer, topic, priority, tally)))
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    return start


def test_an_open_loop_producer_is_paced_to_admit_ratio_times_its_offer(
    make: Callable[..., ThrottledProducer], topic: str
) -> None:
    decision = make_decision(
        admit_ratio={"medium": RATIO, "low": RATIO}, excess={"medium": "wait", "low": "shed"}, epoch=7
    )
    registry = CollectorRegistry()
    producer = make(StaticDecisions(decision), pacing_max_wait_s=MAX_WAIT_S, metrics_registry=registry)
    tally = Tally()
    started = time.monotonic()
    start = asyncio.run(_open_loop(producer, topic, tally))
    assert time.monotonic() - started < RUN_S + MAX_WAIT_S + 2

    calls = {p: len(tally.calls[p]) for p in RATES}
    # The offered counter counts every call, admitted or not.
    assert producer.counts.offered == [calls["high"], calls["medium"], calls["low"]]
    sample: Any = registry.get_sample_value(
        "sluice_producer_offered_total", {"policy_namespace": "default", "policy": "orders", "priority": "low"}
    )
    assert sample == calls["low"]

    for priority in ("medium", "low"):
        offered = tally.in_window(tally.calls[priority], start)
        admitted = tally.in_window(tally.admitted[priority], start)
        assert offered > 1000
        print(f"{priority}: offered {offered}, admitted {admitted}, admitted/(ratio x offered) "
              f"{admitted / (RATIO * offered):.4f}")
        assert abs(admitted / (RATIO * offered) - 1) < 0.05, (priority, admitted, offered)

    # Unpaced high priority is admitted in full.
    assert len(tally.admitted["high"]) == calls["high"]

    # The shedding priority sheds the excess: every call is admitted or shed, and counted so.
    low = 2
    assert calls["low"] == len(tally.admitted["low"]) + tally.shed["low"]
    assert producer.counts.shed[low] == producer.counts.paced["shed"][low] == tally.shed["low"]
    assert producer.counts.sent[low] == len(tally.admitted["low"])

    # The waiting priority: every call is admitted within the deadline, or refused at the deadline.
    med = 1
    assert calls["medium"] == len(tally.admitted["medium"]) + len(tally.paced["medium"])
    assert max(tally.latency["medium"]) < MAX_WAIT_S + 0.5
    assert all(MAX_WAIT_S - 0.01 <= w < MAX_WAIT_S + 0.5 for w in tally.paced["medium"])
    assert producer.counts.rejected_paced[med] == len(tally.paced["medium"])
    assert producer.counts.paced["wait"][med] >= len(tally.paced["medium"])
    assert producer.counts.delayed == [0, 0, 0] and producer.counts.shed[med] == 0

    # Everything admitted is delivered.
    assert producer.flush(10) == 0
    outcomes = producer.outcomes()
    assert outcomes.delivered == sum(len(v) for v in tally.admitted.values())
    assert outcomes.failed == outcomes.dead_lettered == outcomes.in_doubt == 0


def test_admit_ratio_one_or_absent_keeps_the_passthrough_path(
    make: Callable[..., ThrottledProducer], topic: str
) -> None:
    producer = make(StaticDecisions(make_decision(admit_ratio={"low": 1.0})))
    assert all(dr is not None for dr, _, _ in producer._table.values())
    for _ in range(100):
        producer.produce(topic, b"x", priority="low")
    assert producer.counts.offered == [0, 0, 100] and producer.counts.fast_sent == [0, 0, 100]
    assert producer.flush(10) == 0


def test_admit_ratio_zero_refuses_waiting_messages_at_the_deadline(
    make: Callable[..., ThrottledProducer], topic: str
) -> None:
    decision = make_decision(admit_ratio={"high": 0.0}, excess={"high": "wait"})
    producer = make(StaticDecisions(decision), pacing_max_wait_s=0.3)
    begun = time.monotonic()
    try:
        producer.produce(topic, b"x", priority="high")
    except PacedError as exc:
        assert exc.admit_ratio == 0 and exc.priority == "high"
    else:
        raise AssertionError("a message under admitRatio 0 was admitted")
    assert 0.29 <= time.monotonic() - begun < 1.0
    assert producer.counts.rejected_paced == [1, 0, 0] and producer.counts.offered == [1, 0, 0]
