"""Shared pytest configuration: fixtures from tests/support are registered here."""
