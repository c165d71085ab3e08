"""Runtime settings, read from the environment and an optional ``.env`` file.

The names are fixed by DESIGN.md §2 because operators and outside tests rely on
them. Nothing is read at import time: ``main()`` calls :func:`load_settings`,
and tests build ``Settings(...)`` directly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.event_loop import EventLoopChoice, uvloop_installed

__all__ = ["ConfigError", "Settings", "load_settings"]

DEFAULT_BASE_URL = "https://api.segmind.com/v1"
DEFAULT_MODEL = "kandinsky2.1-txt2im"

_SECRET_FIELDS = ("discord_token", "segmind_api_key")


def _split_ids(value: object) -> object:
    """Accept ``"1, 2,3"`` (how people write it in .env) as well as real lists."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, int):
        return [value]
    return value


class Settings(BaseSettings):
    """Every setting the bot reads. Field names map to upper-case variables."""

    model_config = SettingsConfigDict(
        env_file=None,
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
    )

    discord_token: SecretStr
    segmind_api_key: SecretStr
    segmind_base_url: str = DEFAULT_BASE_URL
    segmind_model: str = DEFAULT_MODEL
    segmind_timeout: float = Field(default=120.0, gt=0, le=3600)
    segmind_max_attempts: int = Field(default=4, ge=1, le=10)
    segmind_retry_budget: float = Field(default=180.0, ge=0, le=3600)
    database_url: str = "sqlite:///data/imagine.db"
    default_guild_credits: int = Field(default=100, ge=0)
    max_concurrent_jobs: int = Field(default=4, ge=1, le=1000)
    max_queued_per_user: int = Field(default=3, ge=1, le=1000)
    image_memory_budget_mb: int = Field(default=16, ge=0, le=65536)
    segmind_rpm: int = Field(default=0, ge=0)
    # Unset: what the bot can make in 12 minutes at its measured rate (bot.pacing).
    max_waiting_images: int | None = Field(default=None, ge=1)
    owner_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    # Dollars: the owners hear once when the Segmind balance falls below it (0 = off).
    segmind_balance_alert: float = Field(default=1.0, ge=0)
    segmind_alert_channel_id: int | None = Field(default=None, gt=0)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    shutdown_grace_seconds: float = Field(default=30.0, ge=0, le=3600)
    health_port: int | None = Field(default=None, ge=1, le=65535)
    health_host: str = "127.0.0.1"
    shard_count: int | None = Field(default=None, ge=1)
    shard_ids: Annotated[list[int] | None, NoDecode] = None
    dev_guild_id: int | None = Field(default=None, gt=0)
    # Optional endpoints for a REST proxy in front of Discord, or the offline
    # test harness. Unset means discord.com and the gateway Discord hands out.
    discord_api_url: str | None = None
    discord_gateway_url: str | None = None
    guild_ready_timeout: float = Field(default=2.0, ge=0, le=60)
    event_loop: EventLoopChoice = "auto"

    @field_validator("owner_ids", "shard_ids", mode="before")
    @classmethod
    def _parse_id_list(cls, value: object) -> object:
        if value == "" or value is None:
            return None
        return _split_ids(value)

    @field_validator("owner_ids", mode="after")
    @classmethod
    def _owner_ids_default(cls, value: list[int] | None) -> list[int]:
        return value or []

    @field_validator("shard_ids", mode="after")
    @classmethod
    def _shard_ids_non_negative(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(shard < 0 for shard in value):
            raise ValueError("shard ids must be 0 or greater")
        return value

    @field_validator(
        "health_port",
        "shard_count",
        "dev_guild_id",
        "segmind_alert_channel_id",
        "max_waiting_images",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("discord_api_url", "discord_gateway_url", mode="before")
    @classmethod
    def _blank_url_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("event_loop", mode="before")
    @classmethod
    def _loop_any_case(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().lower() or "auto"
        return value

    @field_validator("event_loop", mode="after")
    @classmethod
    def _loop_installed(cls, value: EventLoopChoice) -> EventLoopChoice:
        if value == "uvloop" and not uvloop_installed():
            raise ValueError("uvloop is not installed here; install it, or use auto or asyncio")
        return value

    @field_validator("log_level", mode="after")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in logging.getLevelNamesMapping():
            raise ValueError("use DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator("discord_token", "segmind_api_key", mode="after")
    @classmethod
    def _non_blank_secret(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("segmind_base_url", mode="after")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("segmind_model", mode="after")
    @classmethod
    def _slug(cls, value: str) -> str:
        slug = value.strip().strip("/")
        if not slug or "/" in slug or " " in slug:
            raise ValueError("must be an endpoint slug such as kandinsky2.1-txt2im")
        return slug

    @field_validator("database_url", mode="after")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if not value.startswith(
            ("sqlite:///", "postgresql://", "postgres://", "postgresql+asyncpg://")
        ):
            raise ValueError(
                "use sqlite:///relative/path.db, sqlite:////absolute/path.db "
                "or postgresql://user:password@host/database"
            )
        return value

    @model_validator(mode="after")
    def _shards_consistent(self) -> Settings:
        if self.shard_ids is not None:
            if self.shard_count is None:
                raise ValueError("SHARD_IDS needs SHARD_COUNT (the total number of shards)")
            if any(shard >= self.shard_count for shard in self.shard_ids):
                raise ValueError("every id in SHARD_IDS must be below SHARD_COUNT")
        return self

    def secrets(self) -> tuple[str, ...]:
        """The secret values, so the log filter can redact them wherever they appear
        (the two secrets, and a database password inside ``DATABASE_URL``)."""
        values = [getattr(self, name).get_secret_value() for name in _SECRET_FIELDS]
        password = urlsplit(self.database_url).password
        if password:
            values += [password, unquote(password)]
        return tuple(dict.fromkeys(secret for secret in values if secret))


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and says how to fix it."""


def _describe(error: ValidationError) -> str:
    lines: list[str] = []
    for problem in error.errors():
        name = str(problem["loc"][0]).upper() if problem["loc"] else "Sharding"
        if problem["type"] == "missing":
            lines.append(f"{name} is not set: add it to the environment or to .env.")
        else:
            reason = str(problem["msg"]).removeprefix("Value error, ")
            lines.append(f"{name} is invalid: {reason}.")
    return "\n".join(dict.fromkeys(lines))


def load_settings(env_file: str | Path | None = ".env") -> Settings:
    """Read settings from the environment (and ``env_file`` when it exists).

    Raises :class:`ConfigError` with a short, secret-free message instead of a
    pydantic traceback.
    """
    path = Path(env_file) if env_file is not None else None
    try:
        return Settings(_env_file=path if path is not None and path.is_file() else None)  # type: ignore[call-arg]
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
