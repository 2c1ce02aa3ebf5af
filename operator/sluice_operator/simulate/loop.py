"""The closed loop in discrete time: producers -> backlog -> operator (the real engine) -> producers.

Each step of ``stepSeconds``:

1. At each poll time (exact, not snapped to the step) the operator reads the backlog
   (``signalAgeSeconds`` old; unavailable inside a ``signalOutages`` window) and calls
   `engine.evaluate` with the memory of the previous poll, exactly as the reconcile cycle does.
   The next poll is ``interval + uniform(0, jitter)`` later.
2. Producers act on the newest decision that has reached them: decision published at ``t_pub``
   reaches a producer at ``t_pub + its propagation delay``. A producer offered ``o`` msgs/s that
   must sleep ``d`` seconds per message sends ``1 / (1/o + d)`` msgs/s, a fraction ``1 / (1 + o*d)``
   of its offer (the SDK sleeps before each send, so the delay caps the rate of a closed-loop
   producer); a shed producer drops everything it is offered (counted as shed, not goodput).
3. The consumer drains up to its capacity; backlog = produced - consumed, never negative.

Modes: ``none`` (producers ignore decisions; the zones reported are those the origin formulas
would publish), ``origin`` (the policy's formulas with margin 0, minDwell 0, no smoothing and a
Conservative fallback, as the origin design had), ``sluice`` (the policy as given).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from sluice.decision import PRIORITIES, Zone
from sluice_operator.api.policy import BackpressurePolicySpec, Fallback, Hysteresis, Smoothing
from sluice_operator.engine import Outcome, PolicyMemory, compile_policy, evaluate
from sluice_operator.engine.zones import ZONE_INDEX
from sluice_operator.simulate.noise import Jitter, poisson, stream
from sluice_operator.simulate.scenario import Scenario, Schedule

__all__ = [
    "MODES",
    "SIM_EPOCH",
    "Evaluation",
    "Mode",
    "PriorityTotals",
    "SimulationResult",
    "simulate",
    "spec_for_mode",
]

Mode = Literal["none", "origin", "sluice"]
MODES: tuple[Mode, ...] = ("none", "origin", "sluice")
#: Simulated time 0 is 2024-01-01T00:00:00Z (an override in the policy is judged against this clock).
SIM_EPOCH = 1_704_067_200.0

_Published = tuple[tuple[int, bool], tuple[int, bool], tuple[int, bool]]  # (delayMs, shed) per priority
_FREE: _Published = ((0, False), (0, False), (0, False))


def spec_for_mode(spec: BackpressurePolicySpec, mode: Mode) -> BackpressurePolicySpec:
    """The spec the operator evaluates in `mode` (`none` observes with the origin formulas)."""
    if mode == "sluice":
        return spec
    return spec.model_copy(
        update={
            "hysteresis": Hysteresis(margin=0.0, min_dwell_seconds=0.0),
            "smoothing": Smoothing(alpha=1.0, max_relax_ratio_per_interval=1.0),
            "fallback": Fallback(mode="Conservative", conservative=spec.fallback.conservative),
        }
    )


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


@dataclass(slots=True)
class PriorityTotals:
    """Message counts of one priority, over the run and inside the surge window."""

    producers: int = 0
    offered: float = 0.0
    goodput: float = 0.0
    shed: float = 0.0
    surge_offered: float = 0.0
    surge_goodput: float = 0.0
    surge_shed: float = 0.0
    after_offered: float = 0.0  # from the end of the surge to the end of the run
    after_goodput: float = 0.0
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
    zone: tuple[list[int], list[int], list[int]] = field(default_factory=lambda: ([], [], []))


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


def _cohorts(scenario: Scenario, seed: int) -> list[list[tuple[float, int]]]:
    """Per priority: (propagation delay, producer count), delays drawn per producer and snapped to
    the step grid (time is discrete anyway), so producers that act alike are computed once."""
    rng = stream(seed, "propagation")
    prop, dt = scenario.propagation, scenario.step_seconds
    out: list[list[tuple[float, int]]] = []
    for p in PRIORITIES:
        group = scenario.producers.get(p)
        counts: Counter[float] = Counter()
        for _ in range(group.count if group is not None else 0):
            delay = prop.delay_seconds + rng.uniform(-prop.jitter_seconds, prop.jitter_seconds)
            counts[round(max(delay, 0.0) / dt) * dt] += 1
        out.append(sorted(counts.items()))
    return out


def _in_windows(t: float, windows: list[tuple[float, float]]) -> bool:
    return any(start <= t < end for start, end in windows)


def _record(result: SimulationResult, t: float, outcome: Outcome) -> None:
    po = outcome.priorities
    result.evaluations.append(
        Evaluation(
            t=t,
            reading=outcome.backlog,
            smoothed=outcome.smoothed_backlog,
            zones=(po[0].zone, po[1].zone, po[2].zone),
            delays_ms=(po[0].delay_ms, po[1].delay_ms, po[2].delay_ms),
            sheds=(po[0].shed, po[1].shed, po[2].shed),
            source=outcome.source,
            changes=tuple((str(p), str(a), str(b)) for p, a, b in outcome.zone_changes),
        )
    )


def simulate(spec: BackpressurePolicySpec, scenario: Scenario, mode: Mode, seed: int | None = None) -> SimulationResult:
    """Run `scenario` against `spec` in `mode`; deterministic for a given seed (default: the scenario's)."""
    seed = scenario.seed if seed is None else seed
    run_spec = spec_for_mode(spec, mode)
    params = compile_policy(run_spec)
    dt = scenario.step_seconds
    steps = max(1, round(scenario.duration_seconds / dt))
    interval = scenario.polling_interval_seconds or spec.polling.interval_seconds
    poll_jitter = (
        scenario.polling_jitter_seconds if scenario.polling_jitter_seconds is not None else spec.polling.jitter_seconds
    )
    noise = scenario.noise
    groups = [scenario.producers.get(p) for p in PRIORITIES]
    offers = [Schedule(g.rate) if g is not None else None for g in groups]
    capacity_at = Schedule(scenario.consumer.capacity)
    cohorts = _cohorts(scenario, seed)
    poll_rng = stream(seed, "polling")
    count_rngs = [stream(seed, f"offered:{p}") for p in PRIORITIES]
    consumer_rng = stream(seed, "consumer")
    jitters = [
        Jitter(stream(seed, f"jitter:{p}"), noise.rate_jitter, noise.jitter_time_constant_seconds, dt)
        for p in PRIORITIES
    ]
    consumer_jitter = Jitter(stream(seed, "jitter:consumer"), noise.rate_jitter, noise.jitter_time_constant_seconds, dt)
    outages = [(w.start, w.end) for w in scenario.signal_outages]
    surge = (scenario.surge.start, scenario.surge.end) if scenario.surge is not None else None
    age_steps = round(scenario.signal_age_seconds / dt)

    result = SimulationResult(
        scenario=scenario,
        mode=mode,
        seed=seed,
        spec=run_spec,
        interval_seconds=interval,
        priorities=(
            PriorityTotals(producers=groups[0].count if groups[0] else 0),
            PriorityTotals(producers=groups[1].count if groups[1] else 0),
            PriorityTotals(producers=groups[2].count if groups[2] else 0),
        ),
    )
    series = result.series
    pub_times: list[float] = [float("-inf")]
    pub_values: list[_Published] = [_FREE]
    # Per priority, per cohort: index into pub_times of the decision that cohort acts on.
    pointers = [[0] * len(c) for c in cohorts]
    memory: PolicyMemory | None = None
    zones = [0, 0, 0]
    history: list[float] = []
    backlog = scenario.initial_backlog
    next_poll = 0.0
    result.peak_backlog = backlog

    for k in range(steps):
        t = k * dt
        history.append(backlog)
        while next_poll < t + dt - 1e-9:  # polls keep their own cadence, whatever the step
            tp = next_poll
            reading = None if _in_windows(tp, outages) else history[max(0, k - age_steps)]
            outcome = evaluate(params, reading, SIM_EPOCH + tp, memory)
            memory = outcome.memory
            _record(result, tp, outcome)
            zones = [ZONE_INDEX[po.zone] for po in outcome.priorities]
            if mode != "none":
                po = outcome.priorities
                pub_times.append(tp)
                pub_values.append(
                    ((po[0].delay_ms, po[0].shed), (po[1].delay_ms, po[1].shed), (po[2].delay_ms, po[2].shed))
                )
            next_poll = tp + interval + (poll_rng.uniform(0.0, poll_jitter) if poll_jitter > 0 else 0.0)

        in_surge = surge is not None and surge[0] <= t < surge[1]
        after_surge = surge is not None and t >= surge[1]
        produced = 0.0
        last = len(pub_times) - 1
        for i in range(3):
            totals = result.priorities[i]
            totals.zone_seconds[zones[i]] += dt
            series.zone[i].append(zones[i])
            group = groups[i]
            offered = accepted = shed = 0.0
            offer = offers[i]
            if group is not None and offer is not None and group.count > 0:
                per_producer = offer.at(t) * jitters[i].next()
                mean = per_producer * group.count * dt
                offered = poisson(count_rngs[i], mean) if noise.poisson else mean
                accept_share = shed_share = 0.0
                ptrs = pointers[i]
                for j, (delay, count) in enumerate(cohorts[i]):
                    ptr = ptrs[j]
                    while ptr < last and pub_times[ptr + 1] + delay <= t + 1e-9:
                        ptr += 1
                    ptrs[j] = ptr
                    delay_ms, is_shed = pub_values[ptr][i]
                    if delay_ms > totals.max_delay_ms:
                        totals.max_delay_ms = delay_ms
                    if is_shed:
                        shed_share += count
                    else:
                        accept_share += count / (1.0 + per_producer * delay_ms / 1000.0)
                accepted = offered * accept_share / group.count
                shed = offered * shed_share / group.count
            totals.offered += offered
            totals.goodput += accepted
            totals.shed += shed
            if in_surge:
                totals.surge_offered += offered
                totals.surge_goodput += accepted
                totals.surge_shed += shed
            elif after_surge:
                totals.after_offered += offered
                totals.after_goodput += accepted
            series.offered[i].append(offered / dt)
            series.goodput[i].append(accepted / dt)
            series.shed[i].append(shed / dt)
            produced += accepted

        capacity_mean = capacity_at.at(t) * consumer_jitter.next() * dt
        capacity = poisson(consumer_rng, capacity_mean) if noise.poisson else capacity_mean
        consumed = min(backlog + produced, capacity)
        backlog = backlog + produced - consumed
        result.capacity += capacity
        result.consumed += consumed
        if in_surge:
            result.surge_capacity += capacity
            result.surge_consumed += consumed
        result.backlog_seconds += backlog * dt
        if backlog > result.peak_backlog:
            result.peak_backlog, result.peak_at = backlog, t + dt
        series.t.append(t + dt)
        series.backlog.append(backlog)
        series.capacity.append(capacity / dt)
        series.consumed.append(consumed / dt)

    result.final_backlog = backlog
    return result
