"""Settings: defaults, parsing of operator-friendly values, and clear errors."""

from __future__ import annotations

import pytest

from bot.config import ConfigError, Settings, load_settings


def make(**overrides: object) -> Settings:
    values: dict[str, object] = {"discord_token": "t0ken", "segmind_api_key": "k3y"}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def test_defaults_follow_design() -> None:
    settings = make()
    assert settings.segmind_base_url == "https://api.segmind.com/v1"
    assert settings.segmind_model == "kandinsky2.1-txt2im"
    assert settings.segmind_timeout == 120
    assert settings.database_url == "sqlite:///data/imagine.db"
    assert settings.default_guild_credits == 100
    assert settings.max_concurrent_jobs == 4
    assert settings.max_queued_per_user == 3
    assert settings.segmind_rpm == 0
    assert settings.owner_ids == []
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    assert settings.shutdown_grace_seconds == 30
    assert settings.health_port is None
    assert settings.health_host == "127.0.0.1"
    assert settings.shard_count is None
    assert settings.shard_ids is None
    assert settings.dev_guild_id is None


def test_comma_separated_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "t")
    monkeypatch.setenv("SEGMIND_API_KEY", "k")
    monkeypatch.setenv("OWNER_IDS", "12, 34,56")
    monkeypatch.setenv("SHARD_IDS", "0,1")
    monkeypatch.setenv("SHARD_COUNT", "4")
    monkeypatch.setenv("HEALTH_PORT", "")
    settings = load_settings(None)
    assert settings.owner_ids == [12, 34, 56]
    assert settings.shard_ids == [0, 1]
    assert settings.health_port is None


def test_missing_secrets_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    message = str(caught.value)
    assert "DISCORD_TOKEN is not set" in message
    assert "SEGMIND_API_KEY is not set" in message


def test_invalid_value_is_named_without_echoing_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "super-secret-token")
    monkeypatch.setenv("SEGMIND_API_KEY", "super-secret-key")
    monkeypatch.setenv("SEGMIND_TIMEOUT", "soon")
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    message = str(caught.value)
    assert "SEGMIND_TIMEOUT is invalid" in message
    assert "LOG_LEVEL is invalid" in message
    assert "super-secret" not in message


def test_env_file_is_read(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("SEGMIND_API_KEY", raising=False)
    env = tmp_path / ".env"  # type: ignore[operator]
    env.write_text("DISCORD_TOKEN=from-file\nSEGMIND_API_KEY=key-file\nSEGMIND_RPM=5\n")
    settings = load_settings(env)
    assert settings.discord_token.get_secret_value() == "from-file"
    assert settings.segmind_rpm == 5
    assert set(settings.secrets()) == {"from-file", "key-file"}


def test_secrets_hidden_in_repr() -> None:
    settings = make(discord_token="abc-secret", segmind_api_key="def-secret")
    assert "abc-secret" not in repr(settings)
    assert "def-secret" not in str(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("database_url", "mysql://x"),
        ("segmind_base_url", "ftp://x"),
        ("segmind_model", "a/b"),
        ("max_concurrent_jobs", 0),
        ("shard_ids", "-1"),
    ],
)
def test_rejects_bad_values(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=name):
        make(**{name: value})


def test_shard_ids_need_a_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "t")
    monkeypatch.setenv("SEGMIND_API_KEY", "k")
    monkeypatch.setenv("SHARD_IDS", "0,1")
    monkeypatch.delenv("SHARD_COUNT", raising=False)
    with pytest.raises(ConfigError, match="SHARD_IDS needs SHARD_COUNT"):
        load_settings(None)
    monkeypatch.setenv("SHARD_COUNT", "2")
    assert load_settings(None).shard_ids == [0, 1]
    monkeypatch.setenv("SHARD_IDS", "0,2")
    with pytest.raises(ConfigError, match="below SHARD_COUNT"):
        load_settings(None)


def test_database_password_counts_as_a_secret() -> None:
    settings = make(database_url="postgresql://bot:p%40ss-w0rd@db.internal:5432/imagine")
    assert "p%40ss-w0rd" in settings.secrets()
    assert "p@ss-w0rd" in settings.secrets()
    assert make(database_url="postgresql+asyncpg://bot@db/imagine").secrets() == ("t0ken", "k3y")


def test_segmind_balance_watch_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make()
    assert settings.segmind_balance_alert == 1.0
    assert settings.segmind_alert_channel_id is None
    monkeypatch.setenv("DISCORD_TOKEN", "t")
    monkeypatch.setenv("SEGMIND_API_KEY", "k")
    monkeypatch.setenv("SEGMIND_BALANCE_ALERT", "2.5")
    monkeypatch.setenv("SEGMIND_ALERT_CHANNEL_ID", "")
    loaded = load_settings(None)
    assert (loaded.segmind_balance_alert, loaded.segmind_alert_channel_id) == (2.5, None)
    monkeypatch.setenv("SEGMIND_ALERT_CHANNEL_ID", "123456789012345678")
    assert load_settings(None).segmind_alert_channel_id == 123456789012345678
    monkeypatch.setenv("SEGMIND_BALANCE_ALERT", "-1")
    with pytest.raises(ConfigError, match="SEGMIND_BALANCE_ALERT"):
        load_settings(None)
