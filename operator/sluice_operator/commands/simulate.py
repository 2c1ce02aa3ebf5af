"""`sluice simulate POLICY.yaml --scenario SCENARIO.yaml`: the closed loop offline, same engine.

Writes ``metrics.json`` (byte-identical for the same seed) and ``timeline.png`` to ``--out`` and
prints a short summary. Exit 0 on success, 1 when the policy or scenario is invalid, 2 on a bug.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sluice.decision import PRIORITIES
from sluice_operator.api.policy import BackpressurePolicy
from sluice_operator.problems import Problem
from sluice_operator.simulate import Mode, ScenarioError, dumps, metrics, parse_scenario, simulate
from sluice_operator.validation import InvalidResources, load_objects, read_text


def _policy(path: Path) -> BackpressurePolicy | str:
    """The one BackpressurePolicy in `path`, or what is wrong with the file."""
    try:
        objects = load_objects(path)
    except InvalidResources as exc:
        return str(exc)
    policies = [o for o in objects if isinstance(o, BackpressurePolicy)]
    if len(policies) != 1:
        return f"{path}: simulate needs exactly one BackpressurePolicy, found {len(policies)}"
    return policies[0]


def _summary(doc: dict[str, Any]) -> list[str]:
    backlog = doc["backlog"]
    lines = [
        f"{doc['scenario']} (mode {doc['mode']}, seed {doc['seed']}): peak backlog {backlog['peak']:g} "
        f"at {backlog['peakAtSeconds']:g}s, final {backlog['final']:g}; "
        f"consumer utilization {doc['consumer']['utilization']}",
    ]
    control = doc["control"]
    if control["mode"] == "DrainTime":
        lines.append(
            f"  DrainTime: {control['pacingEvaluations']}/{doc['evaluations']} evaluations paced by admitRatio, "
            f"{control['degradedEvaluations']} degraded to Zones"
        )
    for p in PRIORITIES:
        d = doc["priorities"][p]
        if d["producers"] == 0:
            continue
        zones = ", ".join(f"{z} {s:g}s" for z, s in d["zoneSeconds"].items())
        lines.append(
            f"  {p:<6} ({d['kind']}) goodput {d['goodput']:g}/{d['offered']:g} ({d['goodputRatio']}), "
            f"shed {d['shed']:g}, "
            f"lost {d['lost']:g}, rejected {d['rejected']:g}, added latency {d['meanAddedLatencyMs']} ms, "
            f"zone changes {d['zoneChanges']} ({zones}), admitRatio direction changes {d['admitRatioChanges']}"
        )
    surge = doc["surge"]
    if surge is not None:
        recovery = surge["recoverySeconds"]
        back = "not green by the end of the run" if recovery is None else f"green {recovery:g}s after it ended"
        lines.append(
            f"  surge {surge['startSeconds']:g}-{surge['endSeconds']:g}s: goodput/capacity "
            f"{surge['goodputVsCapacity']}, {back}"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    """Simulate, write the report, print the summary."""
    policy_path: Path = args.policy
    scenario_path: Path = args.scenario
    out: Path = args.out
    policy = _policy(policy_path)
    if isinstance(policy, str):
        print(policy, file=sys.stderr)
        return 1
    mode: Mode = args.mode or ("drain" if policy.spec.control.mode == "DrainTime" else "zones")
    text = read_text(scenario_path)
    if isinstance(text, Problem):
        print(text, file=sys.stderr)
        return 1
    try:
        scenario = parse_scenario(text, str(scenario_path))
    except ScenarioError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    try:
        result = simulate(policy.spec, scenario, mode, args.seed)
        doc = metrics(result)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(dumps(doc), encoding="utf-8")
    except OSError as exc:
        print(f"{out}: cannot write the report: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug must still not print a traceback at the user
        print(f"internal error while simulating: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    for line in _summary(doc):
        print(line)
    print(f"wrote {out / 'metrics.json'}")
    from sluice_operator.simulate.plot import render

    try:
        png = render(result)
    except ImportError:
        print("matplotlib is not installed: no timeline.png (pip install 'sluice-backpressure[demo]')")
        return 0
    try:
        (out / "timeline.png").write_bytes(png)
    except OSError as exc:
        print(f"{out}: cannot write timeline.png: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {out / 'timeline.png'}")
    return 0
