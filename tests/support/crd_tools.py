"""Play the API server against the generated CRDs: defaulting, schema validation, CEL rules.

No API server can run here, so the tests do what it does with a CRD's openAPIV3Schema, in the
same order: unknown fields (kubectl's strict field validation), defaults, the OpenAPI schema
(jsonschema draft 4 understands OpenAPI 3.0's boolean exclusiveMinimum), then every
`x-kubernetes-validations` rule with cel-python, fed values typed by the schema the way the API
server types them (`number` is always a double, `integer` an int).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy import celtypes
from celpy.evaluation import CELEvalError

from sluice_operator.api import crd as crd_gen
from sluice_operator.validation import YamlLoader

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
Schema = dict[str, Any]


def generated() -> dict[str, dict[str, Any]]:
    """Kind -> CRD, straight from the generator."""
    return {c["spec"]["names"]["kind"]: c for c in crd_gen.crds()}


def root_schema(crd: dict[str, Any]) -> Schema:
    """The openAPIV3Schema of the CRD's only version."""
    schema: Schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def load_yaml_objects(path: Path) -> list[Any]:
    """Documents of a YAML file, timestamps kept as strings (like kubectl), empty documents dropped."""
    return [doc for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=YamlLoader) if doc is not None]


@dataclass(frozen=True)
class Rule:
    """One `x-kubernetes-validations` entry at one place of one CRD."""

    kind: str
    path: str
    rule: str
    message: str


def _children(schema: Schema) -> Iterator[tuple[str, Schema]]:
    for name, child in schema.get("properties", {}).items():
        yield f".{name}", child
    if isinstance(schema.get("items"), dict):
        yield "[*]", schema["items"]
    if isinstance(schema.get("additionalProperties"), dict):
        yield "{*}", schema["additionalProperties"]


def rules_of(kind: str, schema: Schema, path: str = "") -> list[Rule]:
    """Every CEL rule in a schema, with the schema path it is attached to."""
    found = [Rule(kind, path or ".", r["rule"], r["message"]) for r in schema.get("x-kubernetes-validations", [])]
    for step, child in _children(schema):
        found += rules_of(kind, child, path + step)
    return found


def apply_defaults(schema: Schema, value: Any) -> Any:
    """The API server's defaulting: absent properties get their default, recursively, in a copy."""
    value = copy.deepcopy(value)
    _default_in_place(schema, value)
    return value


def _default_in_place(schema: Schema, value: Any) -> None:
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                _default_in_place(child, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for item in value.values():
                _default_in_place(extra, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default_in_place(schema["items"], item)


def to_cel(schema: Schema, value: Any) -> Any:
    """A JSON value as the API server hands it to CEL, typed by its schema (unknown fields pruned)."""
    kind = schema.get("type")
    if kind == "object":
        if "properties" in schema:
            props = schema["properties"]
            return celtypes.MapType(
                {celtypes.StringType(k): to_cel(props[k], v) for k, v in value.items() if k in props}
            )
        extra = schema.get("additionalProperties", {})
        return celtypes.MapType({celtypes.StringType(k): to_cel(extra, v) for k, v in value.items()})
    if kind == "array":
        return celtypes.ListType([to_cel(schema["items"], v) for v in value])
    if kind == "number":
        return celtypes.DoubleType(float(value))
    if kind == "integer":
        return celtypes.IntType(value)
    if kind == "boolean":
        return celtypes.BoolType(value)
    if kind == "string" and schema.get("format") == "date-time":
        return celtypes.TimestampType(value)
    if kind == "string":
        return celtypes.StringType(value)
    raise TypeError(f"no CEL conversion for schema type {kind!r}")


@dataclass(frozen=True)
class Outcome:
    """The result of one rule on one value: True, False, or the evaluation error (counts as failed)."""

    rule: Rule
    data_path: str
    holds: bool
    error: str | None = None


_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def _program(rule: str) -> Any:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule))
    return _PROGRAMS[rule]


def evaluate_rules(kind: str, schema: Schema, value: Any, path: str = "", data_path: str = "") -> list[Outcome]:
    """Evaluate every rule that applies to `value` (already defaulted), walking schema and data together."""
    outcomes: list[Outcome] = []
    rules = schema.get("x-kubernetes-validations", [])
    if rules:
        cel_self = to_cel(schema, value)
        for entry in rules:
            rule = Rule(kind, path or ".", entry["rule"], entry["message"])
            try:
                result = _program(entry["rule"]).evaluate({"self": cel_self})
            except CELEvalError as exc:
                outcomes.append(Outcome(rule, data_path or ".", False, str(exc)))
                continue
            if not isinstance(result, celtypes.BoolType):
                outcomes.append(Outcome(rule, data_path or ".", False, f"not a bool: {result!r}"))
                continue
            outcomes.append(Outcome(rule, data_path or ".", bool(result)))
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                outcomes += evaluate_rules(kind, child, value[name], f"{path}.{name}", f"{data_path}.{name}")
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, item in value.items():
                outcomes += evaluate_rules(kind, extra, item, f"{path}{{*}}", f"{data_path}[{key}]")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            outcomes += evaluate_rules(kind, schema["items"], item, f"{path}[*]", f"{data_path}[{i}]")
    return outcomes


def unknown_fields(schema: Schema, value: Any, path: str = "") -> list[str]:
    """Fields the schema does not declare (kubectl's default strict field validation rejects them)."""
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for name, item in value.items():
            child = schema["properties"].get(name)
            if child is None:
                found.append(f"{path}.{name}".lstrip("."))
            else:
                found += unknown_fields(child, item, f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unknown_fields(schema["items"], item, f"{path}[{i}]")
    return found


def schema_errors(schema: Schema, value: Any) -> list[str]:
    """OpenAPI v3.0 schema violations (jsonschema draft 4 reads boolean exclusive bounds natively)."""
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER)
    return [
        f"{'.'.join(str(p) for p in err.absolute_path) or '.'}: {err.message}"
        for err in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    ]


def api_server_errors(crd: dict[str, Any], obj: Any) -> list[str]:
    """Everything the API server would reject `obj` for (empty: it would be stored)."""
    schema = root_schema(crd)
    kind = crd["spec"]["names"]["kind"]
    errors = [f"{path}: unknown field" for path in unknown_fields(schema, obj)]
    defaulted = apply_defaults(schema, obj)
    errors += schema_errors(schema, defaulted)
    if errors:  # the API server runs CEL only on objects that pass the schema
        return errors
    for outcome in evaluate_rules(kind, schema, defaulted):
        if not outcome.holds:
            errors.append(f"{outcome.data_path}: {outcome.rule.message} ({outcome.error or 'rule is false'})")
    return errors
