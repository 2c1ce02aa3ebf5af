"""Damping of the control loop: an EWMA on the backlog (default ``alpha = 0.7``) and an optional cap
on how fast delays relax (default ``maxRelaxRatioPerInterval = 1``: off).

* ``smoothing.alpha``: an exponentially weighted moving average of the backlog, one step per
  good reading: ``s = s_prev + alpha * (b - s_prev)`` (the first reading starts it; a constant backlog
  stays exactly constant, so it can never drift across a threshold by rounding).
* ``smoothing.maxRelaxRatioPerInterval``: a delay may fall by at most this fraction per evaluation:
  ``delay >= floor(previous * (1 - ratio))``. Rounding down lets a relaxing delay reach 0.

alpha 0.7 was chosen with the simulator (bench/RESULTS.md: 5x fewer zone changes on flapping-edge);
the zone is never smoothed by the relax cap,
only the delay, so a priority may briefly report green with a decaying delay.
"""

from __future__ import annotations

__all__ = ["ewma", "relax_floor"]


def ewma(previous: float | None, value: float, alpha: float) -> float:
    """One EWMA step; `alpha` 1 (or no history) returns `value`."""
    if previous is None or alpha >= 1.0:
        return value
    return previous + alpha * (value - previous)


def relax_floor(previous_ms: int, ratio: float) -> int:
    """The smallest delay allowed after `previous_ms` when delays relax by at most `ratio`."""
    if ratio >= 1.0 or previous_ms <= 0:
        return 0
    return int(previous_ms * (1.0 - ratio))
