"""The bot's services exist once ``setup_hook`` built them: reading one earlier is a clear error."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from bot.app import ImagineBot
from bot.config import Settings

SERVICES = ("storage", "ledger", "state", "recovery", "segmind", "jobs", "insight")


@pytest.mark.parametrize("name", SERVICES)
async def test_a_service_read_before_setup_hook_says_where_it_comes_from(name: str) -> None:
    settings = Settings(discord_token=SecretStr("t"), segmind_api_key=SecretStr("k"))
    bot = ImagineBot(settings)
    with pytest.raises(RuntimeError, match=f"bot.{name} is created in setup_hook"):
        getattr(bot, name)
    assert not bot.accepting_jobs
