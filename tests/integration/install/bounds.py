"""Objects that break one schema bound each, built from the CRDs' own schemas.

For every enum, minimum, maximum (exclusive or not), minLength, maxLength, minItems, maxItems, pattern,
format and required list under `spec`, one object: a valid example with exactly that value broken,
and the words the API server uses to refuse that kind of bound.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tests.support.control_plane import REPO_ROOT
from tests.support.crd_tools import load_yaml_objects

BOUNDS = ("enum", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems", "pattern", "format",
          "required")


@dataclass(frozen=True)
class BoundCase:
    id: str
    kind: str
    path: str          # schema path: `.spec.a.b`, `[]` for array items, `{}` for map values
    bound: str
    obj: dict[str, Any]
    expect: str        # `field path|words` the server's refusal must contain


def bases() -> dict[str, list[dict[str, Any]]]:
    """Valid, rich objects per kind (the examples), to break one value of."""
    out: dict[str, list[dict[str, Any]]] = {"BackpressurePolicy": [], "CircuitBreaker": []}
    for name in ("policy-full.yaml", "circuit-breaker.yaml"):
        for doc in load_yaml_objects(REPO_ROOT / "examples" / name):
            out[doc["kind"]].append(doc)
    return out


def _walk(schema: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def _steps(path: str) -> list[str]:
    """`.spec.a[].b{}` -> ['spec', 'a', '[]', 'b', '{}']"""
    out = []
    for part in path.replace("[]", ".[]").replace("{}", ".{}").split("."):
        if part:
            out.append(part)
    return out


def _lookup(obj: Any, steps: list[str]) -> Any:
    for step in steps:
        if step == "[]":
            if not isinstance(obj, list) or not obj:
                return None
            obj = obj[0]
        elif step == "{}":
            if not isinstance(obj, dict) or not obj:
                return None
            obj = obj[next(iter(obj))]
        else:
            if not isinstance(obj, dict) or step not in obj:
                return None
            obj = obj[step]
    return obj


def _set(obj: Any, steps: list[str], value: Any) -> None:
    parent = _lookup(obj, steps[:-1])
    last = steps[-1]
    if last == "[]":
        parent[0] = value
    elif last == "{}":
        parent[next(iter(parent))] = value
    else:
        parent[last] = value


def _server_path(steps: list[str]) -> str:
    out = ""
    for step in steps:
        out += "[0]" if step == "[]" else "" if step == "{}" else f".{step}"
    return out.lstrip(".")


def _item(schema: dict[str, Any], index: int) -> Any:
    """A valid element for an array with this item schema (distinct per index)."""
    items = schema["items"]
    if "enum" in items:
        return items["enum"][index % len(items["enum"])]
    if items.get("type") == "object":
        return {"key": f"k{index}", "operator": "Exists"}
    return f"n{index}"


def _breaking(schema: dict[str, Any], bound: str) -> tuple[Any, str]:
    """(a value that breaks `bound`, the words of the server's refusal)."""
    kind = schema.get("type")
    if bound == "enum":
        return "Bogus", 'Unsupported value: "Bogus"'
    if bound == "minimum":
        low = schema["minimum"]
        if schema.get("exclusiveMinimum"):
            return low, f"should be greater than {low:g}" if isinstance(low, float) else f"should be greater than {low}"
        return (low - 1 if kind == "integer" else low - 0.5), "should be greater than or equal to"
    if bound == "maximum":
        high = schema["maximum"]
        if schema.get("exclusiveMaximum"):
            return high, "should be less than"
        return (high + 1 if kind == "integer" else high * 2 if high > 10 else high + 0.5), \
            "should be less than or equal to"
    if bound == "minLength":
        return "", f"should be at least {schema['minLength']} chars long"
    if bound == "maxLength":
        return "a" * (schema["maxLength"] + 1), "Too long"
    if bound == "minItems":
        return [], f"should have at least {schema['minItems']} items"
    if bound == "maxItems":
        return [_item(schema, i) for i in range(schema["maxItems"] + 1)], "Too many"
    if bound == "pattern":
        return "Not_A-Name!", "should match"
    if bound == "format":
        return "not-a-time", f"must be of type {schema['format']}"
    raise AssertionError(bound)


def cases(crds: dict[str, dict[str, Any]]) -> list[BoundCase]:
    out: list[BoundCase] = []
    valid = bases()
    for kind, crd in sorted(crds.items()):
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, schema in _walk(root, ""):
            if path.startswith(".status") or path.startswith(".metadata"):
                continue
            steps = _steps(path)
            for bound in BOUNDS:
                if bound not in schema:
                    continue
                if bound == "required":
                    for field in schema["required"]:
                        base = next((b for b in valid[kind] if isinstance(_lookup(b, steps), dict)
                                     and field in _lookup(b, steps)), None)
                        assert base is not None, f"no example of {kind} sets {path}.{field}"
                        obj = copy.deepcopy(base)
                        del _lookup(obj, steps)[field]
                        where = _server_path([*steps, field])
                        out.append(BoundCase(f"{kind}{path}.{field}-required", kind, f"{path}.{field}", bound,
                                             obj, f"{where}|Required value"))
                    continue
                base = next((b for b in valid[kind] if _lookup(b, steps[:-1]) not in (None, [], {})), None)
                assert base is not None, f"no example of {kind} has the parent of {path}"
                obj = copy.deepcopy(base)
                value, words = _breaking(schema, bound)
                _set(obj, steps, value)
                out.append(BoundCase(f"{kind}{path}-{bound}", kind, path, bound, obj,
                                     f"{_server_path(steps)}|{words}"))
    return out
