"""`sluice validate`: exit codes, and every problem said plainly with file, object, field path and reason."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from sluice_operator.api import BackpressurePolicy, CircuitBreaker
from sluice_operator.cli import main
from sluice_operator.problems import Problem
from sluice_operator.validation import (
    InvalidResources,
    load_objects,
    validate_documents,
    validate_object,
)

DATA = Path(__file__).parent / "data"

POLICY_HEAD = """\
apiVersion: sluice.dev/v1alpha1
kind: BackpressurePolicy
metadata:
  name: orders
  namespace: shop
spec:
  source:
    prometheus:
      consumerGroup: orders
      topics: [orders]
"""

CIRCUIT_HEAD = "apiVersion: sluice.dev/v1alpha1\nkind: CircuitBreaker\nmetadata: {name: db}\nspec:\n"

GOOD = (
    POLICY_HEAD
    + """\
---
---
apiVersion: sluice.dev/v1alpha1
kind: CircuitBreaker
metadata: {name: db}
spec:
  signal:
    prometheus: {query: db_errors, failWhen: {above: 0.5}}
  namespaces: [shop]
  override: {mode: ForceOpen, until: 2030-01-01T00:00:00Z}
"""
)


def run_validate(capsys: pytest.CaptureFixture[str], *files: Path) -> tuple[int, str]:
    code = main(["validate", *map(str, files)])
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "Traceback" not in out
    return code, out


def write(tmp_path: Path, text: str, name: str = "objects.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_multi_document_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    code, out = run_validate(capsys, path)
    assert code == 0
    assert out.splitlines() == [f"{path}: BackpressurePolicy/orders ok", f"{path}: CircuitBreaker/db ok"]


def test_good_sample_files(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted((DATA / "good").glob("*.yaml"))
    code, out = run_validate(capsys, *files)
    assert code == 0
    assert out.count(" ok\n") == 5


def with_spec(extra: str) -> str:
    return POLICY_HEAD + extra


# (case id, file text, expected subject, field path, reason, line or None)
BAD_CASES: list[tuple[str, str, str, str, str, int | None]] = [
    ("bad-yaml", "apiVersion: sluice.dev/v1alpha1\nkind: [BackpressurePolicy\n", "document", "", "invalid YAML", 3),
    (
        "bad-yaml-indent",
        POLICY_HEAD + "  thresholds:\n    medium: {green: 1\n  delays: x\n",
        "document",
        "",
        "invalid YAML",
        13,
    ),
    ("tabs", POLICY_HEAD + "\tthresholds: {}\n", "document", "", "invalid YAML", 11),
    (
        "unknown-kind",
        "apiVersion: sluice.dev/v1alpha1\nkind: Sluice\nmetadata: {name: x}\n",
        "Sluice/x",
        "kind",
        "unknown kind 'Sluice'",
        2,
    ),
    (
        "unknown-api-version",
        POLICY_HEAD.replace("sluice.dev/v1alpha1", "sluice.dev/v1"),
        "BackpressurePolicy/orders",
        "apiVersion",
        "unknown apiVersion 'sluice.dev/v1' (expected sluice.dev/v1alpha1)",
        1,
    ),
    (
        "missing-api-version",
        "kind: CircuitBreaker\nmetadata: {name: db}\n",
        "CircuitBreaker/db",
        "apiVersion",
        "missing required field",
        1,
    ),
    (
        "missing-kind",
        "apiVersion: sluice.dev/v1alpha1\nmetadata: {name: db}\n",
        "?/db",
        "kind",
        "missing required field",
        1,
    ),
    (
        "list-document",
        "- apiVersion: sluice.dev/v1alpha1\n- kind: BackpressurePolicy\n",
        "document",
        "",
        "not a Kubernetes object: expected a mapping, got a list",
        1,
    ),
    ("scalar-document", "just some words\n", "document", "", "not a Kubernetes object: expected a mapping, got str", 1),
    (
        "missing-spec",
        "apiVersion: sluice.dev/v1alpha1\nkind: BackpressurePolicy\nmetadata: {name: orders}\n",
        "BackpressurePolicy/orders",
        "spec",
        "missing required field",
        1,
    ),
    (
        "missing-name",
        "apiVersion: sluice.dev/v1alpha1\nkind: CircuitBreaker\nmetadata: {}\nspec: {}\n",
        "CircuitBreaker/<unnamed>",
        "metadata.name",
        "missing required field",
        3,
    ),
    (
        "missing-field",
        with_spec("  thresholds:\n    medium: {green: 1, yellow: 2}\n"),
        "BackpressurePolicy/orders",
        "spec.thresholds.medium.red",
        "missing required field",
        12,
    ),
    (
        "wrong-type-number",
        with_spec("  thresholds:\n    medium: {green: 1, yellow: two, red: 3}\n"),
        "BackpressurePolicy/orders",
        "spec.thresholds.medium.yellow",
        "must be a number",
        12,
    ),
    (
        "wrong-type-int",
        with_spec("  delays:\n    yellow: {minMs: 1.5, maxMs: 10}\n"),
        "BackpressurePolicy/orders",
        "spec.delays.yellow.minMs",
        "must be an integer",
        12,
    ),
    (
        "wrong-type-string-number",
        with_spec("  thresholds:\n    medium: {green: '1', yellow: 2, red: 3}\n"),
        "BackpressurePolicy/orders",
        "spec.thresholds.medium.green",
        "must be a number",
        12,
    ),
    (
        "wrong-type-mapping",
        with_spec("  polling: 5\n"),
        "BackpressurePolicy/orders",
        "spec.polling",
        "must be a mapping",
        11,
    ),
    (
        "wrong-type-list",
        with_spec("  shedding: {priorities: low}\n"),
        "BackpressurePolicy/orders",
        "spec.shedding.priorities",
        "must be a list",
        11,
    ),
    (
        "non-increasing",
        with_spec("  thresholds:\n    medium: {green: 500, yellow: 400, red: 5000}\n"),
        "BackpressurePolicy/orders",
        "spec.thresholds.medium",
        "thresholds must increase: green (500) < yellow (400) < red (5000)",
        12,
    ),
    (
        "negative",
        with_spec("  thresholds:\n    low: {green: -1, yellow: 2, red: 3}\n"),
        "BackpressurePolicy/orders",
        "spec.thresholds.low.green",
        "must be >= 0",
        12,
    ),
    (
        "absurd-red",
        with_spec("  thresholds:\n    high: {green: 1, yellow: 2, red: 1e13}\n"),
        "BackpressurePolicy/orders",
        "spec.thresholds.high.red",
        "must be <= 1000000000000",
        12,
    ),
    (
        "infinite",
        with_spec("  thresholds:\n    high: {green: 1, yellow: 2, red: .inf}\n"),
        "BackpressurePolicy/orders",
        "spec.thresholds.high.red",
        "must be a finite number",
        12,
    ),
    (
        "delay-over-an-hour",
        with_spec("  fallback:\n    conservative: {low: 3600001}\n"),
        "BackpressurePolicy/orders",
        "spec.fallback.conservative.low",
        "must be <= 3600000",
        12,
    ),
    (
        "negative-delay",
        with_spec("  delays:\n    red: {minMs: -5, maxMs: 10}\n"),
        "BackpressurePolicy/orders",
        "spec.delays.red.minMs",
        "must be >= 0",
        12,
    ),
    (
        "unknown-priority",
        with_spec("  shedding: {priorities: [low, critical]}\n"),
        "BackpressurePolicy/orders",
        "spec.shedding.priorities[1]",
        "must be one of high, medium, low",
        11,
    ),
    (
        "unknown-field",
        with_spec("  enforcment: Observe\n"),
        "BackpressurePolicy/orders",
        "spec.enforcment",
        "unknown field 'enforcment' (did you mean 'enforcement'?)",
        11,
    ),
    (
        "unknown-enum",
        with_spec("  enforcement: observe\n"),
        "BackpressurePolicy/orders",
        "spec.enforcement",
        "must be one of Enforce, Observe",
        11,
    ),
    (
        "bad-date",
        with_spec("  override: {mode: Disable, until: tomorrow}\n"),
        "BackpressurePolicy/orders",
        "spec.override.until",
        "must be an RFC 3339 date-time",
        11,
    ),
    (
        "bad-name",
        POLICY_HEAD.replace("name: orders", "name: Orders_1"),
        "BackpressurePolicy/Orders_1",
        "metadata.name",
        "must be a DNS-1123 name",
        4,
    ),
    (
        "two-sources",
        with_spec("    kafka: {bootstrapServers: k, consumerGroup: g, topics: [t]}\n"),
        "BackpressurePolicy/orders",
        "spec.source",
        "set exactly one of source.prometheus or source.kafka",
        7,
    ),
    (
        "empty-topics",
        POLICY_HEAD.replace("[orders]", "[]"),
        "BackpressurePolicy/orders",
        "spec.source.prometheus.topics",
        "must have at least 1 item",
        10,
    ),
    (
        "timeout",
        with_spec("  polling: {intervalSeconds: 2, timeoutSeconds: 2}\n"),
        "BackpressurePolicy/orders",
        "spec.polling",
        "timeoutSeconds (2) must be < intervalSeconds (2)",
        11,
    ),
    (
        "binary",
        with_spec("  circuitBreakerRef: !!binary aGVsbG8=\n"),
        "BackpressurePolicy/orders",
        "spec.circuitBreakerRef",
        "unsupported YAML value",
        11,
    ),
    ("bad-tag-value", with_spec("  circuitBreakerRef: !!int abc\n"), "document", "", "invalid YAML value", None),
    (
        "circuit-no-namespaces",
        CIRCUIT_HEAD + "  signal: {kafka: {bootstrapServers: k}}\n",
        "CircuitBreaker/db",
        "spec",
        "set namespaceSelector and/or namespaces",
        4,
    ),
    (
        "circuit-bad-namespace",
        CIRCUIT_HEAD + "  signal: {kafka: {bootstrapServers: k}}\n  namespaces: [Shop]\n",
        "CircuitBreaker/db",
        "spec.namespaces[0]",
        "must be a DNS-1123 label",
        6,
    ),
]


@pytest.mark.parametrize(
    ("case_id", "text", "subject", "path", "reason", "line"), BAD_CASES, ids=[c[0] for c in BAD_CASES]
)
def test_bad_case(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case_id: str,
    text: str,
    subject: str,
    path: str,
    reason: str,
    line: int | None,
) -> None:
    file = write(tmp_path, text, f"{case_id}.yaml")
    code, out = run_validate(capsys, file)
    assert code == 1, out
    where = f"{file}:{line}" if line is not None else str(file)
    field = f"{path}: " if path else ""
    expected = f"{where}: {subject}: {field}{reason}"
    assert expected in out, f"expected {expected!r} in:\n{out}"


def _expectations(path: Path) -> tuple[str, str]:
    header = path.read_text(encoding="utf-8")
    found = dict(re.findall(r"^# (path|reason): (.*)$", header, flags=re.MULTILINE))
    return found["path"], found["reason"]


@pytest.mark.parametrize("path", sorted((DATA / "bad").glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_sample_files(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    field, reason = _expectations(path)
    code, out = run_validate(capsys, path)
    assert code == 1
    [line] = [ln for ln in out.splitlines() if ln.startswith(f"{path}:")]
    name = re.search(r"name: ([\w.-]+)", path.read_text()).group(1)  # type: ignore[union-attr]
    assert re.match(rf"{re.escape(str(path))}:\d+: \w+/{re.escape(name)}: {re.escape(field)}: ", line), line
    assert reason in line


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    code, out = run_validate(capsys, missing)
    assert code == 1
    assert f"{missing}: document: no such file" in out


def test_directory_instead_of_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_validate(capsys, tmp_path)
    assert code == 1
    assert "is a directory" in out


def test_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"kind: \xe9t\xe9\n")
    code, out = run_validate(capsys, path)
    assert code == 1
    assert "not UTF-8" in out


def test_good_and_bad_files_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, GOOD, "good.yaml")
    bad = write(tmp_path, with_spec("  enforcement: Maybe\n"), "bad.yaml")
    code, out = run_validate(capsys, good, bad)
    assert code == 1
    assert f"{good}: BackpressurePolicy/orders ok" in out
    assert f"{good}: CircuitBreaker/db ok" in out
    assert f"{bad}:11: BackpressurePolicy/orders: spec.enforcement: must be one of Enforce, Observe" in out


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = with_spec("  thresholds:\n    low: {green: -1, yellow: x, red: 1e13}\n  enforcement: no\n") + "---\n- x\n"
    code, out = run_validate(capsys, write(tmp_path, text))
    assert code == 1
    for needle in ("low.green: must be >= 0", "low.yellow: must be a number", "low.red: must be <= 1000000000000"):
        assert needle in out
    assert "spec.enforcement: must be one of Enforce, Observe" in out
    assert "document: not a Kubernetes object" in out


def test_empty_documents_are_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_validate(capsys, write(tmp_path, "---\n---\n# only a comment\n---\n"))
    assert code == 0
    assert "no objects found" in out
    assert validate_documents("---\n---\n", "x.yaml") == []


def test_library_problems_carry_structure() -> None:
    [problem] = validate_documents(with_spec("  thresholds:\n    medium: {green: 9, yellow: 2, red: 3}\n"), "p.yaml")
    assert problem == Problem(
        file="p.yaml",
        message="thresholds must increase: green (9) < yellow (2) < red (3)",
        kind="BackpressurePolicy",
        name="orders",
        path="spec.thresholds.medium",
        line=12,
    )


def test_load_objects(tmp_path: Path) -> None:
    objects = load_objects(write(tmp_path, GOOD))
    assert [type(o) for o in objects] == [BackpressurePolicy, CircuitBreaker]
    policy = objects[0]
    assert isinstance(policy, BackpressurePolicy)
    assert policy.spec.thresholds.medium.red == 5000
    assert policy.spec.source.prometheus is not None
    assert policy.spec.source.prometheus.topics == ["orders"]
    circuit = objects[1]
    assert isinstance(circuit, CircuitBreaker)
    assert circuit.spec.override.until is not None and circuit.spec.override.until.year == 2030

    with pytest.raises(InvalidResources) as info:
        load_objects(write(tmp_path, with_spec("  enforcement: x\n"), "bad.yaml"))
    assert [p.path for p in info.value.problems] == ["spec.enforcement"]
    with pytest.raises(InvalidResources, match="no such file"):
        load_objects(tmp_path / "missing.yaml")


def test_validate_object_for_api_server_dicts() -> None:
    """The operator's entry point: a dict as the API server returns it (status, managedFields and all)."""
    spec: dict[str, Any] = {"signal": {"kafka": {"bootstrapServers": "k:9092"}}, "namespaces": ["shop"]}
    obj: dict[str, Any] = {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "CircuitBreaker",
        "metadata": {"name": "db", "uid": "u-1", "generation": 3, "managedFields": [{"manager": "kubectl"}]},
        "spec": spec,
        "status": {"state": "open", "anything": 1},
    }
    result = validate_object(obj, "cluster")
    assert isinstance(result, CircuitBreaker)
    assert result.metadata.generation == 3
    bad = validate_object({**obj, "spec": {**spec, "failureThreshold": 0}}, "cluster")
    assert isinstance(bad, list)
    assert [(p.path, p.message) for p in bad] == [("spec.failureThreshold", "must be >= 1")]
