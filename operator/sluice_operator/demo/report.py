"""The demo's verdict and summary.json: did the loop behave?

The loop behaved when
* the surge was contained: the peak lag before the outage stayed at or below `CONTAIN_FRACTION` of
  what the backlog would have reached with nobody slowing producers down (`scenario.no_control_peak`);
* the circuit opened during the broker outage and was closed again after the brokers came back;
* high priority was never shed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sluice.decision import PRIORITIES, Priority
from sluice_operator.demo import scenario
from sluice_operator.demo.runner import DemoRun
from sluice_operator.demo.timeline import LagReading, Sample, Timeline

#: Contained means the peak lag is at most this share of the no-control estimate.
CONTAIN_FRACTION = 0.5
#: A circuit that opens this long after the outage ended still counts as opened by the outage.
OPEN_GRACE = 1.0


@dataclass(frozen=True)
class Verdict:
    ok: bool
    surge_contained: bool
    peak_lag: float | None
    peak_lag_at: float | None
    no_control_peak_lag: float
    circuit_opened: bool
    circuit_opened_at: float | None
    circuit_recovered: bool
    circuit_closed_at: float | None
    high_never_shed: bool
    low_shed: int
    reasons: list[str] = field(default_factory=list)
    text: str = ""


def _peak(readings: list[LagReading], start: float, end: float) -> LagReading | None:
    best: LagReading | None = None
    for reading in readings:
        if not start <= reading.t < end or reading.value is None:
            continue
        if best is None or best.value is None or reading.value > best.value:
            best = reading
    return best


def lag_at(readings: list[LagReading], t: float) -> float:
    """The last usable reading at or before `t` (0 when there is none)."""
    value = 0.0
    for reading in readings:
        if reading.t > t:
            break
        if reading.value is not None:
            value = reading.value
    return value


def judge(run: DemoRun) -> Verdict:
    timeline = run.timeline
    phases = timeline.phases
    outage = scenario.find(phases, "outage")
    start_lag = lag_at(timeline.readings, 0.0)
    no_control = scenario.no_control_peak(phases, timeline.capacity, start_lag)
    peak = _peak(timeline.readings, 0.0, outage.start)
    contained = peak is not None and peak.value is not None and peak.value <= CONTAIN_FRACTION * no_control

    opened = next((tr for tr in timeline.transitions
                   if tr.new == "open" and outage.start <= tr.t <= outage.end + OPEN_GRACE), None)
    closed = next((tr for tr in reversed(timeline.transitions) if tr.new == "closed" and tr.t >= outage.end), None)
    last = timeline.latest()
    final_state = last.circuit if last is not None else "none"
    recovered = opened is not None and closed is not None and final_state == "closed"
    totals = timeline.totals()
    high_shed = totals["high"].shed
    low_shed = totals["low"].shed

    reasons: list[str] = list(run.problems)
    if peak is None:
        reasons.append("no lag reading before the outage: the operator could not read Kafka")
    elif not contained:
        reasons.append(f"surge not contained: peak lag {peak.value:,.0f} is above {CONTAIN_FRACTION:.0%} of the "
                       f"{no_control:,.0f} it would reach without control")
    if opened is None:
        reasons.append(f"the circuit did not open during the outage ({outage.start:.1f}-{outage.end:.1f} s)")
    if opened is not None and not recovered:
        reasons.append(f"the circuit did not close after the outage (final state {final_state})")
    if high_shed:
        reasons.append(f"high priority was shed ({high_shed} messages)")

    parts: list[str] = []
    if peak is not None and peak.value is not None:
        word = "surge contained" if contained else "surge NOT contained"
        parts.append(f"{word}: peak lag {peak.value:,.0f} at t={peak.t:.1f}s vs {no_control:,.0f} with no control "
                     f"(estimate)")
    if opened is not None:
        text = f"circuit opened at t={opened.t:.1f}s ({opened.t - outage.start:.1f}s into the outage)"
        if closed is not None:
            text += f" and closed at t={closed.t:.1f}s ({closed.t - outage.end:.1f}s after the brokers came back)"
        else:
            text += f" and did not close (final state {final_state})"
        parts.append(text)
    else:
        parts.append("circuit never opened")
    parts.append("high priority never shed" if not high_shed else f"high priority shed {high_shed} times")
    if low_shed:
        parts.append(f"low priority shed {low_shed:,} messages during the surge")
    ok = not reasons
    return Verdict(
        ok=ok,
        surge_contained=contained,
        peak_lag=peak.value if peak is not None else None,
        peak_lag_at=peak.t if peak is not None else None,
        no_control_peak_lag=no_control,
        circuit_opened=opened is not None,
        circuit_opened_at=opened.t if opened is not None else None,
        circuit_recovered=recovered,
        circuit_closed_at=closed.t if closed is not None else None,
        high_never_shed=not high_shed,
        low_shed=low_shed,
        reasons=reasons,
        text="; ".join(parts),
    )


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _admits(samples: list[Sample], priority: Priority) -> list[float]:
    return [v for v in (s.admit.get(priority) for s in samples) if v is not None]


def _control(timeline: Timeline) -> dict[str, Any]:
    """`--control`, and under drain how often the producers held an admitRatio and what it was."""
    samples = timeline.samples
    paced = [s for s in samples if any(v is not None for v in s.admit.values())]
    degraded = sorted({s.degraded for s in samples if s.degraded})
    out: dict[str, Any] = {"mode": timeline.control}
    if timeline.control == "drain":
        out.update({
            "pacedSamples": len(paced),
            "samples": len(samples),
            "minAdmitRatio": {p: _r(min(_admits(paced, p), default=None)) for p in PRIORITIES},
            "operatorMuLast": _r(next((s.operator_mu for s in reversed(samples) if s.operator_mu is not None), None)),
            "degraded": degraded,
        })
    return out


def summary(run: DemoRun, verdict: Verdict, *, duration: float, wall_seconds: float) -> dict[str, Any]:
    timeline: Timeline = run.timeline
    objects = run.objects
    totals = timeline.totals()
    readings = timeline.readings
    last = timeline.latest()
    per_priority: dict[str, Any] = {}
    for priority in PRIORITIES:
        c = totals[priority]
        per_priority[priority] = {
            "attempted": c.attempted,
            "sent": c.sent,
            "delivered": c.delivered,
            "delayed": c.delayed,
            "shed": c.shed,
            "rejected": c.rejected,
            "failed": c.failed,
            "inFlightAtEnd": c.in_flight,
            "meanWaitMs": round(1000 * c.delay_seconds / c.attempted, 1) if c.attempted else 0.0,
        }
    circuit = objects.circuit.spec
    epochs = sorted({s.epoch for s in timeline.samples if s.epoch is not None})
    return {
        "durationSeconds": duration,
        "wallSeconds": round(wall_seconds, 1),
        "setupSeconds": round(run.setup_seconds, 1),
        "scenarioSeconds": round(run.scenario_seconds, 1),
        "capacityPerSecond": timeline.capacity,
        "control": _control(timeline),
        "phases": [
            {"name": p.name, "label": p.label, "start": round(p.start, 2), "end": round(p.end, 2),
             "offeredPerSecond": dict(p.offered())}
            for p in timeline.phases
        ],
        "policy": {
            "namespace": objects.namespace,
            "name": objects.policy.metadata.name,
            "thresholds": {p: w.model_dump() for p, w in objects.windows().items()},
            "shedAbove": {p: objects.shed_level(p) for p in PRIORITIES if objects.shed_level(p) is not None},
        },
        "circuitBreaker": {
            "name": objects.circuit.metadata.name,
            "failureThreshold": circuit.failure_threshold,
            "tripWindowSeconds": circuit.trip_window_seconds,
            "recoveryTimeoutSeconds": circuit.recovery_timeout_seconds,
            "probeIntervalSeconds": circuit.probe_interval_seconds,
            "recoveryThreshold": circuit.recovery_threshold,
        },
        "lag": {
            "peak": verdict.peak_lag,
            "peakAt": _r(verdict.peak_lag_at),
            "noControlPeakEstimate": round(verdict.no_control_peak_lag),
            "atEnd": lag_at(readings, float("inf")),
            "readings": len(readings),
            "unavailableReadings": sum(1 for r in readings if r.value is None),
        },
        "perPriority": per_priority,
        "consumed": last.consumed if last is not None else 0,
        "decisions": {"lastEpoch": epochs[-1] if epochs else None, "epochsSeen": len(epochs)},
        "circuit": {
            "transitions": [{"t": round(tr.t, 2), "from": tr.old, "to": tr.new, "reason": tr.reason}
                            for tr in timeline.transitions],
            "openedAt": _r(verdict.circuit_opened_at),
            "closedAt": _r(verdict.circuit_closed_at),
            "finalState": last.circuit if last is not None else None,
        },
        "verdict": {k: v for k, v in asdict(verdict).items() if k != "text"} | {"text": verdict.text},
    }


def write_summary(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
