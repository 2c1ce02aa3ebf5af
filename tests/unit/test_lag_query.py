"""build_lag_query: tenants' consumerGroup/topics must stay label values, whatever they contain.

A PromQL-string unquoter (Prometheus' lexer rules) checks the round trip; the
integration tests run the same hostile values through the real Prometheus.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice_operator.settings import Settings
from sluice_operator.sources.lag_query import (
    DEFAULT_LAG_TEMPLATE,
    LagTemplateError,
    build_lag_query,
    promql_escape,
    regex_quote,
    topics_regex,
    validate_lag_template,
)

HOSTILE = [
    'g"} or vector(1e9) or x{a="',
    'g"}) + on() vector(1) #',
    "back\\slash\\",
    '\\"',
    "line\nbreak",
    "tab\tand\rcr",
    "nul\x00bell\x07del\x7f",
    "quote'single`tick",
    "unicode é 漢 🚀",
    "replacement \ufffd char",
    "{group} {topics} {{ }}",
    "${group}",
    ".*",
]

_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def unquote(literal: str) -> str:
    """Decode a PromQL "..." or '...' literal the way Prometheus' lexer does (Go escapes)."""
    quote, body = literal[0], literal[1:-1]
    assert literal[-1] == quote and quote in "\"'"
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        assert ch != "\n", "raw newline ends a PromQL string"
        assert ch != quote, f"unescaped quote at {i} in {literal!r}"
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1]
        if esc in _SIMPLE:
            out.append(_SIMPLE[esc])
            i += 2
        elif esc == quote:
            out.append(quote)
            i += 2
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            out.append(chr(int(body[i + 2 : i + 2 + width], 16)))
            i += 2 + width
        else:
            raise AssertionError(f"unknown escape \\{esc} in {literal!r}")
    return "".join(out)


def split_default(query: str) -> tuple[str, str]:
    """The two string literals of a query built from the default template."""
    literal = r'"(?:[^"\\\n]|\\.)*"'
    match = re.fullmatch(
        rf"sum\(kafka_consumergroup_lag\{{consumergroup=({literal}),topic=~({literal})\}}\)", query
    )
    assert match, f"query changed shape: {query!r}"
    return unquote(match.group(1)), unquote(match.group(2))


def test_plain_values() -> None:
    query = build_lag_query(DEFAULT_LAG_TEMPLATE, "billing", ["orders", "payments"])
    assert query == 'sum(kafka_consumergroup_lag{consumergroup="billing",topic=~"orders|payments"})'


def test_topics_are_sorted_deduplicated_and_regex_quoted() -> None:
    query = build_lag_query(DEFAULT_LAG_TEMPLATE, "g", ["orders.v1", "a", "orders.v1"])
    assert query == 'sum(kafka_consumergroup_lag{consumergroup="g",topic=~"a|orders\\\\.v1"})'


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_group_stays_one_label_value(hostile: str) -> None:
    query = build_lag_query(DEFAULT_LAG_TEMPLATE, hostile, ["t"])
    group, regex = split_default(query)
    assert group == hostile
    assert regex == "t"
    assert "\n" not in query and "\ufffd" not in query


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_topic_matches_only_itself(hostile: str) -> None:
    query = build_lag_query(DEFAULT_LAG_TEMPLATE, "g", [hostile, "plain"])
    _, regex = split_default(query)
    assert re.fullmatch(regex, hostile)
    assert re.fullmatch(regex, "plain")
    assert not re.fullmatch(regex, hostile + "x")
    assert not re.fullmatch(regex, "anything-else")


@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1))
def test_escape_round_trips(value: str) -> None:
    for quote in "\"'":
        escaped = promql_escape(value, quote)
        assert all(0x20 <= ord(c) < 0x7F for c in escaped)  # printable ASCII only
        assert unquote(quote + escaped + quote) == value


@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), min_size=1), min_size=1),
       st.text(alphabet=st.characters(codec="utf-8")))
def test_topic_regex_matches_exactly_the_listed_topics(topics: list[str], other: str) -> None:
    pattern = topics_regex(topics)
    assert all(re.fullmatch(pattern, t, flags=re.DOTALL) for t in topics)
    assert bool(re.fullmatch(pattern, other, flags=re.DOTALL)) == (other in topics)


def test_regex_quote_matches_go_quotemeta() -> None:
    assert regex_quote(r"a.b+c*d?e(f)g|h[i]j{k}l^m$n\o-p") == r"a\.b\+c\*d\?e\(f\)g\|h\[i\]j\{k\}l\^m\$n\\o-p"


def test_single_quoted_template_escapes_single_quotes() -> None:
    template = "max(lag{{group='{group}', topic=~'{topics}'}})"
    query = build_lag_query(template, "it's", ["t"])
    assert query == "max(lag{group='it\\'s', topic=~'t'})"


def test_custom_template_keeps_the_admins_promql() -> None:
    template = 'max by (topic) (my_lag{{cg="{group}", t=~"{topics}", env="prod"}}) # {{not a field}}'
    query = build_lag_query(template, "g", ["t"])
    assert query == 'max by (topic) (my_lag{cg="g", t=~"t", env="prod"}) # {not a field}'


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        ('sum(lag{{cg="{grp}",t=~"{topics}"}})', "unknown field {grp}"),
        ('sum(lag{{cg="{}",t=~"{topics}"}})', "unknown field {}"),
        ('sum(lag{{cg="{group.__class__}",t=~"{topics}"}})', "unknown field"),
        ('sum(lag{{cg="{group!r}",t=~"{topics}"}})', "format spec"),
        ('sum(lag{{cg="{group:>9}",t=~"{topics}"}})', "format spec"),
        ('sum(lag{{cg="{group}"}})', "must use {topics}"),
        ('sum(lag{{t=~"{topics}"}})', "must use {group}"),
        ('sum(lag{{cg={group},t=~"{topics}"}})', 'inside a "..." PromQL string'),
        ('sum(lag{{cg=`{group}`,t=~"{topics}"}})', 'inside a "..." PromQL string'),
        ('sum(lag{{cg="x",t=~"{topics}"}}) # "{group}"', "comment"),
        ('sum(lag{cg="{group}",t=~"{topics}"})', "double PromQL's own braces"),
        ('sum(lag{{cg="{group}",t=~"{topics}"}}) {', "not a valid format string"),
    ],
)
def test_bad_templates_are_refused(template: str, complaint: str) -> None:
    with pytest.raises(LagTemplateError, match=re.escape(complaint)):
        validate_lag_template(template)
    with pytest.raises(LagTemplateError):
        build_lag_query(template, "g", ["t"])


def test_escape_inside_string_before_field_is_tracked() -> None:
    # The \" keeps the string open, so {group} is still inside it.
    query = build_lag_query('sum(lag{{cg="a\\"{group}",t=~"{topics}"}})', 'x"', ["t"])
    assert query == 'sum(lag{cg="a\\"x\\"",t=~"t"})'


@pytest.mark.parametrize(("group", "topics"), [("", ["t"]), ("g", []), ("g", [""])])
def test_empty_values_are_refused(group: str, topics: list[str]) -> None:
    with pytest.raises(LagTemplateError):
        build_lag_query(DEFAULT_LAG_TEMPLATE, group, topics)


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(LagTemplateError, match="surrogate"):
        build_lag_query(DEFAULT_LAG_TEMPLATE, "bad\ud800", ["t"])


def test_default_template_is_valid_and_matches_settings() -> None:
    validate_lag_template(DEFAULT_LAG_TEMPLATE)
    assert Settings.from_env({}).tenancy.lag_query_template == DEFAULT_LAG_TEMPLATE
