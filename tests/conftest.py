"""Shared pytest configuration: fixtures from the fakes are registered here."""

pytest_plugins: list[str] = []
