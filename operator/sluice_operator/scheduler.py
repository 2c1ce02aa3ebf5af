"""One scheduler for every object: evaluate each on its own interval, a bounded number at a time.

Kopf daemons and timers put a finalizer on every object they serve, so deleting a policy would hang
whenever the operator is down or uninstalled. Sluice instead learns objects from Kopf's watch events
(no finalizer needed) and runs their cycles here. Deletion is never blocked; what a deleted object
published is removed by garbage collection (policies: ownerReferences) or by label (circuits).
"""

from __future__ import annotations

import asyncio
import contextlib
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
    """Keeps the objects Kopf reports, and evaluates each when it is due."""

    def __init__(
        self, evaluate: Evaluate, *, concurrency: int = 64, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.evaluate = evaluate
        self.clock = clock
        self.objects: dict[str, ScheduleEntry] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def upsert(self, kind: Kind, namespace: str | None, name: str, uid: str, body: dict[str, Any]) -> ScheduleEntry:
        """Record the latest body; a new object or a new generation is evaluated at once."""
        generation = (body.get("metadata") or {}).get("generation")
        tracked = self.objects.get(uid)
        if tracked is None:
            tracked = ScheduleEntry(kind, namespace, name, uid, body, generation, due=self.clock())
            self.objects[uid] = tracked
            self._wake.set()
        else:
            tracked.body = body
            if generation != tracked.generation:
                tracked.generation = generation
                tracked.due = self.clock()
                self._wake.set()
        return tracked

    def remove(self, uid: str) -> ScheduleEntry | None:
        tracked = self.objects.pop(uid, None)
        if tracked is not None:
            tracked.deleted = True
        return tracked

    def poke(self, predicate: Callable[[ScheduleEntry], bool]) -> None:
        """Evaluate matching objects now (e.g. circuits when namespaces change)."""
        now = self.clock()
        for tracked in self.objects.values():
            if predicate(tracked):
                tracked.due = min(tracked.due, now)
        self._wake.set()

    async def _run_one(self, tracked: ScheduleEntry) -> None:
        try:
            async with self._slots:
                if tracked.deleted:
                    return
                interval = await self.evaluate(tracked)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in one object's cycle must not stop the others
            log.exception("evaluation of %s %s failed", tracked.kind, tracked.name,
                          extra={"namespace": tracked.namespace or "", "object": tracked.name})
            interval = 5.0
        finally:
            tracked.running = False
        tracked.due = self.clock() + interval
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: start every due evaluation, then sleep until the next one is due."""
        while not stop.is_set():
            now = self.clock()
            next_due = now + 1.0
            for tracked in list(self.objects.values()):
                if tracked.running:
                    continue
                if tracked.due <= now:
                    tracked.running = True
                    task = asyncio.ensure_future(self._run_one(tracked))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                else:
                    next_due = min(next_due, tracked.due)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, next_due - self.clock()))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)


def jittered(interval: float, jitter: float) -> float:
    """The interval plus up to `jitter` seconds, so policies created together do not fire together."""
    return interval + random.uniform(0, jitter) if jitter > 0 else interval
