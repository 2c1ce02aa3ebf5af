"""Property: whatever a user writes, validation answers with objects or Problems, never an exception."""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sluice_operator.api import BackpressurePolicySpec, CircuitBreakerSpec
from sluice_operator.problems import Problem
from sluice_operator.validation import parse_documents, validate_documents

GOOD = Path(__file__).parent / "data" / "good"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _field_names(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[str]:
    """Every wire name of a model and of the models nested in it."""
    seen = seen if seen is not None else set()
    if model in seen:
        return set()
    seen.add(model)
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(field.alias or name)
        stack: list[Any] = [field.annotation]
        while stack:
            annotation = stack.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                names |= _field_names(annotation, seen)
            stack.extend(typing.get_args(annotation))
    return names


FIELDS = sorted(_field_names(BackpressurePolicySpec) | _field_names(CircuitBreakerSpec))
NAMES = st.sampled_from([*FIELDS, "foo", "", "spec", "status", "metadata", "apiVersion", "kind"])
WORDS = st.sampled_from(
    [
        "high", "medium", "low", "Enforce", "Observe", "LastKnown", "ForceOpen", "In", "max", "sum",
        "2030-01-01T00:00:00Z", "not-a-date", "1e13", "-1", "", "kafka:9092", "Shop", "shop",
    ]
)  # fmt: skip
NUMBERS = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([0, 1, -1, 10**12, 10**12 + 1, 3_600_000, 3_600_001, 2**63, -(2**63) - 1, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 1.0, 1e12, 1.5e12, -0.0, 1e308]),
)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, WORDS, st.text(max_size=12))
VALUES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(NAMES, children, max_size=6),
        st.dictionaries(st.integers(-3, 3), children, max_size=2),
    ),
    max_leaves=25,
)
SPECS = st.dictionaries(NAMES, VALUES, max_size=8)
KINDS = st.sampled_from(["BackpressurePolicy", "CircuitBreaker", "Deployment", ""])
API_VERSIONS = st.sampled_from(["sluice.dev/v1alpha1", "sluice.dev/v1", "v1", None])


def _check(text: str) -> list[Problem]:
    """The property: a list of well-formed Problems, and objects exactly when there are none."""
    parsed = parse_documents(text, "prop.yaml")
    assert isinstance(parsed.problems, list)
    for problem in parsed.problems:
        assert isinstance(problem, Problem)
        assert problem.message
        assert str(problem).startswith("prop.yaml")
    assert validate_documents(text, "prop.yaml") == parsed.problems
    return parsed.problems


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


@SETTINGS
@given(kind=st.sampled_from(["BackpressurePolicy", "CircuitBreaker"]), spec=SPECS)
def test_random_specs(kind: str, spec: dict[str, Any]) -> None:
    doc = {"apiVersion": "sluice.dev/v1alpha1", "kind": kind, "metadata": {"name": "p"}, "spec": spec}
    _check(_dump(doc))


@SETTINGS
@given(
    api_version=API_VERSIONS, kind=KINDS, metadata=VALUES, spec=VALUES, extra=st.dictionaries(NAMES, VALUES, max_size=2)
)
def test_random_objects(api_version: Any, kind: str, metadata: Any, spec: Any, extra: dict[str, Any]) -> None:
    doc = {**extra, "apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": spec}
    _check(_dump(doc))


def _good_objects() -> list[dict[str, Any]]:
    out = []
    for path in sorted(GOOD.glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


GOOD_OBJECTS = _good_objects()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*prefix, i))
    return found


@SETTINGS
@given(data=st.data())
def test_mutated_good_objects(data: st.DataObject) -> None:
    """Near-valid objects reach the deep validators: replace, delete or add one field at a time."""
    doc = copy.deepcopy(data.draw(st.sampled_from(GOOD_OBJECTS)))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if len(p) >= 2]
        if not paths:  # every nested field was deleted by an earlier mutation
            break
        path = data.draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = data.draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(NAMES)] = data.draw(VALUES)
    _check(_dump(doc))


def test_unmutated_good_objects_are_valid() -> None:
    assert GOOD_OBJECTS
    for doc in GOOD_OBJECTS:
        assert _check(_dump(doc)) == []


@SETTINGS
@given(text=st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    _check(text)


YAML_BITS = st.sampled_from(
    [
        "apiVersion: sluice.dev/v1alpha1\n", "kind: BackpressurePolicy\n", "kind: CircuitBreaker\n",
        "metadata: {name: x}\n", "spec:\n", "  source: {prometheus: {query: q}}\n", "  thresholds:\n",
        "    medium: {green: 1, yellow: 2, red: 3}\n", "---\n", "- a\n", "  - b\n", "{", "}", "[", ": ", "&a ",
        "*a\n", "!!binary x\n", "!!int x\n", "!!float y\n", "? [a]\n", "\t", "'", '"', "%YAML 1.1\n", "... \n",
        "!!python/object:os.system x\n", "<<: *a\n", "a: &a {b: 1}\n", "c: !!timestamp 2030-01-01\n",
    ]
)  # fmt: skip


@SETTINGS
@given(bits=st.lists(YAML_BITS, max_size=20))
def test_yaml_shaped_noise(bits: list[str]) -> None:
    _check("".join(bits))
