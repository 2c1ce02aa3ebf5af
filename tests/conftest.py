"""Shared pytest configuration: every fixture comes from a plugin module in tests/support, one signature each."""

pytest_plugins = [
    "tests.support.k8s_fixtures",
    "tests.support.prometheus_fixtures",
    "tests.support.kafka_fixtures",
]
