"""DrainTime control: admit the rate the consumer can drain, allocated strictly by priority.

Zones throttle each *caller* with a per-message sleep, which removes no load when every request
does one produce. This controller sets a *rate* instead, as Spark's PID rate estimator, PIE and
Aperture's load scheduler do. With the measured drain rate mu, the backlog L, the target lag L*
and the drain time T_d, the allowed total rate is::

    R = mu - (L - L*) / T_d + I                 above target: the excess is worked off over T_d
    R = mu * (1 + FILL_GAIN * (L* - L) / L*) + I   below target (at least the T_d slope)
    dI/dt = (L* - L) / (T_d * T_i)              the integral corrects a biased mu (T_i: integralSeconds)

Below the target the consumer is not saturated, so the measured mu is what it was *given*, not
what it *can* drain: a slope of 1/T_d alone would take many minutes to discover spare capacity
(measured: 690/s admitted against a 1,000/s consumer, 10 minutes after the step). Below L* the
loop therefore probes multiplicatively, up to twice mu at an empty backlog, which builds the
backlog to L* within a few polls; at L* it is exactly mu, so the two halves meet without a jump.
With ``targetLag`` at least 1 the consumer always has work once producers offer more than it drains.

Anti-windup: I learns from an error clamped to ``INTEGRAL_BAND`` and only while R is not pinned at a
bound in the direction of the error (R <= 0 with the backlog above target, or R covering every
offer with it below), it is clamped to
``MAX_CORRECTION`` of mu, and it leaks away while nothing needs throttling, so a past overload
does not throttle the next quiet minute. R is allocated strictly by priority after each floor
share, and published per priority as ``admitRatio`` = allocated / offered, changed only when it
moves by more than the deadband (relative to the published value), so measurement noise does not
rewrite the decision every poll.

Pure: the rates and the time come in as numbers; the memory is a tuple the caller keeps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from sluice.decision import Excess

__all__ = [
    "FILL_GAIN",
    "FULL",
    "MAX_CORRECTION",
    "ControlMemory",
    "ControlStep",
    "DrainParams",
    "Rates",
    "admit_ratios",
    "allocate",
    "control",
]

Triple = tuple[float, float, float]
#: admitRatio of a priority that is not paced.
FULL: Triple = (1.0, 1.0, 1.0)
#: |I| never exceeds this share of mu: the integral corrects a model error, it does not replace mu.
MAX_CORRECTION = 0.5
#: Near an empty backlog R grows to (1 + FILL_GAIN) * mu (see the module doc) ...
FILL_GAIN = 1.0
#: ... but only below this share of the target lag: above it the consumer is saturated, mu is its
#: capacity, and the gentle T_d slope alone approaches L* (a steeper one oscillates: see bench).
PROBE_FRACTION = 0.2
#: The integral learns from the backlog error clamped to this many target lags: it corrects a
#: steady bias of mu; a transient (a surge's overshoot, unbounded above the target while the error
#: below it is at most L*) is the P term's job, and integrating it in full winds the loop up into an
#: undershoot (measured: step-2x drained to 0 six times in ten minutes).
INTEGRAL_BAND = 1.0
#: Published ratios are rounded to this many decimals (stable documents, readable status).
RATIO_DECIMALS = 4
#: The smallest published change, whatever the deadband (a 0-deadband policy still settles).
MIN_STEP = 1e-4


class Rates(NamedTuple):
    """What the operator measured this poll: mu (msgs/s drained) and the offer per priority."""

    consumed: float | None
    offered: Triple | None  # high, medium, low (msgs/s); None: unknown
    problem: str | None = None  # the reader's own words for what is missing (shown when degraded)


@dataclass(frozen=True, slots=True)
class DrainParams:
    """``spec.control`` compiled into plain numbers."""

    target_lag: float
    drain_seconds: float
    integral_seconds: float  # 0: no integral term
    rate_smoothing: float  # EWMA weight of a new mu reading
    deadband: float  # relative change of a published admitRatio before it is republished
    floors: Triple  # share of R reserved per priority, summing to <= 1
    excess: tuple[Excess, Excess, Excess]  # what a paced message without a token does


class ControlMemory(NamedTuple):
    """What the loop carries from one poll to the next."""

    admit: Triple = FULL  # the published ratios
    integral: float = 0.0  # msgs/s
    mu: float | None = None  # smoothed drain rate
    allowed: float | None = None  # R of the last poll
    offered: Triple | None = None  # the offer of the last poll


INITIAL_CONTROL = ControlMemory()


class ControlStep(NamedTuple):
    """The result of one poll: the ratios to publish and the memory to keep (None: degraded)."""

    memory: ControlMemory
    degraded: str | None  # why the rates could not be used (then the caller falls back to Zones)
    changed: bool  # a published ratio moved


def allocate(total: float, offered: Triple, floors: Triple) -> Triple:
    """Split ``total`` msgs/s: each floor share first (up to its offer), then strictly by priority.

    Never more than ``total`` in all, never more than a priority's own offer.
    """
    budget = max(0.0, total)
    given = [min(o, f * budget) for o, f in zip(offered, floors, strict=True)]
    left = max(0.0, budget - sum(given))
    for i, o in enumerate(offered):
        extra = min(o - given[i], left)
        given[i] += extra
        left -= extra
    return (given[0], given[1], given[2])


def admit_ratios(allocated: Triple, offered: Triple) -> Triple:
    """allocated / offered per priority, in [0, 1]; a priority offering nothing is not paced."""
    out = [1.0 if o <= 0.0 else min(1.0, max(0.0, a / o)) for a, o in zip(allocated, offered, strict=True)]
    return (out[0], out[1], out[2])


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value >= 0.0


def _publish(previous: Triple, raw: Triple, deadband: float, offered: Triple, allowed: float) -> Triple:
    """Keep the published ratios unless one moves what is admitted by more than the deadband.

    The deadband is a share of the total allowed rate R: a priority's new ratio is published when
    ``|new - old| x its offer >= deadband x R`` (a small priority's noise never rewrites the
    decision, a large one's real change always does). When R covers every offer, all go to 1 at once.
    """
    if allowed >= sum(offered):
        return FULL
    out: list[float] = []
    for old, new, o in zip(previous, raw, offered, strict=True):
        new = round(new, RATIO_DECIMALS)
        moved = abs(new - old)
        if new != old and moved >= MIN_STEP and moved * o >= deadband * allowed:
            out.append(new)
        else:
            out.append(old)
    return (out[0], out[1], out[2])


def degraded_reason(backlog: float | None, rates: Rates | None) -> str | None:
    """Why this poll cannot run the rate loop (None: it can)."""
    if backlog is None:
        return "no backlog reading"
    if rates is not None and rates.problem is not None and not (
        _usable(rates.consumed) and rates.offered is not None and all(_usable(o) for o in rates.offered)
    ):
        return rates.problem
    if rates is None or not _usable(rates.consumed):
        return "no consumption rate (mu): check source.prometheus.consumptionQuery or the consumer's offsets"
    if rates.offered is None or not all(_usable(o) for o in rates.offered):
        return (
            "no offered rate per priority: producers must export sluice_producer_offered_total "
            "(SDK metrics scraped by Prometheus), or set spec.control.offeredQuery"
        )
    return None


def control(
    params: DrainParams, memory: ControlMemory, backlog: float | None, rates: Rates | None, dt: float,
    shed: tuple[bool, bool, bool] = (False, False, False),
) -> ControlStep:
    """One poll of the loop, ``dt`` seconds after the previous one (0 on the first).

    ``shed`` marks priorities the zone rules shed this poll: they produce nothing whatever their
    ratio, so R goes to the others (allocating them a share would admit less than R in all and
    drain the backlog below its target).
    """
    reason = degraded_reason(backlog, rates)
    if reason is not None or backlog is None or rates is None or rates.consumed is None or rates.offered is None:
        # Degraded: forget the ratios (the zones take over) but keep mu and I for the return.
        return ControlStep(memory._replace(admit=FULL, allowed=None, offered=None), reason, memory.admit != FULL)
    offered = rates.offered
    wanted: Triple = (
        0.0 if shed[0] else offered[0], 0.0 if shed[1] else offered[1], 0.0 if shed[2] else offered[2]
    )
    mu = rates.consumed if memory.mu is None else memory.mu + params.rate_smoothing * (rates.consumed - memory.mu)
    error = params.target_lag - backlog  # > 0: room to admit more than mu
    proportional = error / params.drain_seconds
    probe_below = PROBE_FRACTION * params.target_lag
    if backlog < probe_below:  # the consumer is idle part of the time: mu under-reads its capacity
        proportional = max(proportional, FILL_GAIN * mu * (probe_below - backlog) / probe_below)
    integral = memory.integral
    demand = sum(wanted)
    allowed = mu + proportional + integral
    if params.integral_seconds > 0 and dt > 0:
        pinned_low = allowed <= 0.0 and error < 0
        pinned_high = allowed >= demand and error > 0
        if pinned_high:
            integral *= math.exp(-dt / params.integral_seconds)  # nothing to throttle: let it go
        elif not pinned_low:
            band = INTEGRAL_BAND * params.target_lag
            learned = min(band, max(-band, error))
            integral += learned / (params.drain_seconds * params.integral_seconds) * dt
        bound = MAX_CORRECTION * mu
        integral = min(bound, max(-bound, integral))
        allowed = mu + proportional + integral
    allowed = max(0.0, allowed)
    raw = admit_ratios(allocate(allowed, wanted, params.floors), offered)
    admit = _publish(memory.admit, raw, params.deadband, wanted, allowed)
    if any(shed):  # a priority the zones shed admits nothing, and the document says so
        admit = (0.0 if shed[0] else admit[0], 0.0 if shed[1] else admit[1], 0.0 if shed[2] else admit[2])
    new = ControlMemory(admit=admit, integral=integral, mu=mu, allowed=allowed, offered=offered)
    return ControlStep(new, None, admit != memory.admit)
