"""Hysteresis: upward moves are immediate; downward moves need a margin and a minimum dwell.

A priority held in zone Z leaves it downward only when

* it has been in Z for at least ``hysteresis.minDwellSeconds`` (``now - since >= minDwell``; an
  unknown ``since`` counts as long ago), and
* the backlog is at or below Z's lower threshold lowered by the margin, a fraction of that
  threshold: red is left at ``b <= yellow * (1 - margin)``, yellow at ``b <= green * (1 - margin)``.

"At or below" (not strictly below) makes margin 0 and dwell 0 reproduce the memoryless zones
exactly. A priority leaving red whose backlog also satisfies yellow's exit goes straight to green:
both conditions hold, and an extra dwell in yellow would only add lag. While held, the delay is
that of the held zone at the current backlog with the ratio clamped to 0 at the zone's bottom
(see `zones.zone_values`). A constant backlog therefore changes zone at most once.
"""

from __future__ import annotations

__all__ = ["settle"]


def settle(held: int, raw: int, exit_: int, since: float | None, now: float, min_dwell: float) -> int:
    """The zone index to publish, given the held zone, the raw zone and the margin-lowered zone."""
    if raw >= held:
        return raw
    if since is not None and now - since < min_dwell:
        return held
    return exit_ if exit_ < held else held
