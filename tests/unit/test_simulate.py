"""`sluice simulate`: a deterministic closed loop around the real engine, and its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice_operator.api.policy import BackpressurePolicySpec
from sluice_operator.cli import main
from sluice_operator.simulate import (
    MODES,
    Scenario,
    ScenarioError,
    dumps,
    metrics,
    parse_scenario,
    simulate,
    spec_for_mode,
)

ROOT = Path(__file__).resolve().parents[2]
SOURCE = {"prometheus": {"consumerGroup": "orders", "topics": ["orders"]}}


def make_spec(**fields: Any) -> BackpressurePolicySpec:
    return BackpressurePolicySpec.model_validate({"source": SOURCE, **fields})


def make_scenario(**overrides: Any) -> Scenario:
    """A short surge against the default thresholds: 100 msgs/s consumer, 3x offered for 60 s."""
    doc: dict[str, Any] = {
        "name": "test-surge",
        "seed": 5,
        "durationSeconds": 200,
        "stepSeconds": 1,
        "consumer": {"capacity": [{"at": 0, "rate": 100}]},
        "producers": {
            "high": {"count": 2, "rate": [{"at": 0, "rate": 6}, {"at": 40, "rate": 30}, {"at": 100, "rate": 6}]},
            "medium": {"count": 3, "rate": [{"at": 0, "rate": 6}, {"at": 40, "rate": 30}, {"at": 100, "rate": 6}]},
            "low": {"count": 5, "rate": [{"at": 0, "rate": 6}, {"at": 40, "rate": 30}, {"at": 100, "rate": 6}]},
        },
        "surge": {"start": 40, "end": 100},
    }
    doc.update(overrides)
    return parse_scenario(json.dumps(doc), "test.yaml")


def quiet(**overrides: Any) -> Scenario:
    """The same scenario without any randomness (a deterministic fluid model)."""
    return make_scenario(noise={"poisson": False, "rateJitter": 0}, **overrides)


def test_same_seed_gives_byte_identical_metrics_and_another_seed_differs() -> None:
    spec, scenario = make_spec(), make_scenario()
    first = dumps(metrics(simulate(spec, scenario, "sluice")))
    again = dumps(metrics(simulate(spec, scenario, "sluice")))
    other = dumps(metrics(simulate(spec, scenario, "sluice", seed=6)))
    assert first == again
    assert first != other
    assert json.loads(first)["seed"] == 5 and json.loads(other)["seed"] == 6


def test_metrics_json_is_canonical() -> None:
    text = dumps(metrics(simulate(make_spec(), make_scenario(), "origin")))
    doc = json.loads(text)
    assert text == json.dumps(doc, sort_keys=True, indent=2) + "\n"
    assert set(doc["priorities"]) == {"high", "medium", "low"}
    assert set(doc["priorities"]["low"]["zoneSeconds"]) == {"green", "yellow", "red"}
    assert sum(doc["priorities"]["low"]["zoneSeconds"].values()) == pytest.approx(200)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_runs_and_control_bounds_the_backlog(mode: str) -> None:
    spec, scenario = make_spec(), make_scenario()
    doc = metrics(simulate(spec, scenario, mode))  # type: ignore[arg-type]
    none = metrics(simulate(spec, scenario, "none"))
    assert doc["mode"] == mode
    assert 200 // 6 <= doc["evaluations"] <= 200 // 5 + 1  # every 5 s plus up to 1 s of jitter
    low = doc["priorities"]["low"]
    if mode == "none":
        assert all(d["goodput"] == d["offered"] and d["shed"] == 0 for d in doc["priorities"].values())
        assert doc["surge"]["goodputVsCapacity"] > 2.5  # everything offered got through
    elif mode == "drain":  # low sheds: its excess over admitRatio x offer is shed, not held back
        assert low["goodput"] < 0.7 * low["offered"] and low["shed"] > 0
        assert doc["control"]["pacingEvaluations"] > 0
        assert doc["backlog"]["peak"] * 3 < none["backlog"]["peak"]
    else:
        assert low["goodput"] + low["shed"] < low["offered"]  # delays held some back
        assert doc["backlog"]["peak"] * 3 < none["backlog"]["peak"]
        assert doc["surge"]["recoverySeconds"] is not None


def test_none_mode_peak_backlog_is_the_analytic_value() -> None:
    # 300 msgs/s offered from 40 s to 100 s against 100 msgs/s: +200/s for 60 s, drained before.
    doc = metrics(simulate(make_spec(), quiet(), "none"))
    assert doc["backlog"]["peak"] == pytest.approx(200 * 60)
    assert doc["backlog"]["peakAtSeconds"] == pytest.approx(100)
    offered = {p: d["offered"] for p, d in doc["priorities"].items()}
    per_producer = 6 * 140 + 30 * 60
    assert offered == {"high": 2 * per_producer, "medium": 3 * per_producer, "low": 5 * per_producer}


def test_a_delay_caps_each_producer_at_one_over_one_over_rate_plus_delay() -> None:
    # ForceRed without an end: every priority red at ratio 1 from the first poll (t = 0) on.
    spec = make_spec(override={"mode": "ForceRed"}, shedding={"priorities": []})
    scenario = quiet(
        producers={"high": {"count": 4, "rate": [{"at": 0, "rate": 10}]}},
        propagation={"delaySeconds": 0},
        surge=None,
    )
    doc = metrics(simulate(spec, scenario, "sluice"))
    delay = 5.0 * 0.5  # red max 5000 ms, high priority scale 0.5
    assert doc["priorities"]["high"]["maxDelayMs"] == 2500
    assert doc["priorities"]["high"]["goodput"] == pytest.approx(4 * 200 / (1 / 10 + delay), abs=0.1)
    assert doc["priorities"]["high"]["offered"] == pytest.approx(4 * 10 * 200)


def test_decisions_reach_producers_after_the_propagation_delay() -> None:
    spec = make_spec(override={"mode": "ForceRed"}, shedding={"priorities": []})
    producers = {"high": {"count": 1, "rate": [{"at": 0, "rate": 10}]}}
    watch = metrics(simulate(spec, quiet(producers=producers, surge=None), "sluice"))
    late = quiet(producers=producers, surge=None, propagation={"delaySeconds": 50})
    file_mode = metrics(simulate(spec, late, "sluice"))
    # 50 s at the full 10 msgs/s before the first decision arrives, then the same capped rate.
    assert file_mode["priorities"]["high"]["goodput"] == pytest.approx(
        watch["priorities"]["high"]["goodput"] * 150 / 200 + 10 * 50, rel=1e-3
    )


def test_only_shedding_priorities_shed() -> None:
    # High priority alone offers 1.6x the consumer for a minute: the backlog passes 90 % of low's
    # red window (900), where low (and only low, by default) is shed.
    surge = [{"at": 0, "rate": 5}, {"at": 40, "rate": 80}, {"at": 100, "rate": 5}]
    producers = {
        "high": {"count": 2, "rate": surge},
        "medium": {"count": 3, "rate": [{"at": 0, "rate": 5}]},
        "low": {"count": 5, "rate": [{"at": 0, "rate": 5}]},
    }
    scenario = make_scenario(durationSeconds=150, producers=producers)
    doc = metrics(simulate(make_spec(), scenario, "sluice"))
    sheds = {p: d["shed"] for p, d in doc["priorities"].items()}
    assert sheds["low"] > 0
    assert sheds["high"] == 0 and sheds["medium"] == 0
    none = metrics(simulate(make_spec(shedding={"priorities": []}), scenario, "sluice"))
    assert all(d["shed"] == 0 for d in none["priorities"].values())
    medium = metrics(simulate(make_spec(shedding={"priorities": ["medium"]}), scenario, "sluice"))
    assert medium["priorities"]["low"]["shed"] == 0 and medium["priorities"]["high"]["shed"] == 0


def test_origin_mode_turns_off_hysteresis_and_smoothing() -> None:
    spec = make_spec(smoothing={"alpha": 0.5, "maxRelaxRatioPerInterval": 0.2}, fallback={"mode": "LastKnown"})
    origin = spec_for_mode(spec, "origin")
    assert (origin.hysteresis.margin, origin.hysteresis.min_dwell_seconds) == (0, 0)
    assert (origin.smoothing.alpha, origin.smoothing.max_relax_ratio_per_interval) == (1, 1)
    assert origin.fallback.mode == "Conservative"
    assert spec_for_mode(spec, "sluice") is spec


def test_signal_outage_engages_the_fallback() -> None:
    scenario = make_scenario(signalOutages=[{"start": 60, "end": 90}])
    doc = metrics(simulate(make_spec(), scenario, "sluice"))
    assert 4 <= doc["fallbackEvaluations"] <= 7


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: x\ndurationSeconds: 10\nstepSecs: 1\n",
            "test.yaml:3: scenario: stepSecs: unknown field 'stepSecs' (did you mean 'stepSeconds'?)",
        ),
        (
            "name: x\ndurationSeconds: 10\nconsumer:\n  capacity: [{at: 5, rate: 1}]\nproducers: {low: {count: 1, "
            "rate: [{at: 0, rate: 1}]}}\n",
            "test.yaml:4: scenario: consumer.capacity: the first point must be at 0 (got at 5)",
        ),
        (
            "name: x\ndurationSeconds: 10\nconsumer: {capacity: [{at: 0, rate: 1}]}\nproducers:\n  high:\n"
            "    count: 1\n    rate: [{at: 0, rate: 1}, {at: 0, rate: 2}]\n",
            "test.yaml:7: scenario: producers.high.rate: points must be in increasing `at` order (0 follows 0)",
        ),
        (
            "name: x\ndurationSeconds: 10\nconsumer: {capacity: [{at: 0, rate: 1}]}\n"
            "producers: {low: {count: -2, rate: [{at: 0, rate: 1}]}}\n",
            "test.yaml:4: scenario: producers.low.count: must be >= 0",
        ),
        ("name: x\ndurationSeconds: [\n", "test.yaml:3: scenario: invalid YAML"),
        ("- a list\n", "test.yaml: scenario: expected a mapping (field: value), got list"),
    ],
)
def test_scenario_errors_are_friendly(text: str, expected: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "test.yaml")
    messages = [str(p) for p in caught.value.problems]
    assert any(m.startswith(expected) for m in messages), messages


def test_scenario_reports_every_problem_at_once() -> None:
    text = "name: x\ndurationSeconds: -1\nconsumer: {capacity: []}\nproducers: {}\nsurge: {start: 5, end: 1}\n"
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "test.yaml")
    paths = {p.path for p in caught.value.problems}
    assert {"durationSeconds", "consumer.capacity", "surge"} <= paths


def test_shipped_scenarios_are_valid() -> None:
    files = sorted((ROOT / "examples" / "scenarios").glob("*.yaml"))
    names = {f.stem for f in files}
    assert {"steady", "surge-3x", "slow-consumer", "flapping-edge", "file-mode-delay"} <= names
    assert {"slow-ramp", "consumer-crash", "high-only-overload", "capacity-loss-file", "step-2x", "step-4x",
            "step-6x"} <= names
    for path in files:
        if path.stem == "policy":
            continue
        parse_scenario(path.read_text(encoding="utf-8"), str(path))


def write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "sluice.dev/v1alpha1",
                "kind": "BackpressurePolicy",
                "metadata": {"name": "sim"},
                "spec": {"source": SOURCE},
            }
        ),
        encoding="utf-8",
    )
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(
        "name: cli\nseed: 3\ndurationSeconds: 120\nstepSeconds: 1\nconsumer: {capacity: [{at: 0, rate: 100}]}\n"
        "producers:\n  low: {count: 10, rate: [{at: 0, rate: 5}, {at: 30, rate: 25}, {at: 60, rate: 5}]}\n"
        "surge: {start: 30, end: 60}\n",
        encoding="utf-8",
    )
    return policy, scenario


def test_cli_writes_metrics_and_timeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy, scenario = write_inputs(tmp_path)
    out = tmp_path / "report"
    args = ["simulate", str(policy), "--scenario", str(scenario), "--out", str(out), "--mode", "origin"]
    assert main([*args, "--seed", "9"]) == 0
    printed = capsys.readouterr().out
    assert "cli (mode origin, seed 9)" in printed and "wrote" in printed
    doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert (doc["mode"], doc["seed"], doc["scenario"]) == ("origin", 9, "cli")
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = (out / "metrics.json").read_bytes()
    assert main([*args, "--seed", "9"]) == 0
    assert (out / "metrics.json").read_bytes() == first
    assert main(args) == 0  # default seed: the scenario's
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["seed"] == 3


def test_cli_rejects_a_bad_scenario_plainly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy, scenario = write_inputs(tmp_path)
    scenario.write_text("name: cli\ndurationSeconds: 10\nconsumer: {}\nproducers: {}\n", encoding="utf-8")
    assert main(["simulate", str(policy), "--scenario", str(scenario), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert f"{scenario}:3: scenario: consumer.capacity: missing required field" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()
    assert main(["simulate", str(scenario), "--scenario", str(scenario)]) == 1
    assert main(["simulate", str(policy), "--scenario", str(tmp_path / "missing.yaml")]) == 1
    assert "no such file" in capsys.readouterr().err


# --- open-loop producers and drain mode ----------------------------------------------------------


def _forced_red(count: int, rate: float, pool: int) -> tuple[BackpressurePolicySpec, Scenario]:
    """Every priority red at ratio 1 from t = 0 (high: 2500 ms), one open-loop high group."""
    spec = make_spec(override={"mode": "ForceRed"}, shedding={"priorities": []})
    producers = {"high": {"count": count, "kind": "open", "poolSize": pool, "rate": [{"at": 0, "rate": rate}]}}
    return spec, quiet(producers=producers, propagation={"delaySeconds": 0}, surge=None)


def test_open_loop_delay_adds_latency_and_littles_law_in_flight_but_removes_no_load() -> None:
    # 10 msgs/s per producer, 2.5 s each: 25 calls in flight (Little's law), within a pool of 64.
    spec, scenario = _forced_red(count=4, rate=10, pool=64)
    high = metrics(simulate(spec, scenario, "zones"))["priorities"]["high"]
    assert high["kind"] == "open"
    assert high["peakInFlight"] == pytest.approx(10 * 2.5)
    assert high["goodput"] == pytest.approx(high["offered"])  # a closed loop would send 1/(1/10 + 2.5) = 0.38/s
    assert high["lost"] == 0
    assert high["meanAddedLatencyMs"] == pytest.approx(2500)


def test_open_loop_pool_full_loses_the_arrivals_it_cannot_hold() -> None:
    # 40 msgs/s x 2.5 s = 100 calls wanted in flight, pool 20: the pool completes 20 / 2.5 = 8 calls/s.
    spec, scenario = _forced_red(count=3, rate=40, pool=20)
    doc = metrics(simulate(spec, scenario, "zones"))
    high = doc["priorities"]["high"]
    assert high["peakInFlight"] == pytest.approx(20)
    assert high["goodput"] == pytest.approx(3 * 8 * 200, rel=1e-6)
    assert high["lost"] == pytest.approx(high["offered"] - high["goodput"], rel=1e-6)
    assert high["shed"] == 0 and doc["totals"]["lost"] == high["lost"]  # counted apart from shed


def test_drain_mode_admits_about_the_consumers_rate_under_overload() -> None:
    surge = [{"at": 0, "rate": 6}, {"at": 40, "rate": 30}, {"at": 300, "rate": 6}]
    scenario = make_scenario(signalAgeSeconds=2, rateWindowSeconds=10, durationSeconds=400, stepSeconds=0.5,
                             surge={"start": 40, "end": 300},
                             producers={p: {"count": n, "kind": "open", "poolSize": 64, "rate": surge}
                                        for p, n in (("high", 2), ("medium", 3), ("low", 5))})
    doc = metrics(simulate(make_spec(), scenario, "drain"))
    none = metrics(simulate(make_spec(), scenario, "none"))
    assert doc["mode"] == "drain" and doc["control"]["mode"] == "DrainTime"
    assert doc["control"]["pacingEvaluations"] > 0.9 * doc["evaluations"]
    assert 0.95 <= doc["surge"]["goodputVsCapacity"] <= 1.1  # admitted ~ mu, not 3x it
    assert doc["backlog"]["peak"] * 10 < none["backlog"]["peak"]
    assert doc["surge"]["priorities"]["high"]["goodputRatio"] > 0.95  # high (60/s) fits in the consumer (100/s)
    assert doc["priorities"]["low"]["shed"] > 0  # low's excess is shed, not held
    assert all(d["maxDelayMs"] == 0 or d["zoneChanges"] >= 0 for d in doc["priorities"].values())


def test_drain_mode_without_rates_degrades_to_zones_and_says_so() -> None:
    scenario = make_scenario(signalOutages=[{"start": 0, "end": 200}])
    doc = metrics(simulate(make_spec(), scenario, "drain"))
    assert doc["control"]["pacingEvaluations"] == 0
    assert doc["control"]["degradedEvaluations"] == doc["evaluations"]


def test_sluice_is_the_old_name_of_zones() -> None:
    spec, scenario = make_spec(), make_scenario()
    zones = metrics(simulate(spec, scenario, "zones"))
    assert metrics(simulate(spec, scenario, "sluice")) == zones
    assert zones["mode"] == "zones" and zones["control"]["mode"] == "Zones"
    assert spec_for_mode(spec, "drain").control.mode == "DrainTime"


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ({"count": 1, "kind": "open", "rate": [{"at": 0, "rate": 1}]}, "producers.low: kind open needs poolSize"),
        ({"count": 1, "poolSize": 8, "rate": [{"at": 0, "rate": 1}]},
         "producers.low: poolSize applies only to kind: open"),
        ({"count": 1, "kind": "batch", "rate": [{"at": 0, "rate": 1}]}, "producers.low.kind:"),
        ({"count": 1, "kind": "open", "poolSize": 0, "rate": [{"at": 0, "rate": 1}]},
         "producers.low.poolSize: must be >= 1"),
    ],
)
def test_scenario_errors_for_producer_kinds(group: dict[str, Any], expected: str) -> None:
    text = json.dumps({"name": "x", "durationSeconds": 10, "consumer": {"capacity": [{"at": 0, "rate": 1}]},
                       "producers": {"low": group}})
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "test.yaml")
    messages = [str(p) for p in caught.value.problems]
    assert any(expected in m for m in messages), messages


def test_scenario_errors_for_pacing_and_rate_window() -> None:
    text = json.dumps({"name": "x", "durationSeconds": 10, "consumer": {"capacity": [{"at": 0, "rate": 1}]},
                       "producers": {"low": {"count": 1, "rate": [{"at": 0, "rate": 1}]}},
                       "rateWindowSeconds": 0, "pacing": {"windowSeconds": -1, "deadline": 3}})
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "test.yaml")
    paths = {p.path for p in caught.value.problems}
    assert {"rateWindowSeconds", "pacing.windowSeconds", "pacing.deadline"} <= paths
