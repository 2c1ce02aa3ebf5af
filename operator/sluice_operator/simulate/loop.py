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
from collections import Counter
from dataclasses import dataclass

from sluice.decision import PRIORITIES, Excess
from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.engine import Outcome, PolicyMemory, Rates, compile_policy, evaluate
from sluice_operator.engine.zones import ZONE_INDEX
from sluice_operator.simulate.modes import MODE_ALIASES, MODES, Mode, canonical_mode, spec_for_mode
from sluice_operator.simulate.noise import Jitter, poisson, stream
from sluice_operator.simulate.producers import Flow, WaitQueue, closed_paced, open_paced, zone_step
from sluice_operator.simulate.result import Evaluation, PriorityTotals, SimulationResult
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
    queues = [[WaitQueue() for _ in c] for c in cohorts]
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
            flow = Flow()
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
                        in_flight = max(in_flight, zone_step(flow, group, arrived, per_producer, pub.delay_ms))
                        continue
                    tokens_rate = admit * m  # per producer
                    if pub.excess == "shed":
                        direct = min(arrived, tokens_rate * count * dt)
                        flow.goodput += direct
                        flow.shed += arrived - direct
                    elif group.kind == "closed":
                        closed_paced(flow, arrived, per_producer, tokens_rate, scenario.pacing.deadline_seconds)
                    else:
                        pool = float((group.pool_size or 0) * count)
                        tokens = tokens_rate * count * dt
                        waiting = open_paced(flow, queue, k, arrived, tokens, pool, dt, deadline_steps)
                        in_flight = max(in_flight, waiting / count)
                totals.peak_in_flight = max(totals.peak_in_flight, in_flight)
            totals.add(offered, flow)
            totals.latency_seconds += flow.latency
            if in_surge:
                totals.surge.add(offered, flow)
            elif after_surge:
                totals.after.add(offered, flow)
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
