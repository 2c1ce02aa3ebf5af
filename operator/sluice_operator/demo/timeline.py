"""What the demo records while it runs: samples, the operator's lag readings, circuit transitions.

Times are seconds since the scenario started (setup happens before 0). Counts are cumulative;
rates are differences over a window, computed when the view or the chart asks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sluice.decision import PRIORITIES, Priority
from sluice_operator.demo.scenario import Phase, PhaseName
from sluice_operator.demo.workload import PriorityCounts

#: Fields of PriorityCounts that rates are computed for.
RATE_FIELDS = ("attempted", "sent", "delayed", "shed", "rejected", "failed", "delivered")


@dataclass(frozen=True, slots=True)
class Sample:
    """The state of the loop at one moment, as producers and the consumer see it."""

    t: float
    phase: PhaseName
    lag: float | None  # the operator's latest lag reading (None: Kafka did not answer)
    source: str | None  # where the decision in force came from: kafka, fallback, ...
    epoch: int | None  # decision epoch held by the producers
    zones: Mapping[Priority, str]
    delays: Mapping[Priority, int]
    shed: Mapping[Priority, bool]
    circuit: str  # circuit.json as the producers hold it: closed, open, half-open (or "none")
    circuit_epoch: int | None
    counts: Mapping[Priority, PriorityCounts]
    consumed: int
    #: DrainTime: the admitRatio per priority in the decision producers hold (None: not paced).
    admit: Mapping[Priority, float | None] = field(default_factory=dict)
    #: DrainTime: the operator's smoothed drain rate (mu-hat) and allowed rate R, from the decision's
    #: reason (None when it did not pace, e.g. degraded to Zones).
    operator_mu: float | None = None
    allowed: float | None = None
    degraded: str | None = None  # why DrainTime fell back to Zones, when it did


@dataclass(frozen=True, slots=True)
class LagReading:
    """One lag read of the operator's kafka source."""

    t: float
    value: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class Transition:
    """One circuit state change, from the operator's Events."""

    t: float
    old: str
    new: str
    reason: str


@dataclass
class Timeline:
    phases: tuple[Phase, ...]
    capacity: float
    control: str = "zones"  # zones | drain (`sluice demo --control`)
    samples: list[Sample] = field(default_factory=list)
    readings: list[LagReading] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)

    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def _before(self, t: float) -> Sample | None:
        """The newest sample taken at or before time `t`."""
        for sample in reversed(self.samples):
            if sample.t <= t:
                return sample
        return None

    def rate(self, priority: Priority, name: str, window: float = 1.0) -> float:
        """Messages/s of counter `name` of `priority` over the last `window` seconds."""
        now = self.latest()
        then = self._before(now.t - window) if now is not None else None
        if now is None or then is None or now.t <= then.t:
            return 0.0
        delta = getattr(now.counts[priority], name) - getattr(then.counts[priority], name)
        return float(delta) / (now.t - then.t)

    def consumed_rate(self, window: float = 1.0) -> float:
        now = self.latest()
        then = self._before(now.t - window) if now is not None else None
        if now is None or then is None or now.t <= then.t:
            return 0.0
        return (now.consumed - then.consumed) / (now.t - then.t)

    def series(self, priority: Priority, name: str, window: float = 1.0) -> list[tuple[float, float]]:
        """(t, rate) for every sample, each rate over the `window` before it."""
        return _rates(self.samples, lambda s: float(getattr(s.counts[priority], name)), window)

    def consumed_series(self, window: float = 1.0) -> list[tuple[float, float]]:
        return _rates(self.samples, lambda s: float(s.consumed), window)

    def admitted_series(self, window: float = 1.0) -> list[tuple[float, float]]:
        """(t, msgs/s) sent into Kafka by all priorities together (what DrainTime admitted)."""
        return _rates(self.samples, lambda s: float(sum(s.counts[p].sent for p in PRIORITIES)), window)

    def totals(self) -> dict[Priority, PriorityCounts]:
        last = self.latest()
        return {p: (last.counts[p] if last is not None else PriorityCounts()) for p in PRIORITIES}


def _rates(samples: Sequence[Sample], get: Callable[[Sample], float], window: float) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    j = 0
    for i, sample in enumerate(samples):
        while j < i and samples[j + 1].t <= sample.t - window:
            j += 1
        then = samples[j]
        if then.t >= sample.t:
            continue
        out.append((sample.t, (get(sample) - get(then)) / (sample.t - then.t)))
    return out
