"""`evaluate`: one backlog reading (or none) in, the decision for every priority out.

Precedence, highest first:

1. An unexpired override (``now < until``, or no ``until``): ``Disable`` publishes every priority
   green with no delay; ``ForceRed`` publishes every priority red at ratio 1 (delays and shedding
   from the formulas). Source ``"override"``. The memory follows what is published, so after
   ``ForceRed`` ends the priorities leave red through the normal hysteresis, and after
   ``Disable`` they rise to the signal's zone at once.
2. A usable reading: zones, delays and shedding from the (smoothed) backlog with hysteresis.
   Source is the `signal` ("prometheus" or "kafka").
3. No usable reading (None, NaN or infinite): the fallback mode (see `engine.fallback`).
   Source ``"fallback"``.

``Observe`` enforcement applies on top of all three: the published delay is 0 and nothing is shed,
with ``would_delay_ms``/``would_shed`` saying what Enforce would do. A negative backlog (offset
races) counts as 0.

The epoch increases only when what producers act on changes: the source, the enforcement, or any
priority's zone, delay or shedding (not the backlog figure, not the reason text).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from sluice.decision import PRIORITIES, DecisionSource, Enforcement, Priority, Zone
from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.engine.fallback import effective_mode, fallback_reason
from sluice_operator.engine.hysteresis import settle
from sluice_operator.engine.params import PolicyParams, compile_policy
from sluice_operator.engine.policy_state import INITIAL_MEMORY, PolicyMemory, PriorityMemory
from sluice_operator.engine.smoothing import ewma, relax_floor
from sluice_operator.engine.zones import (
    GREEN,
    RED,
    YELLOW,
    ZONE_INDEX,
    ZONES,
    PriorityParams,
    exit_zone,
    raw_zone,
    red_delay_ms,
    zone_values,
)

__all__ = ["Outcome", "PriorityOutcome", "ZoneChange", "evaluate"]

ZoneChange = tuple[Priority, Zone, Zone]  # (priority, from, to)
_Values = tuple[int, float, int, bool]  # (zone index, ratio, delay_ms, shed)
_GREEN_VALUES: _Values = (GREEN, 0.0, 0, False)


@dataclass(frozen=True, slots=True)
class PriorityOutcome:
    """What one priority's producers are told; `would_*` are set only in Observe mode."""

    priority: Priority
    zone: Zone
    delay_ms: int
    shed: bool
    would_delay_ms: int | None
    would_shed: bool | None
    ratio: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one evaluation, including the memory to pass to the next one."""

    priorities: tuple[PriorityOutcome, PriorityOutcome, PriorityOutcome]  # high, medium, low
    source: DecisionSource
    enforcement: Enforcement
    backlog: float | None  # the raw reading used (None when unavailable)
    smoothed_backlog: float | None
    memory: PolicyMemory
    zone_changes: tuple[ZoneChange, ...]
    fallback_engaged: bool  # the published decision comes from the fallback mode
    signal_lost: bool  # this evaluation had no usable reading (even if an override hid it)
    changed: bool  # the published content changed, so the epoch increased
    reason: str
    fallback_delays: tuple[int, int, int]  # fallback.conservative, for the document

    @property
    def epoch(self) -> int:
        """The epoch of the published content."""
        return self.memory.epoch

    def get(self, priority: Priority) -> PriorityOutcome:
        """The outcome of `priority`."""
        return self.priorities[PRIORITIES.index(priority)]


def _signal_values(
    params: PolicyParams, prev: PolicyMemory, backlog: float, now: float
) -> tuple[list[_Values], list[str]]:
    dwell = params.min_dwell_seconds
    relax = params.max_relax_ratio
    out: list[_Values] = []
    holds: list[str] = []
    for pp, pm in zip(params.priorities, prev.priorities, strict=True):
        held = ZONE_INDEX[pm.zone]
        raw = raw_zone(pp, backlog)
        zone = settle(held, raw, exit_zone(pp, backlog) if raw < held else raw, pm.since, now, dwell)
        ratio, delay, shed = zone_values(pp, zone, backlog)
        if relax < 1.0 and delay < pm.delay_ms:
            delay = max(delay, relax_floor(pm.delay_ms, relax))
        out.append((zone, ratio, delay, shed))
        if zone > raw:
            holds.append(_hold_note(pp, zone, pm.since, now, dwell))
    return out, holds


def _hold_note(pp: PriorityParams, zone: int, since: float | None, now: float, dwell: float) -> str:
    exit_at = pp.yellow_exit if zone == RED else pp.green_exit
    note = f"{pp.priority} held in {ZONES[zone]} by hysteresis (leaves at backlog <= {exit_at:g}"
    if since is not None and now - since < dwell:
        note += f", after {dwell - (now - since):.0f}s more dwell"
    return note + ")"


def _fallback_values(params: PolicyParams, prev: PolicyMemory, now: float) -> tuple[list[_Values] | None, str]:
    mode = params.fallback_mode
    applied = effective_mode(mode, prev.last_good_at, now, params.stale_after_seconds)
    reason = fallback_reason(mode, applied, prev.last_good_at, now, params.stale_after_seconds)
    if applied == "LastKnown":
        return None, reason
    if applied == "Permissive":
        return [_GREEN_VALUES, _GREEN_VALUES, _GREEN_VALUES], reason
    return [(YELLOW, 0.0, pp.conservative_ms, False) for pp in params.priorities], reason


def evaluate(
    spec: BackpressurePolicySpec | PolicyParams,
    backlog: float | None,
    now: float,
    memory: PolicyMemory | None,
    *,
    signal: Literal["prometheus", "kafka"] = "prometheus",
) -> Outcome:
    """Decide every priority at `backlog` (None: unavailable) at time `now` (epoch seconds)."""
    params = spec if type(spec) is PolicyParams else compile_policy(spec)
    now = round(now * 1_000_000) / 1_000_000  # status keeps microseconds; see engine.clock
    prev = INITIAL_MEMORY if memory is None else memory
    if backlog is not None:
        if not math.isfinite(backlog):
            backlog = None
        elif backlog < 0.0:
            backlog = 0.0

    smoothed: float | None
    if backlog is not None:
        smoothed = ewma(prev.smoothed_backlog, backlog, params.alpha)
        last_good: float | None = now
    else:
        smoothed = prev.smoothed_backlog
        last_good = prev.last_good_at

    override = params.override_mode
    if override != "None" and params.override_until is not None and now >= params.override_until:
        override = "None"
    source: DecisionSource
    values: list[_Values] | None
    if override == "Disable":
        source, values, reason = "override", [_GREEN_VALUES, _GREEN_VALUES, _GREEN_VALUES], params.override_text
    elif override == "ForceRed":
        source, reason = "override", params.override_text
        values = [
            (RED, 1.0, red_delay_ms(pp, 1.0), pp.sheds and pp.shed_ratio_above < 1.0) for pp in params.priorities
        ]
    elif smoothed is not None and backlog is not None:
        source = signal
        values, holds = _signal_values(params, prev, smoothed, now)
        reason = f"backlog {backlog:g} from {signal}"
        if params.alpha < 1.0:
            reason += f" (smoothed {smoothed:g})"
        if holds:
            reason += "; " + "; ".join(holds)
    else:
        source = "fallback"
        values, reason = _fallback_values(params, prev, now)

    enforcement = params.enforcement
    observe = enforcement == "Observe"
    changed = source != prev.source or enforcement != prev.enforcement
    changes: list[ZoneChange] = []
    mems: list[PriorityMemory] = []
    outs: list[PriorityOutcome] = []
    for i, pm in enumerate(prev.priorities):
        if values is None:  # LastKnown: keep the last decision as it is
            new = pm
        else:
            zone_i, ratio, delay, shed = values[i]
            zone = ZONES[zone_i]
            if zone != pm.zone:
                changes.append((PRIORITIES[i], pm.zone, zone))
                new = PriorityMemory(zone=zone, since=now, delay_ms=delay, shed=shed, ratio=ratio)
                changed = True
            elif delay != pm.delay_ms or shed != pm.shed or ratio != pm.ratio:
                new = PriorityMemory(zone=zone, since=pm.since, delay_ms=delay, shed=shed, ratio=ratio)
                changed = changed or delay != pm.delay_ms or shed != pm.shed
            else:
                new = pm
        mems.append(new)
        if observe:
            outs.append(PriorityOutcome(PRIORITIES[i], new.zone, 0, False, new.delay_ms, new.shed, new.ratio))
        else:
            outs.append(PriorityOutcome(PRIORITIES[i], new.zone, new.delay_ms, new.shed, None, None, new.ratio))
    if observe:
        reason += "; Observe: published without delay or shedding"

    new_memory = PolicyMemory(
        priorities=(mems[0], mems[1], mems[2]),
        epoch=prev.epoch + 1 if changed else prev.epoch,
        source=source,
        enforcement=enforcement,
        backlog=backlog,
        smoothed_backlog=smoothed,
        last_good_at=last_good,
        last_evaluated=now,
    )
    return Outcome(
        priorities=(outs[0], outs[1], outs[2]),
        source=source,
        enforcement=enforcement,
        backlog=backlog,
        smoothed_backlog=smoothed,
        memory=new_memory,
        zone_changes=tuple(changes),
        fallback_engaged=source == "fallback",
        signal_lost=backlog is None,
        changed=changed,
        reason=reason,
        fallback_delays=params.conservative_ms,
    )
