"""Safe PromQL for structured specs: a tenant's consumerGroup + topics in the admin's template.

Templates use Python ``str.format`` fields ``{group}`` and ``{topics}``, each INSIDE a quoted PromQL
string, with PromQL's own braces doubled::

    sum(kafka_consumergroup_lag{{consumergroup="{group}",topic=~"{topics}"}})

``{group}`` becomes the group name escaped for that string; ``{topics}`` becomes the regex ``t1|t2``
(Prometheus anchors it) of every topic quoted like Go's ``regexp.QuoteMeta``, then string-escaped.
Whatever a tenant writes stays a label value: it can neither close the string nor widen the regex.
Pure string work with no imports beyond the standard library, so settings can share the default.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

__all__ = [
    "DEFAULT_CONSUMPTION_TEMPLATE",
    "DEFAULT_LAG_TEMPLATE",
    "LagTemplateError",
    "build_lag_query",
    "promql_escape",
    "regex_quote",
    "topics_regex",
    "validate_lag_template",
]

# -- structured fields -> PromQL ----------------------------------------------------

#: kafka-exporter's consumer-lag metric summed over the selected topics' partitions.
DEFAULT_LAG_TEMPLATE = 'sum(kafka_consumergroup_lag{{consumergroup="{group}",topic=~"{topics}"}})'
#: The group's drain rate (msgs/s, DrainTime control): kafka-exporter's committed offsets, as a rate.
DEFAULT_CONSUMPTION_TEMPLATE = (
    'sum(rate(kafka_consumergroup_current_offset{{consumergroup="{group}",topic=~"{topics}"}}[1m]))'
)

_FIELDS = frozenset({"group", "topics"})
# Go regexp.QuoteMeta's set: what RE2 (Prometheus' regex engine) treats as special.
_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")
_SIMPLE_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class LagTemplateError(ValueError):
    """The admin's template or the tenant's values cannot make a safe query."""


def promql_escape(value: str, quote: str = '"') -> str:
    """Escape ``value`` for the inside of a PromQL string delimited by ``quote``.

    Printable ASCII passes through; backslash and the quote are escaped; every
    other character becomes ``\\x``/``\\u``/``\\U`` so the lexer never sees a raw
    newline or U+FFFD (which it rejects as invalid UTF-8).
    """
    if quote not in ('"', "'"):
        raise LagTemplateError(f"cannot escape for PromQL quote {quote!r}")
    out: list[str] = []
    for ch in value:
        code = ord(ch)
        if ch == quote:
            out.append("\\" + ch)
        elif ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif 0xD800 <= code <= 0xDFFF:
            raise LagTemplateError(f"{value!r} contains a lone surrogate, which is not valid text")
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def regex_quote(value: str) -> str:
    """Go's ``regexp.QuoteMeta``: ``value`` as an RE2 pattern matching only itself."""
    return "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in value)


def topics_regex(topics: Iterable[str]) -> str:
    """``a|b`` over sorted, de-duplicated, quoted topic names (stable, so caches share it)."""
    names = sorted(set(topics))
    if not names:
        raise LagTemplateError("at least one topic is needed")
    if any(not name for name in names):
        raise LagTemplateError("topic names must not be empty")
    return "|".join(regex_quote(name) for name in names)


def _field_quotes(template: str) -> list[tuple[str, str]]:
    """Each field of ``template`` with the PromQL quote it sits in ('' if none).

    Walks the literal text like PromQL's lexer: strings ("", '', ``) with
    backslash escapes (not in backticks), and ``#`` comments to end of line.
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        raise LagTemplateError(
            f"lag query template is not a valid format string ({err}); double PromQL's own braces: {{{{ }}}}"
        ) from None
    quote = ""
    comment = False
    escaped = False
    found: list[tuple[str, str]] = []
    for literal, field, spec, conversion in parts:
        for ch in literal:
            if comment:
                comment = ch != "\n"
            elif escaped:
                escaped = False
            elif quote:
                if ch == "\\" and quote != "`":
                    escaped = True
                elif ch == quote:
                    quote = ""
            elif ch in "\"'`":
                quote = ch
            elif ch == "#":
                comment = True
        if field is None:
            continue
        if field not in _FIELDS:
            raise LagTemplateError(
                f"lag query template has unknown field {{{field}}}; only {{group}} and {{topics}} "
                "exist (double PromQL's own braces: {{ and }})"
            )
        if spec or conversion:
            raise LagTemplateError(f"lag query template field {{{field}}} must not have a format spec")
        if comment or escaped:
            raise LagTemplateError(f"lag query template field {{{field}}} sits in a comment or escape")
        found.append((field, quote))
    return found


def validate_lag_template(template: str) -> None:
    """Raise :class:`LagTemplateError` unless ``template`` can only make safe queries.

    Both fields must appear, each inside a double- or single-quoted string.
    """
    found = _field_quotes(template)
    names = {field for field, _ in found}
    missing = sorted(_FIELDS - names)
    if missing:
        raise LagTemplateError(
            f"lag query template must use {', '.join('{' + m + '}' for m in missing)}"
        )
    for field, quote in found:
        if quote not in ('"', "'"):
            raise LagTemplateError(
                f'lag query template field {{{field}}} must sit inside a "..." PromQL string, '
                f'e.g. consumergroup="{{group}}"'
            )


def build_lag_query(template: str, consumer_group: str, topics: Iterable[str]) -> str:
    """Fill ``template`` with the escaped group and topic regex (see module docs)."""
    validate_lag_template(template)
    if not consumer_group:
        raise LagTemplateError("consumer group must not be empty")
    regex = topics_regex(topics)
    out: list[str] = []
    fields = iter(_field_quotes(template))
    for literal, field, _spec, _conv in string.Formatter().parse(template):
        out.append(literal)
        if field is None:
            continue
        name, quote = next(fields)
        value = consumer_group if name == "group" else regex
        out.append(promql_escape(value, quote))
    return "".join(out)
