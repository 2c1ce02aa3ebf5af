"""Every CEL rule of the committed CRDs, evaluated with cel-python on objects where it holds and where it fails.

Objects are defaulted from the schema first, as the API server does, so `has()` and field access see
what the API server would. Each case states exactly which rules must fail; the pydantic models must
agree with the API server on every case (`sluice validate` accepts iff the cluster would).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from sluice_operator.validation import validate_documents
from tests.support.crd_tools import (
    CRD_DIR,
    Outcome,
    Rule,
    api_server_errors,
    apply_defaults,
    evaluate_rules,
    root_schema,
    rules_of,
)

POLICY = "BackpressurePolicy"
CIRCUIT = "CircuitBreaker"


def _crds() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        out[doc["spec"]["names"]["kind"]] = doc
    return out


CRDS = _crds()
ALL_RULES = [r for kind, crd in CRDS.items() for r in rules_of(kind, root_schema(crd))]

# Rule messages, to name the rule a case expects to fail.
WINDOW = "thresholds must increase: green < yellow < red"
DELAY = "minMs must be <= maxMs"
SOURCE = "set exactly one of prometheus or kafka"
PROM_FORM = "set either query, or consumerGroup and topics (not both)"
PROM_PAIR = "consumerGroup and topics go together"
POLLING = "timeoutSeconds must be < intervalSeconds"
SIGNAL = SOURCE
RATIO = "halfOpenProbeRatio must be in (0, 1]"
FLOORS = "floors must add up to at most 1"
WHERE = "set namespaceSelector and/or namespaces: where the circuit state is published"

POLICY_SPEC: dict[str, Any] = {"source": {"prometheus": {"query": "sum(lag)"}}}
CIRCUIT_SPEC: dict[str, Any] = {
    "signal": {"prometheus": {"query": "errors", "failWhen": {"above": 1}}},
    "namespaces": ["shop"],
}


def policy(**spec: Any) -> dict[str, Any]:
    return {**copy.deepcopy(POLICY_SPEC), **spec}


def circuit(**spec: Any) -> dict[str, Any]:
    return {**copy.deepcopy(CIRCUIT_SPEC), **spec}


Case = tuple[str, str, dict[str, Any], set[tuple[str, str]]]


def _cases() -> list[Case]:
    cases: list[Case] = [
        # -- holds: defaults and ordinary specs
        ("policy-defaults", POLICY, policy(), set()),
        ("policy-structured", POLICY, {"source": {"prometheus": {"consumerGroup": "g", "topics": ["t"]}}}, set()),
        (
            "policy-kafka",
            POLICY,
            {"source": {"kafka": {"bootstrapServers": "k:9092", "consumerGroup": "g", "topics": ["t"]}}},
            set(),
        ),
        ("delays-equal", POLICY, policy(delays={"yellow": {"minMs": 7, "maxMs": 7}}), set()),
        ("polling-fast", POLICY, policy(polling={"intervalSeconds": 10, "timeoutSeconds": 9.99}), set()),
        ("polling-interval-only", POLICY, policy(polling={"intervalSeconds": 60}), set()),
        ("floors-sum-one", POLICY, policy(control={"floors": {"high": 0.1, "medium": 0.2, "low": 0.7}}), set()),
        ("floors-low-only", POLICY, policy(control={"mode": "DrainTime", "floors": {"low": 0.25}}), set()),
        ("circuit-defaults", CIRCUIT, circuit(), set()),
        ("circuit-kafka", CIRCUIT, circuit(signal={"kafka": {"bootstrapServers": "k:9092"}}), set()),
        ("circuit-selector-only", CIRCUIT, {"signal": CIRCUIT_SPEC["signal"], "namespaceSelector": {}}, set()),
        ("circuit-ratio-one", CIRCUIT, circuit(halfOpenProbeRatio=1), set()),
        ("circuit-ratio-tiny", CIRCUIT, circuit(halfOpenProbeRatio=0.001), set()),
        # -- fails: source / signal
        ("source-none", POLICY, {"source": {}}, {(".spec.source", SOURCE)}),
        (
            "source-both",
            POLICY,
            {
                "source": {
                    "prometheus": {"query": "q"},
                    "kafka": {"bootstrapServers": "k", "consumerGroup": "g", "topics": ["t"]},
                }
            },
            {(".spec.source", SOURCE)},
        ),
        (
            "prom-both-forms",
            POLICY,
            policy(source={"prometheus": {"query": "q", "consumerGroup": "g", "topics": ["t"]}}),
            {(".spec.source.prometheus", PROM_FORM)},
        ),
        ("prom-nothing", POLICY, policy(source={"prometheus": {}}), {(".spec.source.prometheus", PROM_FORM)}),
        (
            "prom-query-and-topics",
            POLICY,
            policy(source={"prometheus": {"query": "q", "topics": ["t"]}}),
            {(".spec.source.prometheus", PROM_PAIR)},
        ),
        (
            "prom-group-only",
            POLICY,
            policy(source={"prometheus": {"consumerGroup": "g"}}),
            {(".spec.source.prometheus", PROM_PAIR), (".spec.source.prometheus", PROM_FORM)},
        ),
        (
            "polling-equal",
            POLICY,
            policy(polling={"intervalSeconds": 5, "timeoutSeconds": 5}),
            {(".spec.polling", POLLING)},
        ),
        # the default interval (5 s) is what makes this one fail: defaulting matters
        ("polling-timeout-over-default", POLICY, policy(polling={"timeoutSeconds": 6}), {(".spec.polling", POLLING)}),
        (
            "floors-over-one",
            POLICY,
            policy(control={"floors": {"high": 0.5, "medium": 0.5, "low": 0.5}}),
            {(".spec.control.floors", FLOORS)},
        ),
        ("signal-none", CIRCUIT, circuit(signal={}), {(".spec.signal", SIGNAL)}),
        (
            "signal-both",
            CIRCUIT,
            circuit(
                signal={"prometheus": {"query": "e", "failWhen": {"above": 1}}, "kafka": {"bootstrapServers": "k"}}
            ),
            {(".spec.signal", SIGNAL)},
        ),
        ("ratio-zero", CIRCUIT, circuit(halfOpenProbeRatio=0), {(".spec", RATIO)}),
        ("ratio-over-one", CIRCUIT, circuit(halfOpenProbeRatio=1.5), {(".spec", RATIO)}),
        ("ratio-negative", CIRCUIT, circuit(halfOpenProbeRatio=-0.1), {(".spec", RATIO)}),
        ("namespaces-empty", CIRCUIT, circuit(namespaces=[]), {(".spec", WHERE)}),
        ("namespaces-absent", CIRCUIT, {"signal": CIRCUIT_SPEC["signal"]}, {(".spec", WHERE)}),
        (
            "circuit-everything-wrong",
            CIRCUIT,
            {"signal": {}, "halfOpenProbeRatio": 2},
            {(".spec", WHERE), (".spec", RATIO), (".spec.signal", SIGNAL)},
        ),
    ]
    for priority in ("high", "medium", "low"):
        where = f".spec.thresholds.{priority}"
        cases += [
            (
                f"window-{priority}-ok",
                POLICY,
                policy(thresholds={priority: {"green": 0, "yellow": 0.5, "red": 1e12}}),
                set(),
            ),
            (
                f"window-{priority}-green-eq-yellow",
                POLICY,
                policy(thresholds={priority: {"green": 10, "yellow": 10, "red": 20}}),
                {(where, WINDOW)},
            ),
            (
                f"window-{priority}-red-below-yellow",
                POLICY,
                policy(thresholds={priority: {"green": 1, "yellow": 30, "red": 20}}),
                {(where, WINDOW)},
            ),
        ]
    for zone in ("yellow", "red"):
        cases += [
            (
                f"delays-{zone}-reversed",
                POLICY,
                policy(delays={zone: {"minMs": 501, "maxMs": 500}}),
                {(f".spec.delays.{zone}", DELAY)},
            ),
        ]
    return cases


CASES = _cases()


def _object(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": kind, "metadata": {"name": "case"}, "spec": spec}


def _outcomes(kind: str, spec: dict[str, Any]) -> list[Outcome]:
    schema = root_schema(CRDS[kind])
    return evaluate_rules(kind, schema, apply_defaults(schema, _object(kind, spec)))


def test_rules_were_found() -> None:
    # 3 windows + 2 delay ranges + source + 2 prometheus-source + polling + floors; signal + 2 on the circuit
    assert len(ALL_RULES) == 13
    assert len({(r.kind, r.path, r.rule) for r in ALL_RULES}) == len(ALL_RULES)


@pytest.mark.parametrize(("case_id", "kind", "spec", "failing"), CASES, ids=[c[0] for c in CASES])
def test_rule_verdicts(case_id: str, kind: str, spec: dict[str, Any], failing: set[tuple[str, str]]) -> None:
    outcomes = _outcomes(kind, spec)
    assert not [o for o in outcomes if o.error], "a rule errored instead of deciding (missing default?)"
    got = {(o.rule.path, o.rule.message) for o in outcomes if not o.holds}
    assert got == failing


@pytest.mark.parametrize(("case_id", "kind", "spec", "failing"), CASES, ids=[c[0] for c in CASES])
def test_models_agree_with_the_api_server(
    case_id: str, kind: str, spec: dict[str, Any], failing: set[tuple[str, str]]
) -> None:
    obj = _object(kind, spec)
    server = api_server_errors(CRDS[kind], obj)
    problems = validate_documents(yaml.safe_dump(obj), f"{case_id}.yaml")
    assert bool(server) == bool(problems), (server, [str(p) for p in problems])
    assert bool(failing) <= bool(server)


def test_every_rule_holds_somewhere_and_fails_somewhere() -> None:
    seen: dict[Rule, set[bool]] = {r: set() for r in ALL_RULES}
    for _, kind, spec, _failing in CASES:
        for outcome in _outcomes(kind, spec):
            assert outcome.rule in seen, f"rule not found by the scan: {outcome.rule}"
            seen[outcome.rule].add(outcome.holds)
    untested = {f"{r.kind} {r.path}: {r.rule}": sorted(v) for r, v in seen.items() if v != {True, False}}
    assert untested == {}, f"{len(untested)} of {len(ALL_RULES)} rules lack a holding or a failing case"


def test_without_defaulting_rules_would_error() -> None:
    """Why the tests default first: the API server evaluates rules on defaulted objects."""
    schema = root_schema(CRDS[CIRCUIT])
    raw = evaluate_rules(CIRCUIT, schema, _object(CIRCUIT, circuit()))
    assert any(o.error for o in raw if o.rule.message == RATIO)
