"""``spec.control`` of a BackpressurePolicy: Zones (per-message delays) or DrainTime (a rate).

The fields of the DrainTime loop (see `engine.drain` for what each does to the allowed rate R).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sluice_operator.api.common import MAX_BACKLOG, SpecModel, cel_rules

__all__ = ["Control", "PriorityFloors"]


class PriorityFloors(SpecModel):
    """Shares of the allowed rate reserved for each priority (capped by its own offer)."""

    model_config = cel_rules(("self.high + self.medium + self.low <= 1.000001", "floors must add up to at most 1"))

    high: float = Field(default=0.0, ge=0, le=1)
    medium: float = Field(default=0.0, ge=0, le=1)
    low: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _at_most_one(self) -> PriorityFloors:
        total = self.high + self.medium + self.low
        if total > 1.000001:  # the CEL rule's bound: 0.1 + 0.2 + 0.7 is 1.0000000000000002
            raise ValueError(f"floors must add up to at most 1 (they add up to {total:g})")
        return self


class Control(SpecModel):
    """How the decision is made: backlog zones with per-message delays, or a rate for a drain time.

    ``DrainTime`` admits R = mu - (L - targetLag) / drainSeconds msgs/s in total (mu: the measured
    drain rate, L: the backlog), with a PI correction, allocated strictly by priority and published
    as each priority's ``admitRatio``. Zones are still computed and shown, and shedding follows them.
    """

    mode: Literal["Zones", "DrainTime"] = "Zones"
    #: L*: the backlog the loop holds under overload (messages).
    # Default 500: below the point where the default policy sheds low (900), so under steady
    # overload the token buckets do the work and shedding stays the brake for transients.
    # At least 1: the consumer needs a backlog to show what it can drain (see engine.drain).
    target_lag: float = Field(default=500, ge=1, le=MAX_BACKLOG)
    #: T_d: how fast a backlog above targetLag is worked off (seconds); also the P gain, 1/T_d.
    #: Default 120: against 60, goodput held and admitRatio turned about half as often in the
    #: shipped scenarios (bench/drain_control.py; the loop's dead time there is ~16 s).
    drain_seconds: float = Field(default=120, ge=1, le=86400)
    #: T_i: integral time of the PI correction (seconds); 0 turns the integral term off.
    integral_seconds: float = Field(default=300, ge=0, le=86400)
    #: EWMA weight of a new drain-rate reading (1: no smoothing).
    rate_smoothing: float = Field(default=0.5, gt=0, le=1)
    #: The smallest change of a published admitRatio (keeps noise from rewriting the decision).
    deadband: float = Field(default=0.05, ge=0, le=0.5)
    floors: PriorityFloors = PriorityFloors()
    #: PromQL for the offered rate per priority (msgs/s, one series per `priority` label). Default:
    #: the SDK's sluice_producer_offered_total of this policy. A raw query follows
    #: SLUICE_RAW_QUERY_NAMESPACES.
    offered_query: str | None = Field(default=None, min_length=1, max_length=4096)
