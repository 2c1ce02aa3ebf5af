"""The Sluice alerts: checked and unit-tested with the real promtool (Debian's `prometheus` package), and
the chart's PrometheusRule rendered from the very same rules file."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from sluice.metrics import Counts, GaugeState, ProducerMetrics
from sluice_operator.metrics import OperatorMetrics
from tests.support import helm

ROOT = helm.REPO_ROOT
RULES = ROOT / "charts/sluice/files/sluice-rules.yaml"
TESTS = sorted((ROOT / "tests/alerts").glob("*.test.yaml"))
RUNBOOKS = ROOT / "docs/runbooks.md"
DEFAULT_BASE = "https://github.com/sluice-dev/sluice/blob/main/docs/runbooks.md"
ALERTS = {"SluiceSignalLost", "SluicePolicyNotReady", "SluiceCircuitOpen", "SluiceCircuitFlapping",
          "SluiceOperatorDown", "SluiceProducersStale", "SluiceRedZoneSustained"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: apt-get install prometheus", pytrace=False)
    return path


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _metric_names() -> set[str]:
    """Every series name the operator and the SDK can export."""
    names: set[str] = set()
    registry = OperatorMetrics().registry
    sdk = CollectorRegistry()
    ProducerMetrics(Counts(), lambda: GaugeState(None, 0, -1, 0, 0, 0), sdk)
    for reg in (registry, sdk):
        for family in reg.collect():
            names.add(family.name)
            names.update(f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_count", "_sum", "_created"))
    return names


def test_promtool_check_rules() -> None:
    result = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


@pytest.mark.parametrize("path", TESTS, ids=[p.stem for p in TESTS])
def test_promtool_test_rules(path: Path) -> None:
    result = subprocess.run([_promtool(), "test", "rules", path.name], capture_output=True, text=True,
                            timeout=120, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    cases: dict[str, dict[str, int]] = {}
    for path in TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../../charts/sluice/files/sluice-rules.yaml"], path
        for test in doc["tests"]:
            for check in test["alert_rule_test"]:
                kind = "firing" if check["exp_alerts"] else "quiet"
                counts = cases.setdefault(check["alertname"], {"firing": 0, "quiet": 0})
                counts[kind] += 1
    assert set(cases) == ALERTS
    for alert, counts in cases.items():
        assert counts["firing"] >= 1 and counts["quiet"] >= 1, (alert, counts)


def test_every_alert_has_severity_a_runbook_and_real_metrics() -> None:
    rules = _rules()
    assert {r["alert"] for r in rules} == ALERTS
    headings = {re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
                for h in re.findall(r"^## (.+)$", RUNBOOKS.read_text(), re.M)}
    known = _metric_names()
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url == f"{DEFAULT_BASE}#{rule['alert'].lower()}", url
        assert rule["alert"].lower() in headings, f"docs/runbooks.md has no section {rule['alert']}"
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        used = set(re.findall(r"\b(sluice_[a-z_]+)\b", rule["expr"]))
        assert used and used <= known, (rule["alert"], used - known)
    runbook = RUNBOOKS.read_text()
    for alert in ALERTS:
        section = runbook.split(f"## {alert}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("**What it means.**", "**Look first.**", "**What to do.**"):
            assert part in section, (alert, part)


def test_chart_renders_the_same_rules_as_a_prometheusrule() -> None:
    assert not helm.by_kind(helm.render(), "PrometheusRule")
    base = "https://runbooks.example.com/sluice.md"
    manifests = helm.render({"prometheusRule": {"enabled": True, "labels": {"release": "kps"},
                                                "runbookBaseUrl": base}})
    rule = helm.one(manifests, "PrometheusRule")
    assert rule.obj["metadata"]["labels"]["release"] == "kps"
    assert rule.obj["metadata"]["namespace"] == helm.NAMESPACE
    source = yaml.safe_load(RULES.read_text().replace(DEFAULT_BASE, base))
    assert rule.obj["spec"]["groups"] == source["groups"]
    default = helm.one(helm.render({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    assert default.obj["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_values_schema_rejects_unknown_prometheusrule_keys() -> None:
    with pytest.raises(Exception, match=r"(?i)additional|schema"):
        helm.render({"prometheusRule": {"enabled": True, "bogus": 1}})
