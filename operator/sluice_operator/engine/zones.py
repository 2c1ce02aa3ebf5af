"""Zones, ratios and delays of one priority: the formulas of DESIGN.md, every number from the policy.

For a window ``green < yellow < red`` and backlog ``b``:

* ``b <= green``: zone green, ratio 0, delay 0.
* ``green < b <= yellow``: zone yellow, ``r = (b - green) / (yellow - green)``,
  ``delay = yellow.minMs + (yellow.maxMs - yellow.minMs) * r``.
* ``b > yellow``: zone red, ``r = min(1, (b - yellow) / (red - yellow))``,
  ``delay = (red.minMs + (red.maxMs - red.minMs) * r) * priorityScale[p]``; the priority is shed
  when it is listed in ``shedding.priorities`` and ``r > shedding.redRatioAbove`` (strictly).

Two rules the formulas alone do not fix:

* Rounding: delays are rounded to the nearest whole millisecond, halves up (``int(x + 0.5)``), so
  the same inputs give the same integer on every platform.
* Monotonicity: a red delay never falls below ``delays.yellow.maxMs``. Without that floor a
  priority scaled below 1 would get *less* delay just past ``yellow`` than just below it (high
  priority with the defaults: 500 ms at the top of yellow, 250 ms at the bottom of red). The floor
  changes nothing where the scaled red delay is already above the yellow maximum, which includes
  every acceptance number (high at 12000: 2500 ms; medium at 3000: 2000 ms; low at 3000: 7500 ms).

Ratios are clamped to [0, 1]; that matters only when hysteresis holds a priority in a zone the
backlog has already left downward (the ratio is then 0: the bottom of the held zone).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sluice.decision import Priority, Zone

__all__ = [
    "GREEN",
    "RED",
    "YELLOW",
    "ZONES",
    "ZONE_INDEX",
    "PriorityParams",
    "exit_zone",
    "plain",
    "raw_zone",
    "round_ms",
    "zone_values",
]

GREEN: Final = 0
YELLOW: Final = 1
RED: Final = 2
#: Zone names by index; indices order the zones (a higher index is more throttled).
ZONES: Final[tuple[Zone, Zone, Zone]] = ("green", "yellow", "red")
ZONE_INDEX: Final[dict[str, int]] = {"green": GREEN, "yellow": YELLOW, "red": RED}


@dataclass(frozen=True, slots=True)
class PriorityParams:
    """Everything the formulas need for one priority, precomputed once per spec."""

    priority: Priority
    green: float
    yellow: float
    red: float
    green_exit: float  # leave yellow downward at or below this: green * (1 - margin)
    yellow_exit: float  # leave red downward at or below this: yellow * (1 - margin)
    yellow_min_ms: float
    yellow_span_ms: float  # yellow.maxMs - yellow.minMs
    red_min_ms: float
    red_span_ms: float  # red.maxMs - red.minMs
    scale: float  # priorityScale[p]
    red_floor_ms: float  # delays.yellow.maxMs: red never delays less than the top of yellow
    sheds: bool  # p is in shedding.priorities
    shed_ratio_above: float
    conservative_ms: int  # fallback.conservative[p]


def round_ms(value: float) -> int:
    """Nearest whole millisecond, halves up (delays are never negative)."""
    return int(value + 0.5)


def _zone(backlog: float, green: float, yellow: float) -> int:
    """The zone index of `backlog` against the tops of green and yellow: <= green, <= yellow, above."""
    if backlog <= green:
        return GREEN
    if backlog <= yellow:
        return YELLOW
    return RED


def raw_zone(pp: PriorityParams, backlog: float) -> int:
    """The zone index of `backlog` without memory."""
    return _zone(backlog, pp.green, pp.yellow)


def exit_zone(pp: PriorityParams, backlog: float) -> int:
    """The zone index against the thresholds lowered by the hysteresis margin."""
    return _zone(backlog, pp.green_exit, pp.yellow_exit)


def zone_values(pp: PriorityParams, zone: int, backlog: float) -> tuple[float, int, bool]:
    """(ratio, delay_ms, shed) of `zone` at `backlog`; the ratio is clamped to [0, 1]."""
    if zone == GREEN:
        return 0.0, 0, False
    if zone == YELLOW:
        r = (backlog - pp.green) / (pp.yellow - pp.green)
        r = 0.0 if r < 0.0 else (1.0 if r > 1.0 else r)
        return r, round_ms(pp.yellow_min_ms + pp.yellow_span_ms * r), False
    r = (backlog - pp.yellow) / (pp.red - pp.yellow)
    r = 0.0 if r < 0.0 else (1.0 if r > 1.0 else r)
    return r, red_delay_ms(pp, r), pp.sheds and r > pp.shed_ratio_above


def red_delay_ms(pp: PriorityParams, ratio: float) -> int:
    """Red delay at `ratio`, scaled by priority and floored at the top of yellow."""
    delay = (pp.red_min_ms + pp.red_span_ms * ratio) * pp.scale
    return round_ms(delay if delay > pp.red_floor_ms else pp.red_floor_ms)


def plain(pp: PriorityParams, backlog: float) -> tuple[Zone, float, int, bool]:
    """(zone, ratio, delay_ms, shed) at `backlog` with no hysteresis memory."""
    zone = raw_zone(pp, backlog)
    ratio, delay, shed = zone_values(pp, zone, backlog)
    return ZONES[zone], ratio, delay, shed
