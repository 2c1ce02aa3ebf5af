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

``spec.control.mode: DrainTime`` (see `engine.drain`) runs on a usable reading with the measured
rates: every published delay is 0 and each priority carries ``admit_ratio``; zones and shedding
are computed as above. Without the rates (or the reading) the Zones behaviour applies and
``control_degraded`` says why. An override replaces the rate loop as it replaces the zones.

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

from sluice.decision import PRIORITIES, DecisionSource, Enforcement, Excess, Priority, Zone
from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.engine.drain import FULL, Rates, control
from sluice_operator.engine.fallback import effective_mode, fallback_reason
from sluice_operator.engine.hysteresis import settle
from sluice_operator.engine.params import PolicyParams, compile_policy
from sluice_operator.engine.policy_state import INITIAL_MEMORY, PolicyMemory
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

__all__ = ["Outcome", "PriorityOutcome", "Rates", "ZoneChange", "evaluate"]

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
    admit_ratio: float | None = None  # DrainTime: the share of its offer this priority may produce
    excess: Excess | None = None  # DrainTime: what a message over that share does
    would_admit_ratio: float | None = None  # Observe + DrainTime


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one evaluation, including the memory to pass to the next one.

    Only what the memory does not already hold is stored; the rest are properties, and the
    per-priority results are built on access (evaluation stays cheap, reading costs ~2 us).
    """

    memory: PolicyMemory
    zone_changes: tuple[ZoneChange, ...]
    changed: bool  # the published content changed, so the epoch increased
    reason: str
    fallback_delays: tuple[int, int, int]  # fallback.conservative, for the document
    excess: tuple[Excess, Excess, Excess] | None = None  # DrainTime: per priority, from the spec

    @property
    def pacing(self) -> bool:
        """The decision carries admitRatio (DrainTime on usable rates)."""
        return self.memory.pacing

    @property
    def allowed_rate(self) -> float | None:
        """R, the total msgs/s the rate loop admits (None unless pacing)."""
        return self.memory.control.allowed if self.memory.pacing else None

    @property
    def consumption_rate(self) -> float | None:
        """The smoothed drain rate mu (msgs/s) the loop last used."""
        return self.memory.control.mu

    @property
    def control_degraded(self) -> str | None:
        """Why DrainTime fell back to Zones this evaluation (None: it did not, or Zones mode)."""
        return self.memory.control_degraded

    @property
    def priorities(self) -> tuple[PriorityOutcome, PriorityOutcome, PriorityOutcome]:
        """high, medium, low: Observe publishes delay 0 and no shedding, with `would_*` set."""
        m = self.memory
        observe = m.enforcement == "Observe"
        admit = m.control.admit if m.pacing else None
        excess = self.excess
        out = [
            PriorityOutcome(
                p, m.zones[i], 0, False, m.delays_ms[i], m.shed[i], m.ratios[i],
                would_admit_ratio=None if admit is None else admit[i],
            )
            if observe
            else PriorityOutcome(
                p, m.zones[i], m.delays_ms[i], m.shed[i], None, None, m.ratios[i],
                admit_ratio=None if admit is None else admit[i],
                excess=None if admit is None or excess is None else excess[i],
            )
            for i, p in enumerate(PRIORITIES)
        ]
        return (out[0], out[1], out[2])

    def get(self, priority: Priority) -> PriorityOutcome:
        """The outcome of `priority`."""
        return self.priorities[PRIORITIES.index(priority)]

    @property
    def source(self) -> DecisionSource:
        """prometheus | kafka (a usable reading), fallback, or override."""
        source = self.memory.source
        assert source is not None  # set by every evaluation
        return source

    @property
    def enforcement(self) -> Enforcement:
        enforcement = self.memory.enforcement
        assert enforcement is not None
        return enforcement

    @property
    def backlog(self) -> float | None:
        """The raw reading used (None when unavailable)."""
        return self.memory.backlog

    @property
    def smoothed_backlog(self) -> float | None:
        return self.memory.smoothed_backlog

    @property
    def epoch(self) -> int:
        """The epoch of the published content."""
        return self.memory.epoch

    @property
    def fallback_engaged(self) -> bool:
        """The published decision comes from the fallback mode."""
        return self.memory.source == "fallback"

    @property
    def signal_lost(self) -> bool:
        """This evaluation had no usable reading (even if an override hid that)."""
        return self.memory.backlog is None


def _signal_values(
    params: PolicyParams, prev: PolicyMemory, backlog: float, now: float
) -> tuple[list[_Values], list[str]]:
    dwell = params.min_dwell_seconds
    relax = params.max_relax_ratio
    out: list[_Values] = []
    holds: list[str] = []
    for pp, held_zone, since, previous_ms in zip(
        params.priorities, prev.zones, prev.since, prev.delays_ms, strict=True
    ):
        held = ZONE_INDEX[held_zone]
        raw = raw_zone(pp, backlog)
        zone = settle(held, raw, exit_zone(pp, backlog) if raw < held else raw, since, now, dwell)
        ratio, delay, shed = zone_values(pp, zone, backlog)
        if relax < 1.0 and delay < previous_ms:
            delay = max(delay, relax_floor(previous_ms, relax))
        out.append((zone, ratio, delay, shed))
        if zone > raw:
            holds.append(_hold_note(pp, zone, since, now, dwell))
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
    rates: Rates | None = None,
) -> Outcome:
    """Decide every priority at `backlog` (None: unavailable) at time `now` (epoch seconds).

    `rates` (drain rate and offer per priority) feed DrainTime control; Zones mode ignores them.
    """
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

    drain = params.drain
    control_memory, pacing, degraded = prev.control, False, None
    if drain is not None and source != "override":
        dt = 0.0 if prev.last_evaluated is None else max(0.0, now - prev.last_evaluated)
        sheds_now = (False, False, False) if values is None else (values[0][3], values[1][3], values[2][3])
        step = control(drain, prev.control, backlog if source == signal else None, rates, dt, sheds_now)
        control_memory, degraded = step.memory, step.degraded
        if degraded is None and values is not None:
            pacing = True
            values = [(zone, ratio, 0, shed) for zone, ratio, _delay, shed in values]
            c = control_memory
            reason += (
                f"; DrainTime: admitting {c.allowed or 0.0:.4g}/s of {sum(c.offered or FULL):.4g}/s offered"
                f" (drain rate {c.mu or 0.0:.4g}/s, target lag {drain.target_lag:g})"
            )
        else:
            reason += f"; DrainTime degraded to Zones: {degraded}"

    enforcement = params.enforcement
    changed = source != prev.source or enforcement != prev.enforcement
    changed = changed or pacing != prev.pacing or (pacing and control_memory.admit != prev.control.admit)
    changes: list[ZoneChange] | None = None
    if values is None:  # LastKnown: keep the last decision as it is
        zones, since, delays, sheds, ratios = prev.zones, prev.since, prev.delays_ms, prev.shed, prev.ratios
    else:
        z: list[Zone] = []
        t: list[float | None] = []
        for i, previous in enumerate(prev.zones):
            zone = ZONES[values[i][0]]
            z.append(zone)
            if zone == previous:
                t.append(prev.since[i])
            else:
                t.append(now)
                if changes is None:
                    changes = []
                changes.append((PRIORITIES[i], previous, zone))
        v0, v1, v2 = values
        zones = (z[0], z[1], z[2])
        since = (t[0], t[1], t[2])
        delays = (v0[2], v1[2], v2[2])
        sheds = (v0[3], v1[3], v2[3])
        ratios = (v0[1], v1[1], v2[1])
        changed = changed or changes is not None or delays != prev.delays_ms or sheds != prev.shed
    if enforcement == "Observe":
        reason += "; Observe: published without delay or shedding"

    memory = PolicyMemory(
        zones,
        since,
        delays,
        sheds,
        ratios,
        prev.epoch + 1 if changed else prev.epoch,
        source,
        enforcement,
        backlog,
        smoothed,
        last_good,
        now,
        control_memory,
        pacing,
        degraded,
    )
    return Outcome(
        memory=memory,
        zone_changes=() if changes is None else tuple(changes),
        changed=changed,
        reason=reason,
        fallback_delays=params.conservative_ms,
        excess=None if drain is None else drain.excess,
    )
