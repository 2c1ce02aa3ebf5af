"""The engine's memory of one policy, and its round trip through ``BackpressurePolicyStatus``.

Layout, chosen for the garbage collector: a policy's memory is one named tuple whose per-priority
parts are columns of plain tuples (zones, since, delays, ...). Plain tuples of numbers and strings
are untracked by Python's cyclic collector right after they are made, so each evaluation leaves
exactly one tracked object behind instead of five. With 10,000 policies re-evaluated every few
seconds, fewer surviving objects means fewer full collections over the whole heap, which cost more
than the evaluations themselves (see bench/engine.py). Immutable, about 0.5 KB per policy.

The memory *is* the last published decision (before Observe zeroes it) plus what the control loop
needs to continue: since when each priority is in its zone, the smoothed backlog, the last good
reading and the epoch. Everything lives in status fields, so an operator restarted from the
status takes exactly the decisions it would have taken without the restart.

Status layout (camelCase, times RFC 3339 UTC with microseconds)::

    priorities: {high|medium|low: {zone, delayMs, shed, ratio, since}}
    backlog, smoothedBacklog, source, enforcement, epoch, lastEvaluated, lastGoodAt

In Observe mode ``delayMs``/``shed`` are what Enforce would publish (the decision document carries
``delayMs: 0`` plus ``wouldDelayMs``). Nullable fields are written as ``None``: in a merge patch
that deletes a stale value instead of leaving it behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, TypeVar

from sluice.decision import PRIORITIES, DecisionSource, Enforcement, Priority, Zone
from sluice_operator.api.policy import BackpressurePolicyStatus, PriorityStatus
from sluice_operator.engine.clock import from_rfc3339, quantize, to_rfc3339
from sluice_operator.engine.drain import FULL, INITIAL_CONTROL, ControlMemory

_T = TypeVar("_T")

__all__ = [
    "INITIAL_MEMORY",
    "PolicyMemory",
    "PriorityMemory",
    "from_status",
    "seed",
    "to_status",
]


class PriorityMemory(NamedTuple):
    """One priority's last decision and since when it has been in its zone (None: long ago).

    A view built on access; `PolicyMemory` stores the priorities column-wise.
    """

    zone: Zone
    since: float | None
    delay_ms: int
    shed: bool
    ratio: float


Triple = tuple[_T, _T, _T]


class PolicyMemory(NamedTuple):
    """Everything `evaluate` carries from one evaluation to the next (per-priority columns are
    ordered high, medium, low). The defaults are a policy never evaluated: green everywhere, epoch 0,
    nothing published yet (`INITIAL_MEMORY`)."""

    zones: Triple[Zone] = ("green", "green", "green")
    since: Triple[float | None] = (None, None, None)
    delays_ms: Triple[int] = (0, 0, 0)
    shed: Triple[bool] = (False, False, False)
    ratios: Triple[float] = (0.0, 0.0, 0.0)
    epoch: int = 0
    source: DecisionSource | None = None  # of the last published decision; None before the first
    enforcement: Enforcement | None = None
    backlog: float | None = None  # the last raw reading (None when it was unavailable)
    smoothed_backlog: float | None = None
    last_good_at: float | None = None
    last_evaluated: float | None = None
    control: ControlMemory = INITIAL_CONTROL  # the DrainTime loop (untouched in Zones mode)
    pacing: bool = False  # the published decision carries admitRatio (DrainTime, not degraded)
    control_degraded: str | None = None  # why DrainTime fell back to Zones

    def get(self, priority: Priority) -> PriorityMemory:
        """The memory of `priority`."""
        i = PRIORITIES.index(priority)
        return PriorityMemory(self.zones[i], self.since[i], self.delays_ms[i], self.shed[i], self.ratios[i])

    @property
    def priorities(self) -> Triple[PriorityMemory]:
        """high, medium, low."""
        return (self.get("high"), self.get("medium"), self.get("low"))


#: The memory of a policy never evaluated.
INITIAL_MEMORY = PolicyMemory()


def _time(t: float | None) -> str | None:
    return None if t is None else to_rfc3339(t)


def _parse_time(text: str | None) -> float | None:
    return None if text is None else from_rfc3339(text)


def to_status(memory: PolicyMemory) -> dict[str, Any]:
    """The status fields that hold `memory` (merge them into the policy's status)."""
    return {
        "priorities": {
            p: {
                "zone": memory.zones[i],
                "delayMs": memory.delays_ms[i],
                "shed": memory.shed[i],
                "ratio": memory.ratios[i],
                "since": _time(memory.since[i]),
            }
            for i, p in enumerate(PRIORITIES)
        },
        "backlog": memory.backlog,
        "smoothedBacklog": memory.smoothed_backlog,
        "source": memory.source,
        "enforcement": memory.enforcement,
        "epoch": memory.epoch,
        "lastEvaluated": _time(memory.last_evaluated),
        "lastGoodAt": _time(memory.last_good_at),
        "control": _control_status(memory),
    }


def _control_status(memory: PolicyMemory) -> dict[str, Any] | None:
    c = memory.control
    if c.mu is None and not memory.pacing and memory.control_degraded is None:
        return None  # Zones mode, never measured: nothing to show
    return {
        "mode": "DrainTime",
        "consumptionRate": c.mu,
        "allowedRate": c.allowed,
        "integral": c.integral,
        "degraded": memory.control_degraded,
        "pacing": memory.pacing,
        "admitRatios": {p: c.admit[i] for i, p in enumerate(PRIORITIES)},
        "offeredRates": None if c.offered is None else {p: c.offered[i] for i, p in enumerate(PRIORITIES)},
    }


def from_status(status: Mapping[str, Any] | None) -> PolicyMemory | None:
    """The memory held in `status`; None for a policy never evaluated.

    Raises pydantic.ValidationError or ValueError when the status is malformed; the caller then
    starts from scratch (None) and says so.
    """
    if not status:
        return None
    st = BackpressurePolicyStatus.model_validate(dict(status))
    if st.priorities is None and st.epoch == 0:
        return None
    base = INITIAL_MEMORY
    if st.priorities is not None:
        ps: Triple[PriorityStatus] = (st.priorities.high, st.priorities.medium, st.priorities.low)
        base = base._replace(
            zones=(ps[0].zone, ps[1].zone, ps[2].zone),
            since=(_parse_time(ps[0].since), _parse_time(ps[1].since), _parse_time(ps[2].since)),
            delays_ms=(ps[0].delay_ms, ps[1].delay_ms, ps[2].delay_ms),
            shed=(ps[0].shed, ps[1].shed, ps[2].shed),
            ratios=(ps[0].ratio, ps[1].ratio, ps[2].ratio),
        )
    control = INITIAL_CONTROL
    pacing = False
    degraded = None
    if st.control is not None:
        c = st.control
        admit = FULL if c.admit_ratios is None else (c.admit_ratios.high, c.admit_ratios.medium, c.admit_ratios.low)
        offered = None if c.offered_rates is None else (
            c.offered_rates.high, c.offered_rates.medium, c.offered_rates.low
        )
        control = ControlMemory(admit, c.integral, c.consumption_rate, c.allowed_rate, offered)
        pacing, degraded = c.pacing, c.degraded
    return base._replace(
        control=control,
        pacing=pacing,
        control_degraded=degraded,
        epoch=st.epoch,
        source=st.source,
        enforcement=st.enforcement,
        backlog=st.backlog,
        smoothed_backlog=st.smoothed_backlog,
        last_good_at=_parse_time(st.last_good_at),
        last_evaluated=_parse_time(st.last_evaluated),
    )


def seed(zones: Mapping[Priority, Zone], *, since: float | None = None) -> PolicyMemory:
    """A memory in which the named priorities are in the given zones (others green), e.g. for
    `sluice decide --previous-zone`; `since` None means "long enough ago for the dwell to pass".
    Delays start at 0, so the relax cap has nothing to hold."""
    at = None if since is None else quantize(since)
    z = tuple(zones.get(p, "green") for p in PRIORITIES)
    s = tuple(at if p in zones else None for p in PRIORITIES)
    return INITIAL_MEMORY._replace(zones=(z[0], z[1], z[2]), since=(s[0], s[1], s[2]))
