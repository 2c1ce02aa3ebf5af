"""The committed JSON Schemas of the decision documents match the models, and real documents validate."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema

from sluice.decision import (
    SCHEMA_DIR,
    CircuitState,
    Decision,
    PolicyRef,
    expiry,
    fingerprint,
    json_schemas,
    parse_decision,
    to_json,
)


def test_committed_schemas_match_the_models() -> None:
    for filename, schema in json_schemas().items():
        committed = json.loads((SCHEMA_DIR / filename).read_text())
        assert committed == schema, f"{filename} is stale: run `make crds` to regenerate the schemas"


def _decision(**update: object) -> Decision:
    now = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    base = Decision(policy=PolicyRef(namespace="ns", name="p"), epoch=3, generated_at=now,
                    expires_at=expiry(now), backlog=1200.0, source="prometheus")
    return base.model_copy(update=update)


def test_documents_validate_against_the_shipped_schemas() -> None:
    schemas = json_schemas()
    circuit = CircuitState(name="c", state="half-open", probe_ratio=0.25, epoch=2,
                           expires_at=datetime(2026, 11, 24, 10, 3, tzinfo=UTC))
    doc = json.loads(to_json(_decision(circuit=circuit)))
    jsonschema.validate(doc, schemas["decision.schema.json"])
    jsonschema.validate(json.loads(to_json(circuit)), schemas["circuit.schema.json"])
    bad = dict(doc, priorities={"high": {"zone": "purple", "delayMs": 1, "shed": False}})
    try:
        jsonschema.validate(bad, schemas["decision.schema.json"])
    except jsonschema.ValidationError as error:
        assert "purple" in str(error)
    else:
        raise AssertionError("an unknown zone must not validate")


def test_canonical_json_round_trips_and_is_stable() -> None:
    doc = _decision()
    assert to_json(parse_decision(to_json(doc))) == to_json(doc)


def test_fingerprint_ignores_timestamps_epoch_and_backlog_but_not_actions() -> None:
    a = _decision()
    later = datetime(2026, 11, 24, 11, 0, tzinfo=UTC)
    b = _decision(epoch=9, generated_at=later, expires_at=expiry(later), backlog=1300.0, reason="x")
    assert fingerprint(a) == fingerprint(b)
    c = _decision(enforcement="Observe")
    assert fingerprint(c) != fingerprint(a)
