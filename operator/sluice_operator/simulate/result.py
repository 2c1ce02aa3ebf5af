"""What one simulated run measured: per-poll evaluations, per-priority totals, per-step series.

Plain dataclasses, apart from the loop that fills them, so that `simulate.metrics` and
`simulate.plot` read a run without importing the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sluice.decision import Zone
from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.simulate.modes import Mode
from sluice_operator.simulate.producers import Flow
from sluice_operator.simulate.scenario import Scenario

__all__ = ["Counts", "Evaluation", "PriorityTotals", "Series", "SimulationResult"]

@dataclass(frozen=True, slots=True)
class Evaluation:
    """One operator poll and what it published."""

    t: float
    reading: float | None
    smoothed: float | None
    zones: tuple[Zone, Zone, Zone]
    delays_ms: tuple[int, int, int]
    sheds: tuple[bool, bool, bool]
    source: str
    changes: tuple[tuple[str, str, str], ...]
    admit_ratios: tuple[float | None, float | None, float | None] = (None, None, None)
    allowed_rate: float | None = None  # R (msgs/s), DrainTime only
    consumption_rate: float | None = None  # mu-hat, smoothed (msgs/s)
    measured_consumed: float | None = None  # the raw drain-rate reading given to the engine
    measured_offered: tuple[float, float, float] | None = None
    degraded: str | None = None


@dataclass(slots=True)
class Counts:
    """Messages of one priority over a stretch of the run.

    offered = goodput + shed + lost + rejected + held back (closed loop: the caller was slowed).
    """

    offered: float = 0.0
    goodput: float = 0.0
    shed: float = 0.0
    lost: float = 0.0  # open loop: arrived while the pool was full
    rejected: float = 0.0  # waited for a token past the deadline

    def add(self, offered: float, flow: Flow) -> None:
        """Count one step: `offered` messages arrived, and `flow` is what became of them."""
        self.offered += offered
        self.goodput += flow.goodput
        self.shed += flow.shed
        self.lost += flow.lost
        self.rejected += flow.rejected


@dataclass(slots=True)
class PriorityTotals(Counts):
    """Message counts of one priority over the run (its own fields), inside the surge window and
    after it (from the end of the surge to the end of the run)."""

    producers: int = 0
    kind: str = "closed"
    latency_seconds: float = 0.0  # sum over produced messages of the latency added (delay or wait)
    peak_in_flight: float = 0.0  # per producer, open loop: calls in flight (sleeping or waiting)
    surge: Counts = field(default_factory=Counts)
    after: Counts = field(default_factory=Counts)
    zone_seconds: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    max_delay_ms: int = 0


@dataclass(slots=True)
class Series:
    """Per-step samples for the timeline chart (rates in msgs/s)."""

    t: list[float] = field(default_factory=list)
    backlog: list[float] = field(default_factory=list)
    capacity: list[float] = field(default_factory=list)
    consumed: list[float] = field(default_factory=list)
    offered: tuple[list[float], list[float], list[float]] = field(default_factory=lambda: ([], [], []))
    goodput: tuple[list[float], list[float], list[float]] = field(default_factory=lambda: ([], [], []))
    shed: tuple[list[float], list[float], list[float]] = field(default_factory=lambda: ([], [], []))
    lost: tuple[list[float], list[float], list[float]] = field(default_factory=lambda: ([], [], []))  # + rejected
    zone: tuple[list[int], list[int], list[int]] = field(default_factory=lambda: ([], [], []))
    admit: tuple[list[float], list[float], list[float]] = field(default_factory=lambda: ([], [], []))  # NaN: none
    allowed: list[float] = field(default_factory=list)  # R of the newest evaluation (NaN: none)
    mu: list[float] = field(default_factory=list)  # the engine's mu-hat (NaN: none)


@dataclass(slots=True)
class SimulationResult:
    """Everything one run measured; `simulate.metrics` turns it into metrics.json."""

    scenario: Scenario
    mode: Mode
    seed: int
    spec: BackpressurePolicySpec
    interval_seconds: float
    priorities: tuple[PriorityTotals, PriorityTotals, PriorityTotals]
    evaluations: list[Evaluation] = field(default_factory=list)
    series: Series = field(default_factory=Series)
    peak_backlog: float = 0.0
    peak_at: float = 0.0
    final_backlog: float = 0.0
    backlog_seconds: float = 0.0  # integral of backlog over time (for the mean)
    capacity: float = 0.0
    consumed: float = 0.0
    surge_capacity: float = 0.0
    surge_consumed: float = 0.0
