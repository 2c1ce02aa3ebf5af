"""Operator settings: defaults, validation messages, tenancy globs, and the README documents them all."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice_operator.settings import SETTINGS, Settings, SettingsError

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.tenancy.raw_query_namespaces == ("*",)
    assert settings.leader.enabled and settings.leader.lease_duration_seconds == 15
    assert settings.scope.watch_namespaces == ()


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SLUICE_PROMETHEUS_URL": "prometheus:9090"}, "SLUICE_PROMETHEUS_URL"),
        ({"SLUICE_LEASE_RENEW_SECONDS": "20"}, "must be below SLUICE_LEASE_DURATION_SECONDS"),
        ({"SLUICE_DEFAULT_INTERVAL_SECONDS": "soon"}, "expected a number"),
        ({"SLUICE_LEADER_ELECTION": "maybe"}, "expected true or false"),
        ({"SLUICE_LAG_QUERY_TEMPLATE": "sum(lag)"}, "{group} and {topics}"),
        ({"SLUICE_PROMETHEUS_ULR": "http://x"}, "unknown setting"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=None) as error:
        Settings.from_env(env)
    assert needle in str(error.value)


def test_raw_query_globs() -> None:
    settings = Settings.from_env({"SLUICE_RAW_QUERY_NAMESPACES": "platform, kafka-*"})
    assert settings.raw_query_allowed("platform") and settings.raw_query_allowed("kafka-eu")
    assert not settings.raw_query_allowed("tenant-a")
    assert not Settings.from_env({"SLUICE_RAW_QUERY_NAMESPACES": ""}).raw_query_allowed("platform")


def test_readme_documents_every_setting() -> None:
    text = README.read_text()
    missing = [s.env for s in SETTINGS if f"`{s.env}`" not in text]
    assert not missing, f"README lacks {missing}"
