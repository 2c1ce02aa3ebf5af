"""The Scheduler: each object on its own interval, a bounded number at a time, stale queue items skipped."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sluice_operator.scheduler import ScheduleEntry, Scheduler, cycles_in_flight


def body(generation: int = 1) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {}}


class Calls(Counter[str]):
    """Evaluations per object name, with a condition to wait on."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Condition()

    async def record(self, name: str) -> None:
        async with self.changed:
            self[name] += 1
            self.changed.notify_all()


async def running(scheduler: Scheduler, calls: Calls, until: Callable[[], bool], timeout: float = 5.0) -> None:
    """Run the scheduler until `until()` holds (fails the test after `timeout` seconds)."""
    stop = asyncio.Event()
    task = asyncio.ensure_future(scheduler.run(stop))
    try:
        async with asyncio.timeout(timeout), calls.changed:
            await calls.changed.wait_for(until)
    finally:
        stop.set()
        scheduler.poke(lambda _entry: False)  # wake the loop: it sees `stop` at once, not within a second
        await asyncio.wait_for(task, 5)


def recorder(interval: float = 3600.0, hold: float = 0.0) -> tuple[Calls, Callable[[ScheduleEntry],
                                                                                  Awaitable[float]]]:
    calls = Calls()

    async def evaluate(entry: ScheduleEntry) -> float:
        await calls.record(entry.name)
        if hold:
            await asyncio.sleep(hold)
        return interval

    return calls, evaluate


async def test_every_object_is_evaluated_once_when_due_then_on_its_interval() -> None:
    calls, evaluate = recorder(interval=0.05)
    scheduler = Scheduler(evaluate)
    for i in range(20):
        scheduler.upsert("BackpressurePolicy", "ns", f"p{i}", f"uid{i}", body())
    await running(scheduler, calls, lambda: len(calls) == 20 and min(calls.values()) >= 3)
    assert set(calls) == {f"p{i}" for i in range(20)}


async def test_no_more_than_the_limit_run_at_once_and_all_finish() -> None:
    in_flight, peak = 0, 0
    done = Calls()

    async def evaluate(entry: ScheduleEntry) -> float:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        await done.record(entry.name)
        return 3600.0

    scheduler = Scheduler(evaluate, concurrency=4)
    for i in range(50):
        scheduler.upsert("BackpressurePolicy", "ns", f"p{i}", f"uid{i}", body())
    await running(scheduler, done, lambda: len(done) == 50)
    assert peak == 4
    assert set(done.values()) == {1}


async def test_repeated_events_for_the_same_generation_evaluate_once() -> None:
    calls, evaluate = recorder()
    scheduler = Scheduler(evaluate)
    for _ in range(10):
        scheduler.upsert("BackpressurePolicy", "ns", "p", "uid", body(1))
    await running(scheduler, calls, lambda: calls["p"] >= 1)
    await running(scheduler, calls, lambda: True)
    await asyncio.sleep(0.05)  # time for a duplicate evaluation, were there one
    assert calls["p"] == 1


async def test_a_removed_object_is_not_evaluated_again() -> None:
    calls, evaluate = recorder(interval=0.02)
    scheduler = Scheduler(evaluate)
    scheduler.upsert("BackpressurePolicy", "ns", "gone", "uid-gone", body())
    scheduler.upsert("BackpressurePolicy", "ns", "kept", "uid-kept", body())
    await running(scheduler, calls, lambda: calls["gone"] >= 1)
    scheduler.remove("uid-gone")
    seen = calls["gone"]
    await running(scheduler, calls, lambda: calls["kept"] >= seen + 5)
    assert calls["gone"] == seen


async def test_a_new_generation_during_an_evaluation_is_evaluated_right_after_it() -> None:
    calls, evaluate = recorder(interval=3600.0, hold=0.05)
    scheduler = Scheduler(evaluate)
    scheduler.upsert("BackpressurePolicy", "ns", "p", "uid", body(1))
    stop = asyncio.Event()
    task = asyncio.ensure_future(scheduler.run(stop))
    await asyncio.sleep(0.02)  # the first evaluation is running
    assert scheduler.objects["uid"].running
    scheduler.upsert("BackpressurePolicy", "ns", "p", "uid", body(2))
    try:
        async with asyncio.timeout(5), calls.changed:
            await calls.changed.wait_for(lambda: calls["p"] >= 2)
    finally:
        stop.set()
        scheduler.poke(lambda _entry: False)
        await asyncio.wait_for(task, 5)


async def test_poke_evaluates_matching_objects_now_and_only_them() -> None:
    calls, evaluate = recorder(interval=3600.0)
    scheduler = Scheduler(evaluate)
    scheduler.upsert("CircuitBreaker", None, "cb", "uid-cb", body())
    scheduler.upsert("BackpressurePolicy", "ns", "p", "uid-p", body())
    await running(scheduler, calls, lambda: calls["cb"] == 1 and calls["p"] == 1)
    scheduler.poke(lambda entry: entry.kind == "CircuitBreaker")
    await running(scheduler, calls, lambda: calls["cb"] == 2)
    assert calls["p"] == 1


async def test_a_failing_evaluation_does_not_stop_the_others() -> None:
    calls = Calls()

    async def evaluate(entry: ScheduleEntry) -> float:
        await calls.record(entry.name)
        if entry.name == "bad":
            raise RuntimeError("a bug in one cycle")
        return 0.02

    scheduler = Scheduler(evaluate)
    scheduler.upsert("BackpressurePolicy", "ns", "bad", "uid-bad", body())
    scheduler.upsert("BackpressurePolicy", "ns", "good", "uid-good", body())
    await running(scheduler, calls, lambda: calls["good"] >= 5)
    assert calls["bad"] == 1  # retried after 5 s, not in a loop
    assert not scheduler.objects["uid-bad"].running


async def test_an_object_rescheduled_from_outside_runs_at_its_new_time() -> None:
    calls, evaluate = recorder(interval=3600.0)
    scheduler = Scheduler(evaluate)
    entry = scheduler.upsert("BackpressurePolicy", "ns", "p", "uid", body())
    await running(scheduler, calls, lambda: calls["p"] == 1)
    scheduler.reschedule(entry, scheduler.clock() + 0.02)
    await running(scheduler, calls, lambda: calls["p"] == 2)


def test_concurrency_follows_the_query_workers_and_is_bounded_below() -> None:
    assert cycles_in_flight(8) == 64
    assert cycles_in_flight(1) == 8
    with pytest.raises(ValueError, match="at least 1"):
        Scheduler(recorder()[1], concurrency=0)
