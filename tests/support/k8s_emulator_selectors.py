"""Label and field selectors with kube-apiserver semantics.

Label selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`, `!a`, `a>1`, `a<1`,
comma-separated (AND). Field selectors: `path=value`, `path==value`, `path!=value` over a
per-resource allow-list, as the real server refuses unsupported field labels.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from tests.support.k8s_emulator_errors import bad_request

_KEY = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_RE_NOT_EXISTS = re.compile(rf"^\s*!\s*({_KEY})\s*$")
_RE_EXISTS = re.compile(rf"^\s*({_KEY})\s*$")
_RE_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_RE_CMP = re.compile(rf"^\s*({_KEY})\s*(==|=|!=|>|<)\s*({_VALUE})\s*$")

Labels = Mapping[str, str]
Requirement = Callable[[Labels], bool]


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside `( ... )` value sets."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def _requirement(text: str) -> Requirement:
    if m := _RE_NOT_EXISTS.match(text):
        key = m.group(1)
        return lambda labels: key not in labels
    if m := _RE_SET.match(text):
        key, op, raw_values = m.group(1), m.group(2), m.group(3)
        values = {v.strip() for v in raw_values.split(",") if v.strip()}
        if not values:
            raise bad_request(f"unable to parse requirement: {text!r}: values must not be empty")
        if op == "in":
            return lambda labels: key in labels and labels[key] in values
        return lambda labels: key not in labels or labels[key] not in values
    if m := _RE_CMP.match(text):
        key, op, value = m.group(1), m.group(2), m.group(3)
        if op in ("=", "=="):
            return lambda labels: labels.get(key) == value
        if op == "!=":
            return lambda labels: labels.get(key) != value
        try:
            number = int(value)
        except ValueError:
            raise bad_request(f"unable to parse requirement: {text!r}: value must be an integer") from None
        return _compare(key, number, greater=op == ">")
    if m := _RE_EXISTS.match(text):
        key = m.group(1)
        return lambda labels: key in labels
    raise bad_request(f"unable to parse requirement: {text!r}")


def _compare(key: str, number: int, *, greater: bool) -> Requirement:
    def check(labels: Labels) -> bool:
        actual = _as_int(labels.get(key))
        if actual is None:
            return False
        return actual > number if greater else actual < number
    return check


def _as_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class LabelSelector:
    """A parsed label selector; an empty one matches everything."""

    text: str
    requirements: tuple[Requirement, ...]

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        """Parse the `labelSelector` query parameter (raises a 400 ApiError when malformed)."""
        text = text or ""
        return cls(text, tuple(_requirement(part) for part in _split_top_level(text)))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether the object's labels satisfy every requirement."""
        labels: Labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(req(labels) for req in self.requirements)


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, Mapping):  # e.g. `source` on events is {component: ...}
        value = value.get("component")
    return "" if value is None else str(value)


@dataclass(frozen=True)
class FieldSelector:
    """A parsed field selector: (path, operator, value) terms, ANDed."""

    text: str
    terms: tuple[tuple[str, str, str], ...]

    @classmethod
    def parse(cls, text: str | None, allowed: Collection[str]) -> FieldSelector:
        """Parse `fieldSelector`; unsupported field labels are a 400 like in kube-apiserver."""
        text = text or ""
        terms: list[tuple[str, str, str]] = []
        for part in _split_top_level(text):
            m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
            if not m:
                raise bad_request(f"invalid selector: {part!r}; can't understand it")
            path, op, value = m.group(1), m.group(2), m.group(3)
            if path not in allowed:
                raise bad_request(f'field label not supported: "{path}"')
            terms.append((path, "!=" if op == "!=" else "=", value))
        return cls(text, tuple(terms))

    @property
    def name(self) -> str | None:
        """The exact `metadata.name=` value if the selector pins one (a single-object watch)."""
        for path, op, value in self.terms:
            if path == "metadata.name" and op == "=":
                return value
        return None

    def matches(self, obj: Mapping[str, Any]) -> bool:
        """Whether the object satisfies every term."""
        for path, op, value in self.terms:
            actual = _field_value(obj, path)
            if (actual == value) != (op == "="):
                return False
        return True
