"""The demo's script: load per priority over time, and the phases that scale with the duration.

The consumer group handles `CAPACITY` messages/s. Steady load is 70 % of that; the surge offers
three times capacity. Without backpressure the backlog would grow by (offered - capacity) every
second of the surge; `no_control_peak` integrates exactly that, which is the yardstick the verdict
compares the real, controlled peak with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sluice.decision import PRIORITIES, Priority

PhaseName = Literal["steady", "surge", "outage", "recovery"]

#: Messages per second the consumer group processes.
CAPACITY = 200.0
#: Offered load (messages/s) per priority. Steady: 140/s (0.7x capacity). Surge: 600/s (3x).
STEADY: Mapping[Priority, float] = {"high": 50.0, "medium": 50.0, "low": 40.0}
SURGE: Mapping[Priority, float] = {"high": 180.0, "medium": 220.0, "low": 200.0}

#: Share of the scenario each phase takes; the outage and recovery have floors so the circuit
#: breaker (about 3 s to open, 3 s recovery timeout, 2 healthy probes) fits even in a short run.
FRACTIONS: Mapping[PhaseName, float] = {"steady": 0.15, "surge": 0.40, "outage": 0.20, "recovery": 0.25}
MIN_OUTAGE = 5.0
MIN_RECOVERY = 6.0
MIN_SCENARIO = 16.0

LABELS: Mapping[PhaseName, str] = {
    "steady": "steady load",
    "surge": "surge 3x capacity",
    "outage": "broker outage (SIGSTOP)",
    "recovery": "recovery (SIGCONT)",
}


@dataclass(frozen=True, slots=True)
class Phase:
    """One stretch of the scenario, in seconds from its start."""

    name: PhaseName
    start: float
    end: float

    @property
    def label(self) -> str:
        return LABELS[self.name]

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def offered(self) -> Mapping[Priority, float]:
        """Messages/s each priority tries to send in this phase."""
        return SURGE if self.name == "surge" else STEADY


def schedule(scenario_seconds: float) -> tuple[Phase, ...]:
    """The four phases filling `scenario_seconds` (at least `MIN_SCENARIO`)."""
    total = max(MIN_SCENARIO, scenario_seconds)
    outage = max(MIN_OUTAGE, total * FRACTIONS["outage"])
    recovery = max(MIN_RECOVERY, total * FRACTIONS["recovery"])
    rest = total - outage - recovery
    share = FRACTIONS["steady"] / (FRACTIONS["steady"] + FRACTIONS["surge"])
    steady = rest * share
    bounds = [0.0, steady, rest, rest + outage, total]
    names: tuple[PhaseName, ...] = ("steady", "surge", "outage", "recovery")
    return tuple(Phase(name, bounds[i], bounds[i + 1]) for i, name in enumerate(names))


def phase_at(phases: Sequence[Phase], t: float) -> Phase:
    """The phase running at time `t` (the last one after the end)."""
    for phase in phases:
        if t < phase.end:
            return phase
    return phases[-1]


def find(phases: Sequence[Phase], name: PhaseName) -> Phase:
    return next(p for p in phases if p.name == name)


def total_offered(phase: Phase) -> float:
    return sum(phase.offered()[p] for p in PRIORITIES)


def no_control_peak(phases: Sequence[Phase], capacity: float = CAPACITY, start_lag: float = 0.0) -> float:
    """Peak backlog from the start to the end of the surge if producers were never slowed down.

    The backlog grows by (offered - capacity) per second and never drops below zero.
    """
    lag = peak = start_lag
    for phase in phases:
        if phase.name not in ("steady", "surge"):
            break
        lag = max(0.0, lag + (total_offered(phase) - capacity) * phase.seconds)
        peak = max(peak, lag)
    return peak


def no_control_curve(phases: Sequence[Phase], capacity: float = CAPACITY,
                     step: float = 0.5) -> list[tuple[float, float]]:
    """(t, backlog) of the same no-control estimate, for the chart (steady and surge only)."""
    points: list[tuple[float, float]] = []
    lag = 0.0
    for phase in phases:
        if phase.name not in ("steady", "surge"):
            break
        growth = total_offered(phase) - capacity
        t = phase.start
        points.append((t, lag))
        while t < phase.end:
            dt = min(step, phase.end - t)
            t += dt
            lag = max(0.0, lag + growth * dt)
            points.append((t, lag))
    return points
