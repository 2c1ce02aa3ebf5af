"""The engine's memory of one policy, and its round trip through ``BackpressurePolicyStatus``.

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
from dataclasses import dataclass
from typing import Any

from sluice.decision import PRIORITIES, DecisionSource, Enforcement, Priority, Zone
from sluice_operator.api.policy import BackpressurePolicyStatus, PriorityStatus
from sluice_operator.engine.clock import from_rfc3339, quantize, to_rfc3339

__all__ = ["INITIAL_MEMORY", "PolicyMemory", "PriorityMemory", "from_status", "seed", "to_status"]


@dataclass(frozen=True, slots=True)
class PriorityMemory:
    """One priority's last decision and since when it has been in its zone (None: long ago)."""

    zone: Zone
    since: float | None
    delay_ms: int
    shed: bool
    ratio: float


@dataclass(frozen=True, slots=True)
class PolicyMemory:
    """Everything `evaluate` carries from one evaluation to the next."""

    priorities: tuple[PriorityMemory, PriorityMemory, PriorityMemory]  # high, medium, low
    epoch: int
    source: DecisionSource | None  # of the last published decision; None before the first
    enforcement: Enforcement | None
    backlog: float | None  # the last raw reading (None when it was unavailable)
    smoothed_backlog: float | None
    last_good_at: float | None
    last_evaluated: float | None

    def get(self, priority: Priority) -> PriorityMemory:
        """The memory of `priority`."""
        return self.priorities[PRIORITIES.index(priority)]


_GREEN = PriorityMemory(zone="green", since=None, delay_ms=0, shed=False, ratio=0.0)
#: The memory of a policy never evaluated: green everywhere, epoch 0, nothing published yet.
INITIAL_MEMORY = PolicyMemory(
    priorities=(_GREEN, _GREEN, _GREEN),
    epoch=0,
    source=None,
    enforcement=None,
    backlog=None,
    smoothed_backlog=None,
    last_good_at=None,
    last_evaluated=None,
)


def _time(t: float | None) -> str | None:
    return None if t is None else to_rfc3339(t)


def _parse_time(text: str | None) -> float | None:
    return None if text is None else from_rfc3339(text)


def to_status(memory: PolicyMemory) -> dict[str, Any]:
    """The status fields that hold `memory` (merge them into the policy's status)."""
    return {
        "priorities": {
            p: {
                "zone": pm.zone,
                "delayMs": pm.delay_ms,
                "shed": pm.shed,
                "ratio": pm.ratio,
                "since": _time(pm.since),
            }
            for p, pm in zip(PRIORITIES, memory.priorities, strict=True)
        },
        "backlog": memory.backlog,
        "smoothedBacklog": memory.smoothed_backlog,
        "source": memory.source,
        "enforcement": memory.enforcement,
        "epoch": memory.epoch,
        "lastEvaluated": _time(memory.last_evaluated),
        "lastGoodAt": _time(memory.last_good_at),
    }


def _priority(ps: PriorityStatus) -> PriorityMemory:
    return PriorityMemory(
        zone=ps.zone, since=_parse_time(ps.since), delay_ms=ps.delay_ms, shed=ps.shed, ratio=ps.ratio
    )


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
    prios = INITIAL_MEMORY.priorities
    if st.priorities is not None:
        prios = (_priority(st.priorities.high), _priority(st.priorities.medium), _priority(st.priorities.low))
    return PolicyMemory(
        priorities=prios,
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
    `sluice decide --previous-zone`; `since` None means "long enough ago for the dwell to pass"."""
    since = None if since is None else quantize(since)
    prios = tuple(
        PriorityMemory(zone=zones[p], since=since, delay_ms=0, shed=False, ratio=0.0) if p in zones else _GREEN
        for p in PRIORITIES
    )
    return PolicyMemory(
        priorities=(prios[0], prios[1], prios[2]),
        epoch=0,
        source=None,
        enforcement=None,
        backlog=None,
        smoothed_backlog=None,
        last_good_at=None,
        last_evaluated=None,
    )
