"""Local pacing for DrainTime control: a token bucket per priority, refilled at admitRatio x offered.

Pure: no I/O, no clock; every method takes the monotonic time. One `Pacer` per priority lives as
long as its producer; threads and asyncio tasks share it, so each method holds a lock for the few
arithmetic operations it does (never across a wait).

**The offered rate** is this producer's own rate of ``produce()``/``aproduce()`` calls of the
priority, estimated from its cumulative offered counter (``sluice_producer_offered_total``) over a
sliding window: the producer samples the counter about ``SLOTS_PER_WINDOW`` times per window (on its
millisecond tick, so the passthrough path pays nothing per message) and the rate is the counter's
increase since the newest sample at least one window old, divided by the time since then. When that
sample is older than a window plus a slot the producer was idle in between (a call would have taken
a sample), so the span is clamped to ``window + slot``: after an idle period the estimate ramps up
over one window instead of being diluted by the idle time. The span is at least one slot, so the
first calls after the estimator is created do not read as a huge rate.

**The bucket** is refilled at ``r = admitRatio x offered rate`` and holds at most
``max(1, r x BUCKET_DEPTH_S)`` tokens. Small, because a deep bucket lets a lull's unused tokens
through as a burst the consumer pays for later, and the operator's allocation is a rate; at least
one token, or a low rate (below ``1 / BUCKET_DEPTH_S``) could never accumulate a whole token.
``admitRatio == 0`` means no token at all, not even the one a bucket would hold.

Tokens are counted as two cumulative numbers, ``credit`` (tokens made) and ``taken`` (tokens
handed out or promised). A message that may wait takes a **ticket**: the number of the token it
will use (``taken + 1``). It is ready once ``credit`` reaches its ticket, so waiting messages are
served in arrival order and each knows how long to sleep (no thundering herd). A message that gives
up (deadline, open circuit, cancelled) `cancel`s its ticket: one token of credit goes back, which
moves every later ticket one place forward. A message that may not wait (``excess: shed``) gets a
token only when one is free after every ticket ahead of it.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Final

__all__ = ["BUCKET_DEPTH_S", "SLOTS_PER_WINDOW", "Pacer", "RateEstimator"]

#: The bucket holds this many seconds of tokens at the current rate (at least one token).
BUCKET_DEPTH_S: Final = 0.2
#: How many samples of the offered counter the estimator keeps per window.
SLOTS_PER_WINDOW: Final = 10


class RateEstimator:
    """The rate of a cumulative counter over a sliding window of ``window_s`` seconds."""

    __slots__ = ("_samples", "slot_s", "window_s")

    def __init__(self, window_s: float, now: float, total: int = 0) -> None:
        if not window_s > 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self.slot_s = window_s / SLOTS_PER_WINDOW
        self._samples: deque[tuple[float, int]] = deque([(now, total)])

    def observe(self, now: float, total: int) -> None:
        """Record the counter's value (kept at most once per slot)."""
        samples = self._samples
        if now - samples[-1][0] >= self.slot_s:
            samples.append((now, total))
        horizon = now - self.window_s
        while len(samples) > 1 and samples[1][0] <= horizon:
            samples.popleft()

    def rate(self, now: float, total: int) -> float:
        """Events per second over the last window, ``total`` being the counter's value now."""
        self.observe(now, total)
        t0, n0 = self._samples[0]
        span = min(max(now - t0, self.slot_s), self.window_s + self.slot_s)
        return max(0, total - n0) / span


class Pacer:
    """One priority's token bucket, refilled at ``ratio x`` the offered rate."""

    __slots__ = ("_credit", "_last", "_lock", "_taken", "estimator")

    def __init__(self, window_s: float, now: float, total: int = 0) -> None:
        self.estimator = RateEstimator(window_s, now, total)
        self._lock = threading.Lock()
        self._credit = 0.0
        self._taken = 0
        self._last: float | None = None

    # -- the offered rate ----------------------------------------------------------------------------

    def observe(self, now: float, total: int) -> None:
        """Sample the cumulative offered counter (the producer's tick does, paced or not)."""
        with self._lock:
            self.estimator.observe(now, total)

    def rate(self, now: float, ratio: float, total: int) -> float:
        """The refill rate now: ``ratio x`` the offered rate (0 when ``ratio`` is 0)."""
        with self._lock:
            return self._rate(now, ratio, total)

    # -- tokens ----------------------------------------------------------------------------------------

    def try_take(self, now: float, ratio: float, total: int) -> bool:
        """Take a free token now (True), or none is free (False); for messages that may not wait."""
        with self._lock:
            self._refill(now, ratio, total)
            if self._credit - self._taken >= 1:
                self._taken += 1
                return True
            return False

    def reserve(self, now: float, ratio: float, total: int) -> int:
        """Take a ticket: the number of the token this message will use."""
        with self._lock:
            self._refill(now, ratio, total)
            self._taken += 1
            return self._taken

    def wait_for(self, ticket: int, now: float, ratio: float, total: int) -> float:
        """Seconds until ``ticket``'s token exists at the current rate: 0 ready, inf never."""
        with self._lock:
            rate = self._refill(now, ratio, total)
            missing = ticket - self._credit
            if missing <= 0:
                return 0.0
            return missing / rate if rate > 0 else math.inf

    def cancel(self, ticket: int, now: float, ratio: float, total: int) -> None:
        """Give up ``ticket`` before its token came: later tickets move one place forward."""
        with self._lock:
            self._refill(now, ratio, total)
            if self._credit < ticket:
                self._credit += 1.0

    @property
    def available(self) -> float:
        """Free tokens (negative: tickets waiting for tokens) as of the last call."""
        return self._credit - self._taken

    # -- internals (the lock is held) --------------------------------------------------------------------

    def _rate(self, now: float, ratio: float, total: int) -> float:
        if ratio <= 0:
            return 0.0
        return ratio * self.estimator.rate(now, total)

    def _refill(self, now: float, ratio: float, total: int) -> float:
        rate = self._rate(now, ratio, total)
        ceiling = self._taken + max(1.0, rate * BUCKET_DEPTH_S)
        if ratio <= 0:
            self._credit = min(self._credit, float(self._taken))  # no token, not even a stored one
        elif self._last is None:
            self._credit = ceiling  # a new bucket starts full
        else:
            self._credit = min(self._credit + rate * max(0.0, now - self._last), ceiling)
        self._last = now
        return rate
