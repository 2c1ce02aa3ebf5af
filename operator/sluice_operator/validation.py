"""Validate BackpressurePolicy / CircuitBreaker YAML the way the API server would, in plain words.

`sluice validate`, local mode and the operator all go through here, so a spec that passes
`sluice validate` is a spec the engine can run. Problems are data (`Problem`), never exceptions:
bad YAML, unknown kinds, wrong types and impossible numbers all come back as a list.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from sluice_operator.api.circuit import CircuitBreaker
from sluice_operator.api.common import API_VERSION, DNS1123_LABEL, DNS1123_SUBDOMAIN
from sluice_operator.api.policy import BackpressurePolicy
from sluice_operator.problems import Problem, ProblemsError

M = TypeVar("M", bound=BaseModel)

Resource = BackpressurePolicy | CircuitBreaker
KINDS: dict[str, type[BackpressurePolicy] | type[CircuitBreaker]] = {
    "BackpressurePolicy": BackpressurePolicy,
    "CircuitBreaker": CircuitBreaker,
}
Loc = tuple[int | str, ...]


class InvalidResources(ProblemsError[Problem]):
    """Raised by `load_objects` when a file holds anything but valid Sluice objects."""


@dataclass(frozen=True)
class Parsed:
    """Every valid object of a text, and every problem found in it."""

    objects: list[Resource]
    problems: list[Problem]


class YamlLoader(yaml.SafeLoader):
    """SafeLoader reading YAML as kubectl does: timestamps stay strings, `1e12` is a number."""


def _as_string(loader: YamlLoader, node: yaml.Node) -> Any:
    return loader.construct_yaml_str(node)


YamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _as_string)
# YAML 1.2 (and so kubectl) reads `1e12` as a number; PyYAML's YAML 1.1 rules want `1.0e+12`.
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _documents(text: str, filename: str) -> Iterator[tuple[yaml.Node | None, Any] | Problem]:
    """(node, data) per document; a YAML error ends the stream with a Problem carrying the line."""
    loader: YamlLoader | None = None
    try:
        loader = YamlLoader(text)
        while loader.check_node():
            node = loader.get_node()
            yield node, loader.construct_document(node)
    except yaml.reader.ReaderError as exc:
        at = text.count("\n", 0, exc.position) + 1
        yield Problem(filename, f"invalid YAML: character U+{int(exc.character):04X} is not allowed", line=at)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        yield Problem(filename, f"invalid YAML: {reason}", line=line)
    except RecursionError:
        yield Problem(filename, "invalid YAML: nested too deeply")
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. `!!int abc`: a tag the value cannot satisfy
        yield Problem(filename, f"invalid YAML value: {exc}")
    finally:
        if loader is not None:
            loader.dispose()


def _line(node: yaml.Node | None, loc: Loc) -> int | None:
    """Line of the deepest field on `loc` that exists in the YAML (the key's line, not its value's)."""
    if node is None:
        return None
    line = int(node.start_mark.line)
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    child, line = value, int(key.start_mark.line)
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
            line = int(child.start_mark.line)
        if child is None:
            break
        node = child
    return line + 1


def format_path(loc: Loc) -> str:
    """('spec', 'topics', 0) -> 'spec.topics[0]' (camelCase, as written in the YAML)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _NotJson(ValueError):
    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message


def _jsonable(value: Any, loc: Loc = ()) -> Any:
    """What kubectl would send: JSON values only, integral floats as integers (YAML `5.0` is 5)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NotJson(loc, f"field names must be strings, got {key!r}")
            out[key] = _jsonable(item, (*loc, key))
        return out
    if isinstance(value, list | tuple):
        return [_jsonable(item, (*loc, i)) for i, item in enumerate(value)]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _NotJson(loc, "must be a finite number")
        return int(value) if value.is_integer() and abs(value) < 2**63 else value
    if value is None or isinstance(value, str | int | bool):
        return value
    raise _NotJson(loc, f"unsupported YAML value of type {type(value).__name__}")


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)


_TYPES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping (field: value)",
    "model_type": "must be a mapping (field: value)",
    "model_attributes_type": "must be a mapping (field: value)",
    "datetime_type": "must be an RFC 3339 date-time, e.g. 2030-01-01T00:00:00Z",
    "datetime_parsing": "must be an RFC 3339 date-time, e.g. 2030-01-01T00:00:00Z",
    "datetime_from_date_parsing": "must be an RFC 3339 date-time, e.g. 2030-01-01T00:00:00Z",
    "finite_number": "must be a finite number",
    "missing": "missing required field",
    "json_invalid": "is not valid JSON",
}
_BOUNDS = {
    "less_than_equal": ("le", "<="),
    "less_than": ("lt", "<"),
    "greater_than_equal": ("ge", ">="),
    "greater_than": ("gt", ">"),
}
_PATTERNS = {
    DNS1123_SUBDOMAIN: "must be a DNS-1123 name: lowercase letters, digits, '-' and '.', "
    "starting and ending with a letter or digit",
    DNS1123_LABEL: "must be a DNS-1123 label: lowercase letters, digits and '-', "
    "starting and ending with a letter or digit, at most 63 characters",
}


def _fields_at(root: type[BaseModel], loc: Loc) -> list[str]:
    """Wire names of the fields allowed at `loc` (for 'did you mean'); empty when unknown."""
    annotation: Any = root
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(part, int):
            args = typing.get_args(annotation)
            annotation = args[0] if args else None
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = next(
                (f for n, f in annotation.model_fields.items() if part in (n, f.alias)),
                None,
            )
            annotation = field.annotation if field is not None else None
        elif typing.get_origin(annotation) is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [f.alias or n for n, f in annotation.model_fields.items()]
    return []


def _unwrap(annotation: Any) -> Any:
    """`X | None` -> X; `Annotated[X, ...]` -> X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def explain(error: ErrorDetails, root: type[BaseModel]) -> str:
    """One pydantic error in plain words."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        return f"must be {op} {_number(ctx.get(key))}"
    if kind == "extra_forbidden":
        field = str(error["loc"][-1]) if error["loc"] else "?"
        known = _fields_at(root, error["loc"][:-1])
        close = difflib.get_close_matches(field, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else (f" (known: {', '.join(known)})" if known else "")
        return f"unknown field '{field}'{hint}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        got = error.get("input")
        return f"must be one of {', '.join(choices)} (got {got!r})" if choices else error["msg"]
    if kind in ("string_too_short", "string_too_long"):
        if kind == "string_too_short" and ctx.get("min_length") == 1:
            return "must not be empty"
        word = "at least" if kind == "string_too_short" else "at most"
        bound = ctx.get("min_length", ctx.get("max_length"))
        return f"must be {word} {bound} characters long"
    if kind in ("too_short", "too_long"):
        word = "at least" if kind == "too_short" else "at most"
        bound = ctx.get("min_length", ctx.get("max_length"))
        return f"must have {word} {bound} item{'s' if bound != 1 else ''}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return _PATTERNS.get(pattern, f"must match the pattern {pattern}")
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return _TYPES.get(kind, str(error["msg"]))


def _identity(data: dict[str, Any]) -> tuple[str | None, str | None]:
    kind = data.get("kind")
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return (kind if isinstance(kind, str) else None), (name if isinstance(name, str) and name else None)


def _validate_one(node: yaml.Node | None, data: Any, filename: str) -> Resource | list[Problem]:
    if not isinstance(data, dict):
        got = "a list" if isinstance(data, list) else f"{type(data).__name__} {data!r:.40}"
        return [Problem(filename, f"not a Kubernetes object: expected a mapping, got {got}", line=_line(node, ()))]
    kind, name = _identity(data)

    def problem(message: str, loc: Loc = (), shown_kind: str | None = kind) -> Problem:
        return Problem(filename, message, shown_kind, name, format_path(loc), _line(node, loc))

    if kind is None:
        return [problem("missing required field" if "kind" not in data else "must be a string", ("kind",), "?")]
    model = KINDS.get(kind)
    if model is None:
        return [problem(f"unknown kind '{kind}' (expected one of {', '.join(KINDS)})", ("kind",))]
    api_version = data.get("apiVersion")
    if api_version != API_VERSION:
        reason = "missing required field" if api_version is None else f"unknown apiVersion {api_version!r}"
        return [problem(f"{reason} (expected {API_VERSION})", ("apiVersion",))]
    try:
        payload = json.dumps(_jsonable(data))
    except _NotJson as exc:
        return [problem(exc.message, exc.loc)]
    problems = []
    if name is not None and not re.fullmatch(DNS1123_SUBDOMAIN, name):
        problems.append(problem(_PATTERNS[DNS1123_SUBDOMAIN], ("metadata", "name")))
    try:
        obj = model.model_validate_json(payload, strict=True)
    except ValidationError as exc:
        problems += [problem(explain(err, model), tuple(err["loc"])) for err in exc.errors(include_url=False)]
        return problems
    return problems or obj


def validate_object(data: Any, source: str) -> Resource | list[Problem]:
    """One already-parsed object (e.g. from the API server): the model, or its problems."""
    return _validate_one(None, data, source)


def parse_documents(text: str, filename: str) -> Parsed:
    """Every object of a multi-document YAML text, validated; empty documents are skipped."""
    objects: list[Resource] = []
    problems: list[Problem] = []
    for item in _documents(text, filename):
        if isinstance(item, Problem):
            problems.append(item)
            continue
        node, data = item
        if data is None:
            continue
        result = _validate_one(node, data, filename)
        if isinstance(result, list):
            problems.extend(result)
        else:
            objects.append(result)
    return Parsed(objects, problems)


def validate_documents(text: str, filename: str) -> list[Problem]:
    """Problems of every document in `text` (empty: every object is valid)."""
    return parse_documents(text, filename).problems


def read_text(path: Path) -> str | Problem:
    """A file's text, or a Problem saying plainly why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Problem(str(path), "no such file")
    except IsADirectoryError:
        return Problem(str(path), "is a directory, not a file")
    except UnicodeDecodeError:
        return Problem(str(path), "is not UTF-8 text")
    except OSError as exc:
        return Problem(str(path), f"cannot read: {exc.strerror or exc}")


def load_objects(path: Path) -> list[Resource]:
    """Every object in a YAML file; raises InvalidResources listing every problem when any is wrong."""
    text = read_text(path)
    if isinstance(text, Problem):
        raise InvalidResources([text])
    parsed = parse_documents(text, str(path))
    if parsed.problems:
        raise InvalidResources(parsed.problems)
    return parsed.objects


def validation_message(error: ValidationError, model: type[BaseModel]) -> str:
    """Pydantic's errors as one line a person can act on, worded as `sluice validate` words them."""
    return "; ".join(
        f"{format_path(('spec', *item['loc']))}: {explain(item, model)}" for item in error.errors()[:5]
    )


def spec_or_none(model: type[M], spec: Mapping[str, Any]) -> M | None:
    """`spec` parsed as `model`, or None when it does not validate (the caller already said why)."""
    try:
        return model.model_validate(spec)
    except ValidationError:
        return None
