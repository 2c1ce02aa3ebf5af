"""What to publish while the backlog signal is unavailable (``spec.fallback``).

* ``LastKnown``: keep the last published decision (zones, delays, shedding) while
  ``now - lastGoodAt < staleAfterSeconds``; from then on, and when there never was a good reading,
  act as ``Conservative``. "The last decision" is the last one published: after an override that
  ended during an outage, that is the override's decision (until it goes stale).
* ``Conservative``: every priority in zone yellow with ``fallback.conservative`` delays, no shedding.
* ``Permissive``: every priority green, no delay.

The source of a fallback decision is always ``"fallback"``.
"""

from __future__ import annotations

from sluice_operator.engine.params import FallbackMode

__all__ = ["effective_mode", "fallback_reason"]


def effective_mode(mode: FallbackMode, last_good_at: float | None, now: float, stale_after: float) -> FallbackMode:
    """The mode actually applied: LastKnown turns Conservative once stale (or with no good reading)."""
    if mode == "LastKnown" and (last_good_at is None or now - last_good_at >= stale_after):
        return "Conservative"
    return mode


def fallback_reason(
    mode: FallbackMode, applied: FallbackMode, last_good_at: float | None, now: float, stale_after: float
) -> str:
    """A human sentence for the status and the decision document."""
    if applied == "LastKnown" and last_good_at is not None:
        return f"signal unavailable; keeping the last decision (last good reading {now - last_good_at:.0f}s ago)"
    if mode == "LastKnown":
        if last_good_at is None:
            return "signal unavailable and no good reading yet; conservative delays"
        return (
            f"signal unavailable for {now - last_good_at:.0f}s (staleAfterSeconds {stale_after:g}); "
            "conservative delays"
        )
    if applied == "Permissive":
        return "signal unavailable; Permissive: no delay"
    return "signal unavailable; conservative delays"
