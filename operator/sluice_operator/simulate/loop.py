"""The closed loop in discrete time: producers -> backlog -> operator (the real engine) -> producers.

Each step of ``stepSeconds``:

1. At each poll time (exact, not snapped to the step) the operator reads the backlog
   (``signalAgeSeconds`` old; unavailable inside a ``signalOutages`` window) and calls
   `engine.evaluate` with the memory of the previous poll, exactly as the reconcile cycle does.
   In drain mode it also passes the measured rates: the drain rate (messages actually consumed
   per second over the last ``rateWindowSeconds``) and the offered rate per priority over the same
   window, both as old as the backlog reading. The next poll is ``interval + uniform(0, jitter)``
   later.
2. Producers act on the newest decision that has reached them: decision published at ``t_pub``
   reaches a producer at ``t_pub + its propagation delay``. What a decision does depends on the
   producer group's kind:

   * **closed** (a caller loop): offered ``o`` msgs/s and told to sleep ``d`` seconds per message,
     it sends ``1 / (1/o + d)`` msgs/s, a fraction ``1 / (1 + o*d)`` of its offer; the rest is
     held back (the caller was slowed).
   * **open** (request-driven, one produce call per arriving message, each in its own task): a
     delay holds each call ``d`` seconds, so ``o*d`` calls are in flight (Little's law) and every
     message gets ``d`` of latency; the rate drops only where that exceeds the pool
     (``poolSize`` calls per producer): the pool then completes ``poolSize/d`` calls per second
     and the arrivals that find it full are *lost* (counted apart from shed).

   A shed producer drops everything it is offered (counted as shed, not goodput). Under DrainTime
   (``admitRatio`` published) the delay is 0 and a priority with ``admitRatio < 1`` is paced by a
   token bucket refilled at ``admitRatio x`` its offered rate, measured over ``pacing.windowSeconds``.
   A message without a token of a ``shed`` priority is shed; of a ``wait`` priority it waits up to
   ``pacing.deadlineSeconds`` for a token and is then *rejected* (open loop: it holds a pool slot
   while it waits, and arrivals that find the pool full are lost; closed loop: the caller blocks,
   so the caller is slowed to the token rate, and only a wait longer than the deadline rejects).
3. The consumer drains up to its capacity; backlog = produced - consumed, never negative.

Modes: ``none`` (producers ignore decisions; the zones reported are those the origin formulas
would publish), ``origin`` (the policy's formulas with margin 0, minDwell 0, no smoothing and a
Conservative fallback, as the origin design had), ``zones`` (the policy as given, in Zones mode;
``sluice`` is the same, its old name), ``drain`` (the policy in DrainTime mode).

Simplifications, stated: the measured offer of the token bucket is one average per priority (all
producers of a priority are offered alike); a delayed open-loop message is counted as produced in
the step it arrived (the latency is reported, the shift of at most a few seconds is not modelled);
the offered rate the operator reads is the producers' demand (what ``produce()`` is called with).
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

from sluice.decision import PRIORITIES, Excess, Zone
from sluice_operator.api.policy import BackpressurePolicySpec, Control, Fallback, Hysteresis, Smoothing
from sluice_operator.engine import Outcome, PolicyMemory, Rates, compile_policy, evaluate
from sluice_operator.engine.zones import ZONE_INDEX
from sluice_operator.simulate.noise import Jitter, poisson, stream
from sluice_operator.simulate.scenario import ProducerGroup, Scenario, Schedule

__all__ = [
    "MODES",
    "MODE_ALIASES",
    "SIM_EPOCH",
    "Evaluation",
    "Mode",
    "PriorityTotals",
    "SimulationResult",
    "canonical_mode",
    "simulate",
    "spec_for_mode",
]

#: Accepted mode names; ``sluice`` is the old name of ``zones``.
Mode = Literal["none", "origin", "zones", "drain", "sluice"]
MODES: tuple[Mode, ...] = ("none", "origin", "zones", "drain")
MODE_ALIASES: dict[str, Mode] = {"sluice": "zones"}
#: Simulated time 0 is 2024-01-01T00:00:00Z (an override in the policy is judged against this clock).
SIM_EPOCH = 1_704_067_200.0


@dataclass(frozen=True, slots=True)
class _Pub:
    """What one published decision tells one priority's producers."""

    delay_ms: int = 0
    shed: bool = False
    admit: float | None = None  # admitRatio (DrainTime), None: not paced by a rate
    excess: Excess = "wait"


_Published = tuple[_Pub, _Pub, _Pub]
_FREE: _Published = (_Pub(), _Pub(), _Pub())


def canonical_mode(mode: str) -> Mode:
    """`mode` with its alias resolved (``sluice`` -> ``zones``); ValueError for an unknown one."""
    resolved = MODE_ALIASES.get(mode, mode)
    for m in MODES:
        if m == resolved:
            return m
    raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")


def spec_for_mode(spec: BackpressurePolicySpec, mode: Mode) -> BackpressurePolicySpec:
    """The spec the operator evaluates in `mode` (`none` observes with the origin formulas).

    ``zones`` and ``drain`` keep every field of the policy and set only ``control.mode``.
    """
    mode = canonical_mode(mode)
    control = spec.control
    if mode in ("zones", "drain"):
        wanted = "DrainTime" if mode == "drain" else "Zones"
        if control.mode == wanted:
            return spec
        return spec.model_copy(update={"control": control.model_copy(update={"mode": wanted})})
    return spec.model_copy(
        update={
            "hysteresis": Hysteresis(margin=0.0, min_dwell_seconds=0.0),
            "smoothing": Smoothing(alpha=1.0, max_relax_ratio_per_interval=1.0),
            "fallback": Fallback(mode="Conservative", conservative=spec.fallback.conservative),
            "control": Control() if control.mode != "Zones" else control,
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
    admit_ratios: tuple[float | None, float | None, float | None] = (None, None, None)
    allowed_rate: float | None = None  # R (msgs/s), DrainTime only
    consumption_rate: float | None = None  # mu-hat, smoothed (msgs/s)
    measured_consumed: float | None = None  # the raw drain-rate reading given to the engine
    measured_offered: tuple[float, float, float] | None = None
    degraded: str | None = None


@dataclass(slots=True)
class PriorityTotals:
    """Message counts of one priority, over the run and inside the surge window.

    offered = goodput + shed + lost + rejected + held back (closed loop: the caller was slowed).
    """

    producers: int = 0
    kind: str = "closed"
    offered: float = 0.0
    goodput: float = 0.0
    shed: float = 0.0
    lost: float = 0.0  # open loop: arrived while the pool was full
    rejected: float = 0.0  # waited for a token past the deadline
    latency_seconds: float = 0.0  # sum over produced messages of the latency added (delay or wait)
    peak_in_flight: float = 0.0  # per producer, open loop: calls in flight (sleeping or waiting)
    surge_offered: float = 0.0
    surge_goodput: float = 0.0
    surge_shed: float = 0.0
    surge_lost: float = 0.0
    surge_rejected: float = 0.0
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


def _totals(group: ProducerGroup | None) -> PriorityTotals:
    return PriorityTotals() if group is None else PriorityTotals(producers=group.count, kind=group.kind)


def _in_windows(t: float, windows: list[tuple[float, float]]) -> bool:
    return any(start <= t < end for start, end in windows)


def _record(result: SimulationResult, t: float, outcome: Outcome, rates: Rates | None) -> None:
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
            admit_ratios=(po[0].admit_ratio, po[1].admit_ratio, po[2].admit_ratio),
            allowed_rate=outcome.allowed_rate,
            consumption_rate=outcome.consumption_rate,
            measured_consumed=None if rates is None else rates.consumed,
            measured_offered=None if rates is None else rates.offered,
            degraded=outcome.control_degraded,
        )
    )


def _published(outcome: Outcome) -> _Published:
    po = outcome.priorities
    out = [_Pub(o.delay_ms, o.shed, o.admit_ratio, o.excess or "wait") for o in po]
    return (out[0], out[1], out[2])


def _window_rate(cumulative: list[float], end: int, steps: int, dt: float) -> float | None:
    """Mean rate over the `steps` steps before index `end` of a cumulative count (None: no data yet)."""
    if end <= 0:
        return None
    start = max(0, end - steps)
    return (cumulative[end] - cumulative[start]) / ((end - start) * dt)


class _Flow:
    """What one priority's producers did in one step (message counts)."""

    __slots__ = ("goodput", "latency", "lost", "rejected", "shed")

    def __init__(self) -> None:
        self.goodput = self.shed = self.lost = self.rejected = self.latency = 0.0


def _zone_step(flow: _Flow, group: ProducerGroup, arrived: float, per_producer: float, delay_ms: int) -> float:
    """A delay of `delay_ms` on `arrived` messages of one cohort; returns in-flight calls per producer."""
    d = delay_ms / 1000.0
    if group.kind == "closed":
        flow.goodput += arrived / (1.0 + per_producer * d)
        flow.latency += arrived / (1.0 + per_producer * d) * d
        return 0.0
    if d <= 0.0:
        flow.goodput += arrived
        return 0.0
    pool = float(group.pool_size or 0)
    demand = per_producer * d  # Little's law: calls sleeping at once
    share = 1.0 if demand <= pool else pool / demand
    flow.goodput += arrived * share
    flow.lost += arrived * (1.0 - share)
    flow.latency += arrived * share * d
    return min(demand, pool)


def _closed_paced(flow: _Flow, arrived: float, per_producer: float, tokens_rate: float, deadline: float) -> None:
    """A caller loop paced to `tokens_rate` msgs/s (per producer): it blocks for a token, so it sends
    at the token rate; only when a token is further away than the deadline is a call rejected."""
    if per_producer <= 0.0 or arrived <= 0.0:
        return
    blocked_rate = 1.0 / (1.0 / per_producer + deadline)  # a caller that times out on every call
    if tokens_rate >= blocked_rate:
        sent = min(per_producer, tokens_rate)
        rejected = 0.0
        wait = max(0.0, 1.0 / tokens_rate - 1.0 / per_producer) if tokens_rate > 0 else 0.0
    else:
        sent, rejected, wait = tokens_rate, blocked_rate - tokens_rate, deadline
    flow.goodput += arrived * sent / per_producer
    flow.rejected += arrived * rejected / per_producer
    flow.latency += arrived * sent / per_producer * wait


class _WaitQueue:
    """Open-loop calls of one cohort waiting for a token, oldest first: [arrival step, messages]."""

    __slots__ = ("items", "total")

    def __init__(self) -> None:
        self.items: deque[list[float]] = deque()
        self.total = 0.0

    def expire(self, k: int, deadline_steps: float) -> float:
        """Drop the calls that have waited `deadline_steps` or more; returns how many."""
        dropped = 0.0
        items = self.items
        while items and k - items[0][0] >= deadline_steps:
            dropped += items.popleft()[1]
        self.total -= dropped
        if not items:
            self.total = 0.0
        return dropped

    def serve(self, k: int, tokens: float, dt: float, flow: _Flow) -> float:
        """Give up to `tokens` to the oldest waiting calls; returns the tokens left."""
        items = self.items
        while items and tokens > 0.0:
            head = items[0]
            take = min(tokens, head[1])
            flow.goodput += take
            flow.latency += take * (k - head[0]) * dt
            tokens -= take
            self.total -= take
            if take >= head[1]:
                items.popleft()
            else:
                head[1] -= take
        if not items:
            self.total = 0.0
        return tokens


def _open_paced(
    flow: _Flow, queue: _WaitQueue, k: int, arrived: float, tokens: float, pool: float, dt: float, deadline_steps: float
) -> float:
    """Open-loop arrivals of a `wait` priority against `tokens`; returns the calls now waiting."""
    flow.rejected += queue.expire(k, deadline_steps)
    tokens = queue.serve(k, tokens, dt, flow)
    direct = min(arrived, tokens)
    flow.goodput += direct
    rest = arrived - direct
    if rest > 0.0:
        space = max(0.0, pool - queue.total)
        waiting = min(rest, space)
        flow.lost += rest - waiting
        if waiting > 0.0:
            queue.items.append([float(k), waiting])
            queue.total += waiting
    return queue.total


def simulate(spec: BackpressurePolicySpec, scenario: Scenario, mode: Mode, seed: int | None = None) -> SimulationResult:
    """Run `scenario` against `spec` in `mode`; deterministic for a given seed (default: the scenario's)."""
    mode = canonical_mode(mode)
    seed = scenario.seed if seed is None else seed
    run_spec = spec_for_mode(spec, mode)
    params = compile_policy(run_spec)
    drain = mode == "drain"
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
    window_steps = max(1, round(scenario.rate_window_seconds / dt))
    pacing_gain = min(1.0, dt / scenario.pacing.window_seconds)  # EWMA weight of one step's offer
    deadline_steps = scenario.pacing.deadline_seconds / dt

    result = SimulationResult(
        scenario=scenario,
        mode=mode,
        seed=seed,
        spec=run_spec,
        interval_seconds=interval,
        priorities=(_totals(groups[0]), _totals(groups[1]), _totals(groups[2])),
    )
    series = result.series
    pub_times: list[float] = [float("-inf")]
    pub_values: list[_Published] = [_FREE]
    # Per priority, per cohort: index into pub_times of the decision that cohort acts on.
    pointers = [[0] * len(c) for c in cohorts]
    queues = [[_WaitQueue() for _ in c] for c in cohorts]
    measured = [-1.0, -1.0, -1.0]  # per priority: the token bucket's offer per producer (msgs/s), -1: none yet
    memory: PolicyMemory | None = None
    zones = [0, 0, 0]
    nan = math.nan
    admit_now: list[float] = [nan, nan, nan]
    allowed_now = mu_now = nan
    history: list[float] = []
    cum_consumed: list[float] = [0.0]
    cum_offered: tuple[list[float], list[float], list[float]] = ([0.0], [0.0], [0.0])
    backlog = scenario.initial_backlog
    next_poll = 0.0
    result.peak_backlog = backlog

    for k in range(steps):
        t = k * dt
        history.append(backlog)
        while next_poll < t + dt - 1e-9:  # polls keep their own cadence, whatever the step
            tp = next_poll
            lost_signal = _in_windows(tp, outages)
            reading = None if lost_signal else history[max(0, k - age_steps)]
            rates: Rates | None = None
            if drain and not lost_signal:
                end = k - age_steps
                consumed_rate = _window_rate(cum_consumed, end, window_steps, dt)
                per_priority = [_window_rate(c, end, window_steps, dt) for c in cum_offered]
                if consumed_rate is not None and per_priority[0] is not None:
                    offered_rates = (per_priority[0], per_priority[1] or 0.0, per_priority[2] or 0.0)
                    rates = Rates(consumed=consumed_rate, offered=offered_rates)
            outcome = evaluate(params, reading, SIM_EPOCH + tp, memory, rates=rates) if drain else (
                evaluate(params, reading, SIM_EPOCH + tp, memory)
            )
            memory = outcome.memory
            _record(result, tp, outcome, rates)
            zones = [ZONE_INDEX[po.zone] for po in outcome.priorities]
            ev = result.evaluations[-1]
            admit_now = [nan if a is None else a for a in ev.admit_ratios]
            allowed_now = nan if ev.allowed_rate is None else ev.allowed_rate
            mu_now = nan if ev.consumption_rate is None else ev.consumption_rate
            if mode != "none":
                pub_times.append(tp)
                pub_values.append(_published(outcome))
            next_poll = tp + interval + (poll_rng.uniform(0.0, poll_jitter) if poll_jitter > 0 else 0.0)

        in_surge = surge is not None and surge[0] <= t < surge[1]
        after_surge = surge is not None and t >= surge[1]
        produced = 0.0
        last = len(pub_times) - 1
        for i in range(3):
            totals = result.priorities[i]
            totals.zone_seconds[zones[i]] += dt
            series.zone[i].append(zones[i])
            series.admit[i].append(admit_now[i])
            group = groups[i]
            offered = 0.0
            flow = _Flow()
            offer = offers[i]
            if group is not None and offer is not None and group.count > 0:
                per_producer = offer.at(t) * jitters[i].next()
                mean = per_producer * group.count * dt
                offered = poisson(count_rngs[i], mean) if noise.poisson else mean
                step_rate = offered / (group.count * dt)  # this step's arrivals per producer (msgs/s)
                m = measured[i]
                m = step_rate if m < 0 else m + pacing_gain * (step_rate - m)
                measured[i] = m
                ptrs = pointers[i]
                in_flight = 0.0
                for j, (delay, count) in enumerate(cohorts[i]):
                    ptr = ptrs[j]
                    while ptr < last and pub_times[ptr + 1] + delay <= t + 1e-9:
                        ptr += 1
                    ptrs[j] = ptr
                    pub = pub_values[ptr][i]
                    if pub.delay_ms > totals.max_delay_ms:
                        totals.max_delay_ms = pub.delay_ms
                    arrived = offered * count / group.count
                    queue = queues[i][j]
                    if pub.shed:
                        flow.shed += arrived
                        if queue.total > 0.0:  # calls waiting for a token are shed with the rest
                            flow.shed += queue.total
                            queue.items.clear()
                            queue.total = 0.0
                        continue
                    admit = pub.admit
                    if admit is None or admit >= 1.0:
                        if queue.total > 0.0:  # no longer paced: everything waiting goes
                            queue.serve(k, math.inf, dt, flow)
                        in_flight = max(in_flight, _zone_step(flow, group, arrived, per_producer, pub.delay_ms))
                        continue
                    tokens_rate = admit * m  # per producer
                    if pub.excess == "shed":
                        direct = min(arrived, tokens_rate * count * dt)
                        flow.goodput += direct
                        flow.shed += arrived - direct
                    elif group.kind == "closed":
                        _closed_paced(flow, arrived, per_producer, tokens_rate, scenario.pacing.deadline_seconds)
                    else:
                        pool = float((group.pool_size or 0) * count)
                        tokens = tokens_rate * count * dt
                        waiting = _open_paced(flow, queue, k, arrived, tokens, pool, dt, deadline_steps)
                        in_flight = max(in_flight, waiting / count)
                totals.peak_in_flight = max(totals.peak_in_flight, in_flight)
            totals.offered += offered
            totals.goodput += flow.goodput
            totals.shed += flow.shed
            totals.lost += flow.lost
            totals.rejected += flow.rejected
            totals.latency_seconds += flow.latency
            if in_surge:
                totals.surge_offered += offered
                totals.surge_goodput += flow.goodput
                totals.surge_shed += flow.shed
                totals.surge_lost += flow.lost
                totals.surge_rejected += flow.rejected
            elif after_surge:
                totals.after_offered += offered
                totals.after_goodput += flow.goodput
            series.offered[i].append(offered / dt)
            series.goodput[i].append(flow.goodput / dt)
            series.shed[i].append(flow.shed / dt)
            series.lost[i].append((flow.lost + flow.rejected) / dt)
            cum_offered[i].append(cum_offered[i][-1] + offered)
            produced += flow.goodput

        capacity_mean = capacity_at.at(t) * consumer_jitter.next() * dt
        capacity = poisson(consumer_rng, capacity_mean) if noise.poisson else capacity_mean
        consumed = min(backlog + produced, capacity)
        backlog = backlog + produced - consumed
        cum_consumed.append(cum_consumed[-1] + consumed)
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
        series.allowed.append(allowed_now)
        series.mu.append(mu_now)

    result.final_backlog = backlog
    return result
