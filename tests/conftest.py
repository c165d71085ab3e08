"""Shared pytest configuration: fixtures from the fakes are registered here."""

pytest_plugins: list[str] = ["tests.fakes.fake_segmind", "tests.fakes.fake_discord", "tests.pg"]
