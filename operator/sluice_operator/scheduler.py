"""One scheduler for every object: evaluate each on its own interval, a bounded number at a time.

Kopf daemons and timers put a finalizer on every object they serve, so deleting a policy would hang
whenever the operator is down or uninstalled. Sluice instead learns objects from Kopf's watch events
(no finalizer needed) and runs their cycles here. Deletion is never blocked; what a deleted object
published is removed by garbage collection (policies: ownerReferences) or by label (circuits).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

Kind = Literal["BackpressurePolicy", "CircuitBreaker"]
Kinds: tuple[Kind, ...] = ("CircuitBreaker", "BackpressurePolicy")  # circuits first: policies embed them


@dataclass
class ScheduleEntry:
    """One object the scheduler evaluates."""

    kind: Kind
    namespace: str | None
    name: str
    uid: str
    body: dict[str, Any]
    generation: int | None = None
    due: float = 0.0
    running: bool = False
    deleted: bool = False
    #: The spec parsed for `generation` (None when invalid): parsed once per change, not per cycle.
    parsed: tuple[int | None, Any] | None = None

    def parsed_for_current_generation(self) -> bool:
        return self.parsed is not None and self.generation is not None and self.parsed[0] == self.generation


#: Runs one evaluation of an object and returns the seconds until the next one.
Evaluate = Callable[[ScheduleEntry], Awaitable[float]]


class Scheduler:
    """Keeps the objects Kopf reports, and evaluates each when it is due, a bounded number at a time.

    Due times live in a heap, so an evaluation costs O(log n) whatever the number of objects: at
    10,000 policies on a 15 s interval, ~670 evaluations end every second, and scanning every object
    after each one cost more than the evaluations. A heap item whose object was removed, changed its
    due time or is running is stale and skipped; whoever changes a due time pushes a new item.
    """

    def __init__(
        self, evaluate: Evaluate, *, concurrency: int = 64, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.evaluate = evaluate
        self.clock = clock
        self.objects: dict[str, ScheduleEntry] = {}
        self._limit = concurrency
        self._running = 0
        self._queue: list[tuple[float, int, ScheduleEntry]] = []
        self._order = itertools.count()  # equal due times run in the order they were queued
        self._timer_at = 0.0  # when the loop wakes by itself; an earlier due time wakes it now
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def upsert(self, kind: Kind, namespace: str | None, name: str, uid: str, body: dict[str, Any]) -> ScheduleEntry:
        """Record the latest body; a new object or a new generation is evaluated at once."""
        generation = (body.get("metadata") or {}).get("generation")
        tracked = self.objects.get(uid)
        if tracked is None:
            tracked = ScheduleEntry(kind, namespace, name, uid, body, generation)
            self.objects[uid] = tracked
            self.reschedule(tracked, self.clock())
        else:
            tracked.body = body
            if generation != tracked.generation:
                tracked.generation = generation
                self.reschedule(tracked, self.clock())
        return tracked

    def remove(self, uid: str) -> ScheduleEntry | None:
        tracked = self.objects.pop(uid, None)
        if tracked is not None:
            tracked.deleted = True
        return tracked

    def reschedule(self, tracked: ScheduleEntry, due: float) -> None:
        """Evaluate `tracked` at `due` (monotonic); a running object is queued again when it ends."""
        tracked.due = due
        heapq.heappush(self._queue, (due, next(self._order), tracked))
        if due < self._timer_at:
            self._wake.set()

    def poke(self, predicate: Callable[[ScheduleEntry], bool]) -> None:
        """Evaluate matching objects now (e.g. circuits when namespaces change)."""
        now = self.clock()
        for tracked in list(self.objects.values()):
            if predicate(tracked) and tracked.due > now:
                self.reschedule(tracked, now)
        self._wake.set()

    async def _run_one(self, tracked: ScheduleEntry) -> None:
        interval, generation = 5.0, tracked.generation
        try:
            if not tracked.deleted:
                interval = await self.evaluate(tracked)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in one object's cycle must not stop the others
            log.exception("evaluation of %s %s failed", tracked.kind, tracked.name,
                          extra={"namespace": tracked.namespace or "", "object": tracked.name})
        finally:
            tracked.running = False
            if self._running >= self._limit:
                self._wake.set()  # a slot is free for an object that is due and waiting
            self._running -= 1
        # A generation that arrived while this ran was not evaluated yet: at once, not after the interval.
        self.reschedule(tracked, self.clock() + (interval if tracked.generation == generation else 0.0))

    def _start_due(self, now: float) -> None:
        """Start every due evaluation there is a slot for."""
        queue = self._queue
        while queue and self._running < self._limit and queue[0][0] <= now:
            due, _, tracked = heapq.heappop(queue)
            if tracked.deleted or tracked.running or tracked.due != due or self.objects.get(tracked.uid) is not tracked:
                continue  # stale: removed, queued again since, or running (queued again when it ends)
            tracked.running = True
            self._running += 1
            task = asyncio.ensure_future(self._run_one(tracked))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: start every due evaluation, then sleep until the next one is due."""
        while not stop.is_set():
            self._wake.clear()
            now = self.clock()
            self._start_due(now)
            next_due = now + 1.0  # at least once a second: `stop` is looked at here
            if self._queue and self._running < self._limit:
                next_due = min(next_due, self._queue[0][0])
            self._timer_at = next_due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, next_due - self.clock()))
        self._timer_at = 0.0
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)


def cycles_in_flight(query_workers: int) -> int:
    """How many evaluations may run at once: eight per query worker (SLUICE_MAX_CONCURRENT_QUERIES).

    Enough to keep every worker busy while cycles wait on the API; few enough that a cycle's read
    timeout measures Prometheus, not its place in a queue of thousands on one event loop (10,000
    cycles started together timed out thousands of reads on a busy machine).
    """
    return max(8, query_workers * 8)


def jittered(interval: float, jitter: float) -> float:
    """The interval plus up to `jitter` seconds, so policies created together do not fire together."""
    return interval + random.uniform(0, jitter) if jitter > 0 else interval
