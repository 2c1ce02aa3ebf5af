"""`sluice decide`: the Decision JSON for a policy file at a backlog, or a plain error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sluice_operator.cli import main

POLICY = """\
apiVersion: sluice.dev/v1alpha1
kind: BackpressurePolicy
metadata:
  name: orders
  namespace: shop
spec:
  source:
    prometheus:
      query: sum(kafka_consumergroup_lag{group="orders"})
"""
CIRCUIT = """\
apiVersion: sluice.dev/v1alpha1
kind: CircuitBreaker
metadata:
  name: kafka-main
spec:
  signal:
    kafka:
      bootstrapServers: localhost:9092
  namespaces: [shop]
"""


def decide(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any] | None, str]:
    code = main(["decide", *argv])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def priorities(doc: dict[str, Any]) -> dict[str, tuple[str, int, bool]]:
    return {p: (v["zone"], v["delayMs"], v["shed"]) for p, v in doc["priorities"].items()}


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def test_acceptance_at_3000(capsys: pytest.CaptureFixture[str], policy_file: Path) -> None:
    code, doc, err = decide(capsys, str(policy_file), "--backlog", "3000", "--now", "2024-05-01T12:00:00Z")
    assert code == 0 and err == "" and doc is not None
    expected = {"high": ("yellow", 255, False), "medium": ("red", 2000, False), "low": ("red", 7500, True)}
    assert priorities(doc) == expected
    assert doc["kind"] == "Decision" and doc["policy"] == {"namespace": "shop", "name": "orders"}
    assert doc["generatedAt"] == "2024-05-01T12:00:00Z" and doc["expiresAt"] == "2024-05-01T12:03:00Z"
    assert doc["source"] == "prometheus" and doc["backlog"] == 3000 and doc["epoch"] == 1
    assert doc["fallback"] == {"high": 100, "medium": 500, "low": 1000}


def test_acceptance_at_12000(capsys: pytest.CaptureFixture[str], policy_file: Path) -> None:
    code, doc, _ = decide(capsys, str(policy_file), "--backlog", "12000")
    assert code == 0 and doc is not None
    assert priorities(doc)["high"] == ("red", 2500, False)
    assert priorities(doc)["medium"] == ("red", 5000, False)


def test_previous_zone_applies_the_margin(capsys: pytest.CaptureFixture[str], policy_file: Path) -> None:
    code, doc, _ = decide(capsys, str(policy_file), "--backlog", "1900", "--previous-zone", "medium=red")
    assert code == 0 and doc is not None
    assert priorities(doc)["medium"] == ("red", 500, False)
    assert "medium held in red by hysteresis" in doc["reason"]
    code, doc, _ = decide(
        capsys, str(policy_file), "--backlog", "1800", "--previous-zone", "medium=red", "--previous-zone", "high=red"
    )
    assert code == 0 and doc is not None
    assert priorities(doc)["medium"][0] == "yellow" and priorities(doc)["high"][0] == "yellow"


def test_first_policy_of_a_multi_document_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    second = POLICY.replace("name: orders", "name: second").replace("source:", "enforcement: Observe\n  source:")
    path.write_text("---\n" + CIRCUIT + "---\n" + POLICY + "---\n" + second)
    code, doc, _ = decide(capsys, str(path), "--backlog", "0")
    assert code == 0 and doc is not None and doc["policy"]["name"] == "orders"


def test_observe_policy_shows_would_fields(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "observe.yaml"
    path.write_text(POLICY + "  enforcement: Observe\n")
    code, doc, _ = decide(capsys, str(path), "--backlog", "3000")
    assert code == 0 and doc is not None
    medium = doc["priorities"]["medium"]
    assert medium == {"zone": "red", "delayMs": 0, "shed": False, "wouldDelayMs": 2000, "wouldShed": False}


@pytest.mark.parametrize(
    ("content", "argv", "expected"),
    [
        (None, [], "cannot read the file"),
        ("kind: [unclosed", [], "not valid YAML at line 1"),
        (CIRCUIT, [], "no BackpressurePolicy in this file (found: CircuitBreaker)"),
        (
            POLICY + "  thresholds:\n    medium: {green: 900, yellow: 800, red: 5000}\n",
            [],
            "spec.thresholds.medium: Value error, thresholds must increase",
        ),
        (POLICY + "  bogus: 1\n", [], "spec.bogus: Extra inputs are not permitted"),
        (POLICY, ["--previous-zone", "urgent=red"], "is not PRIORITY=ZONE"),
        (POLICY, ["--previous-zone", "medium"], "is not PRIORITY=ZONE"),
        (POLICY, ["--now", "yesterday"], "is not an ISO 8601 time"),
    ],
)
def test_errors_are_plain_and_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, argv: list[str], expected: str
) -> None:
    path = tmp_path / "input.yaml"
    if content is not None:
        path.write_text(content)
    code, _, err = decide(capsys, str(path), "--backlog", "10", *argv)
    assert code == 1
    assert expected in err and err.startswith("sluice decide: ")
    assert "Traceback" not in err


def test_bad_backlog(capsys: pytest.CaptureFixture[str], policy_file: Path) -> None:
    code, _, err = decide(capsys, str(policy_file), "--backlog", "nan")
    assert code == 1 and "--backlog must be a finite number >= 0" in err
    code, _, err = decide(capsys, str(policy_file), "--backlog=-1")
    assert code == 1 and "--backlog" in err


def test_drain_time_with_rates(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "drain.yaml"
    path.write_text(POLICY.replace("spec:\n", "spec:\n  control: {mode: DrainTime}\n", 1))
    code, doc, err = decide(capsys, str(path), "--backlog", "3000", "--drain-rate", "1000", "--offered", "200,600,800")
    assert code == 0, err
    assert doc is not None
    low = doc["priorities"]["low"]
    assert low["shed"] and low["excess"] == "shed" and low["admitRatio"] == 0.0  # 3000 is deep in low's red
    assert doc["priorities"]["medium"]["admitRatio"] == 1.0  # R = 1000 - 2500/120 covers high + medium
    assert [doc["priorities"][p]["delayMs"] for p in ("high", "medium", "low")] == [0, 0, 0]
    code, doc, _ = decide(capsys, str(path), "--backlog", "3000")  # no rates: the Zones fallback
    assert code == 0 and doc is not None and "admitRatio" not in doc["priorities"]["low"]
    assert "DrainTime degraded to Zones" in doc["reason"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--drain-rate", "1000"], "go together"),
        (["--drain-rate", "1000", "--offered", "1,2"], "HIGH,MEDIUM,LOW"),
        (["--drain-rate", "1000", "--offered", "a,b,c"], "HIGH,MEDIUM,LOW"),
        (["--drain-rate", "-1", "--offered", "1,2,3"], "--drain-rate must be"),
    ],
)
def test_bad_rates_say_what_to_write(
    capsys: pytest.CaptureFixture[str], policy_file: Path, argv: list[str], needle: str
) -> None:
    code, _, err = decide(capsys, str(policy_file), "--backlog", "3000", *argv)
    assert code == 1 and needle in err
