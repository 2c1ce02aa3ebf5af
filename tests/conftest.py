"""Shared pytest configuration: fixture plugins from tests/support."""

pytest_plugins = ["tests.support.k8s_fixtures"]
