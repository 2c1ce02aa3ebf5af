"""Bounded exponential backoff with full jitter, for the retries that are the SDK's own.

librdkafka already retries sends until ``delivery.timeout.ms``; the SDK retries only what never
reached librdkafka's queue: a full local queue (``BufferError``) and transient produce-time or
Schema Registry errors. Those cannot duplicate, so retrying is safe, but it must stay bounded:
by attempts, by a cap on each delay, and by a deadline on the total time, so a caller is never
held longer than it configured.

Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): the n-th delay is uniform in
``[0, min(max_delay, initial_delay * 2**n)]``, which spreads retries of many producers apart.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["Backoff", "RetryPolicy"]

log = logging.getLogger("sluice.retry")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Limits of one message's retries.

    ``max_attempts`` counts every try including the first; ``deadline`` (seconds) bounds the time
    from the first try to the start of the last one (``math.inf``: no deadline). The defaults are
    chosen so the attempts can outlast the deadline: the sum of the capped delays of 63 retries
    (about 28.6 s) is well above 10 s, so a full queue is absorbed for up to the deadline, not for
    a fraction of a second.
    """

    max_attempts: int = 64
    initial_delay: float = 0.005
    max_delay: float = 0.5
    deadline: float = 10.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.initial_delay < 0 or self.max_delay < 0 or self.deadline < 0:
            raise ValueError("delays and deadline must be >= 0")
        if self.initial_delay > self.max_delay:
            raise ValueError("initial_delay must not exceed max_delay")
        if self.max_attempts > 1:
            # Retries that never wait spin on the CPU; retries that may never start contradict themselves.
            if self.initial_delay == 0:
                raise ValueError("initial_delay must be > 0 when retries are allowed (a zero backoff never grows)")
            if self.deadline == 0:
                raise ValueError("deadline=0 allows no retry: use max_attempts=1")
            if math.isfinite(self.deadline) and self.reachable_budget() < self.deadline:
                log.warning(
                    "sluice: RetryPolicy(max_attempts=%d, max_delay=%s) waits at most %.3fs in all, "
                    "below its deadline of %ss: the attempts run out first",
                    self.max_attempts, self.max_delay, self.reachable_budget(), self.deadline,
                )

    def reachable_budget(self) -> float:
        """The longest the retries can wait in total: the sum of every retry's cap."""
        total = 0.0
        for retry in range(self.max_attempts - 1):
            total += self.cap(retry)
            if total >= self.deadline:
                break
        return total

    def cap(self, retry: int) -> float:
        """Upper bound of the delay before retry number ``retry`` (0-based)."""
        if retry >= 1000:  # the cap is reached long before; avoids float overflow
            return self.max_delay
        return min(self.max_delay, math.ldexp(self.initial_delay, retry))

    def schedule(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """The delays between attempts, assuming each attempt itself takes no time."""
        backoff = Backoff(self, start=0.0, rand=rand)
        elapsed = 0.0
        while True:
            delay = backoff.next_delay(elapsed)
            if delay is None:
                return
            elapsed += delay
            yield delay


class Backoff:
    """The retry state of one message: call `next_delay` after each failed attempt."""

    __slots__ = ("_rand", "attempts", "policy", "start")

    def __init__(self, policy: RetryPolicy, start: float, rand: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self.start = start
        self.attempts = 1  # the attempt that just failed
        self._rand = rand

    def next_delay(self, now: float) -> float | None:
        """Seconds to wait before the next attempt, or None when the budget is spent."""
        policy = self.policy
        if self.attempts >= policy.max_attempts:
            return None
        remaining = policy.deadline - (now - self.start)
        if remaining <= 0:
            return None
        delay = min(self._rand() * policy.cap(self.attempts - 1), remaining)
        self.attempts += 1
        return delay
