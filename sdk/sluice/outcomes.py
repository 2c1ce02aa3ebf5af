"""Bookkeeping of message outcomes: the exactly-one-outcome invariant and the recent error rate.

Every message ``produce`` accepts ends in exactly one of four outcomes: *delivered*,
*dead-lettered*, *failed* (known not written) or *in doubt* (may have been written: a timeout, a
purge of a message in flight; both reported to the caller). With ``delivery_reports="errors"``
(the default, for speed) librdkafka reports only failures, so *delivered* is derived:
``accepted - dead_lettered - failed - in_doubt - in_flight``,
where *in flight* counts the messages still inside either producer's queue or awaiting the SDK's
routing. Both producers count a message until its delivery report has been served, so the sum holds
at every quiescent point (and is exact after ``flush``).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

__all__ = ["ErrorRate", "Outcomes"]


@dataclass(frozen=True, slots=True)
class Outcomes:
    """A snapshot of where accepted messages are."""

    accepted: int
    delivered: int
    dead_lettered: int
    failed: int
    in_flight: int
    in_doubt: int = 0

    @property
    def resolved(self) -> int:
        """Messages with a final outcome."""
        return self.delivered + self.dead_lettered + self.failed + self.in_doubt


class ErrorRate:
    """Failures over attempts in a sliding window, from cumulative totals sampled every few seconds.

    Sampling happens on the producer's slow path (at most every ``step`` seconds), so the hot path
    keeps nothing but the counters it bumps anyway.
    """

    def __init__(self, window: float = 60.0, step: float = 5.0, min_samples: int = 5) -> None:
        self.window = window
        self.step = step
        self.min_samples = min_samples
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque()

    def sample(self, now: float, attempts: int, errors: int) -> None:
        """Record cumulative totals (ignored when the last sample is younger than ``step``)."""
        if self._samples and now - self._samples[-1][0] < self.step:
            return
        self._samples.append((now, attempts, errors))
        while len(self._samples) > 1 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()

    def rate(self, attempts: int, errors: int) -> float:
        """Errors per attempt since the oldest kept sample (about one window ago); 0 with too few attempts."""
        base_attempts, base_errors = (self._samples[0][1], self._samples[0][2]) if self._samples else (0, 0)
        d_attempts = attempts - base_attempts
        d_errors = errors - base_errors
        if d_attempts < self.min_samples:
            return 0.0
        return min(1.0, max(0.0, d_errors / d_attempts))
