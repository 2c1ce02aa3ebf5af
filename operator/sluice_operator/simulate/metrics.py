"""metrics.json of one simulation run: plain numbers, rounded, keys sorted, so equal seeds give equal bytes.

Definitions (per priority unless said otherwise):

* ``offered``: messages the producers wanted to send; ``goodput``: messages they sent (reached the
  topic); ``shed``: messages dropped by shedding; ``lost``: open-loop arrivals that found the
  producer's pool full; ``rejected``: messages that waited for a pacing token past the deadline;
  the rest of the offer was held back (a closed-loop caller slowed by a delay or a token bucket).
* ``meanAddedLatencyMs``: latency a produced message got from a delay or a token wait;
  ``peakInFlight``: most open-loop calls one producer had in flight (sleeping or waiting).
* ``admitRatioChanges``: direction changes of the published admitRatio (DrainTime; a rise after a
  fall or a fall after a rise); ``control``: how many evaluations paced, and how many degraded.
* ``zoneSeconds`` / ``zoneChanges``: of the decision the operator published.
* ``surge``: the same counts inside the scenario's surge window, plus ``goodputVsCapacity``
  (all priorities' goodput / consumer capacity in the window), ``zoneChanges`` from the start of
  the surge to the end of the run, ``goodputRatioAfter`` (from the end of the surge to the end of
  the run: what delays still cost once the load is back to normal), and ``recoverySeconds``: from
  the end of the surge until every priority is green for good (null when the run ends before that).
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

from sluice.decision import PRIORITIES
from sluice_operator.engine.zones import ZONES
from sluice_operator.simulate.result import Evaluation, SimulationResult

__all__ = ["METRICS_VERSION", "direction_changes", "dumps", "metrics", "recovery_seconds"]

METRICS_VERSION = 1


def _r(value: float, digits: int = 3) -> float:
    """Round for output; -0.0 becomes 0.0 so equal runs print equal bytes."""
    out = round(float(value), digits)
    return out + 0.0 if out == 0 else out


def _ratio(part: float, whole: float) -> float | None:
    return _r(part / whole, 4) if whole > 0 else None


def recovery_seconds(evaluations: list[Evaluation], surge_end: float) -> float | None:
    """Seconds from `surge_end` until all priorities are green for the rest of the run."""
    if not evaluations or any(z != "green" for z in evaluations[-1].zones):
        return None
    green_from = evaluations[0].t
    for before, after in itertools.pairwise(evaluations):
        if any(z != "green" for z in before.zones):
            green_from = after.t
    return _r(max(0.0, green_from - surge_end))


def direction_changes(values: list[float | None]) -> int:
    """How often a sequence turns (up after down or down after up); None and repeats are skipped."""
    turns, last, trend = 0, None, 0
    for value in values:
        if value is None:
            continue
        if last is not None and value != last:
            direction = 1 if value > last else -1
            if trend and direction != trend:
                turns += 1
            trend = direction
        last = value
    return turns


def _zone_changes(evaluations: list[Evaluation], since: float) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(PRIORITIES, 0)
    for ev in evaluations:
        if ev.t >= since:
            for priority, _before, _after in ev.changes:
                counts[priority] += 1
    return counts


def metrics(result: SimulationResult) -> dict[str, Any]:
    """The metrics document of one run."""
    scenario = result.scenario
    evaluations = result.evaluations
    priorities: dict[str, Any] = {}
    changes = _zone_changes(evaluations, float("-inf"))
    for index, (p, totals) in enumerate(zip(PRIORITIES, result.priorities, strict=True)):
        priorities[p] = {
            "producers": totals.producers,
            "offered": _r(totals.offered, 1),
            "goodput": _r(totals.goodput, 1),
            "shed": _r(totals.shed, 1),
            "goodputRatio": _ratio(totals.goodput, totals.offered),
            "zoneSeconds": {ZONES[i]: _r(s, 2) for i, s in enumerate(totals.zone_seconds)},
            "zoneChanges": changes[p],
            "maxDelayMs": totals.max_delay_ms,
            "kind": totals.kind,
            "lost": _r(totals.lost, 1),
            "rejected": _r(totals.rejected, 1),
            "meanAddedLatencyMs": _r(1000 * totals.latency_seconds / totals.goodput, 1) if totals.goodput > 0 else None,
            "peakInFlight": _r(totals.peak_in_flight, 1),
            "admitRatioChanges": direction_changes([ev.admit_ratios[index] for ev in evaluations]),
        }
    doc: dict[str, Any] = {
        "version": METRICS_VERSION,
        "scenario": scenario.name,
        "mode": result.mode,
        "seed": result.seed,
        "durationSeconds": _r(scenario.duration_seconds),
        "stepSeconds": _r(scenario.step_seconds, 6),
        "pollingIntervalSeconds": _r(result.interval_seconds),
        "propagationDelaySeconds": _r(scenario.propagation.delay_seconds),
        "evaluations": len(evaluations),
        "fallbackEvaluations": sum(1 for ev in evaluations if ev.source == "fallback"),
        "backlog": {
            "peak": _r(result.peak_backlog, 1),
            "peakAtSeconds": _r(result.peak_at, 2),
            "mean": _r(result.backlog_seconds / scenario.duration_seconds, 1),
            "final": _r(result.final_backlog, 1),
        },
        "consumer": {
            "capacity": _r(result.capacity, 1),
            "consumed": _r(result.consumed, 1),
            "utilization": _ratio(result.consumed, result.capacity),
        },
        "priorities": priorities,
        "totals": {
            "offered": _r(sum(t.offered for t in result.priorities), 1),
            "goodput": _r(sum(t.goodput for t in result.priorities), 1),
            "shed": _r(sum(t.shed for t in result.priorities), 1),
            "lost": _r(sum(t.lost for t in result.priorities), 1),
            "rejected": _r(sum(t.rejected for t in result.priorities), 1),
            "zoneChanges": sum(changes.values()),
        },
        "control": {
            "mode": result.spec.control.mode,
            "pacingEvaluations": sum(1 for ev in evaluations if ev.admit_ratios[0] is not None),
            "degradedEvaluations": sum(1 for ev in evaluations if ev.degraded is not None),
        },
        "surge": None,
    }
    if scenario.surge is not None:
        surge = scenario.surge
        goodput = sum(t.surge.goodput for t in result.priorities)
        doc["surge"] = {
            "startSeconds": _r(surge.start),
            "endSeconds": _r(surge.end),
            "capacity": _r(result.surge_capacity, 1),
            "consumed": _r(result.surge_consumed, 1),
            "goodput": _r(goodput, 1),
            "goodputVsCapacity": _ratio(goodput, result.surge_capacity),
            "priorities": {
                p: {
                    "offered": _r(t.surge.offered, 1),
                    "goodput": _r(t.surge.goodput, 1),
                    "shed": _r(t.surge.shed, 1),
                    "lost": _r(t.surge.lost, 1),
                    "rejected": _r(t.surge.rejected, 1),
                    "goodputRatio": _ratio(t.surge.goodput, t.surge.offered),
                    "goodputRatioAfter": _ratio(t.after.goodput, t.after.offered),
                }
                for p, t in zip(PRIORITIES, result.priorities, strict=True)
            },
            "zoneChanges": _zone_changes(evaluations, surge.start),
            "recoverySeconds": recovery_seconds(evaluations, surge.end),
        }
    return doc


def dumps(doc: dict[str, Any]) -> str:
    """Canonical JSON text: sorted keys, two-space indent, trailing newline, no NaN."""
    return json.dumps(_finite(doc), sort_keys=True, indent=2, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
