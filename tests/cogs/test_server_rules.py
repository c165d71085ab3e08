"""The server's own rules for /imagine: allowed channels and blocked words.

They are plain functions of the server's cached settings, checked before the queue is
asked for anything; these tests call them directly.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bot.guild_settings import GuildSettings
from bot.segmind import build_request
from cogs.imagine._cog import _blocked_word, server_rules_refusal

GUILD = 111_111_111_111_111_111
ART, OTHER, THREAD = 501, 502, 503


def blocked(words: tuple[str, ...], prompt: str, negative: str | None = None) -> str | None:
    request = build_request(prompt=prompt, negative_prompt=negative)
    return _blocked_word(GuildSettings(GUILD, blocked_words=words), request)


@pytest.mark.parametrize(
    ("words", "prompt", "expected"),
    [
        (("gore",), "lots of GORE here", "gore"),
        (("Gore",), "gore", "Gore"),  # named as the server wrote it
        (("gore",), "gorey details", None),  # whole words only
        (("gore",), "a gore-soaked knight", "gore"),
        (("blood", "blood bath"), "a Blood Bath", "blood bath"),  # the longer word is named
        (("c++",), "written in C++", "c++"),  # special characters are literal
        (("a.b",), "axb", None),
        ((), "anything at all", None),
    ],
)
def test_blocked_words(words: tuple[str, ...], prompt: str, expected: str | None) -> None:
    assert blocked(words, prompt) == expected


def test_the_negative_prompt_counts_too() -> None:
    assert blocked(("gore",), "a calm lake", negative="no gore") == "gore"


def test_a_long_list_is_searched_whole() -> None:
    words = tuple(f"word{n}x" for n in range(500))
    assert blocked(words, "a cat and word499x") == "word499x"
    assert blocked(words, "a cat and word500x") is None


def channel(channel_id: int, parent_id: int | None = None) -> Any:
    return SimpleNamespace(id=channel_id, parent_id=parent_id)


def refusal(where: Any, prompt: str, settings: GuildSettings) -> str | None:
    return server_rules_refusal(settings, where, build_request(prompt=prompt))


def test_an_allowed_channel_and_a_clean_prompt_pass() -> None:
    settings = GuildSettings(GUILD, allowed_channel_ids=(ART,), blocked_words=("gore",))
    assert refusal(channel(ART), "a cat", settings) is None


def test_a_channel_outside_the_allowed_list_is_refused_with_where_to_go() -> None:
    text = refusal(channel(OTHER), "a cat", GuildSettings(GUILD, allowed_channel_ids=(ART,)))
    assert text == f"Image generation is turned off in this channel. Try <#{ART}>."


def test_a_thread_counts_as_its_channel() -> None:
    settings = GuildSettings(GUILD, allowed_channel_ids=(ART,))
    assert refusal(channel(THREAD, ART), "a cat", settings) is None


def test_a_blocked_word_is_refused_saying_nothing_was_charged() -> None:
    text = refusal(channel(ART), "so much gore", GuildSettings(GUILD, blocked_words=("gore",)))
    assert text is not None
    assert "“gore”" in text and "Nothing was charged" in text
