"""The server's own rules for /imagine: allowed channels and blocked words.

They run inside the reservation's transaction (``NewJob.admit``), so they are
plain functions of the settings; these tests call them directly.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bot.credits import GuildSettings
from bot.segmind import build_request
from cogs.imagine._cog import _blocked_word, _ServerRules

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


def channel(channel_id: int, parent_id: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(id=channel_id, parent_id=parent_id)


def test_rules_remember_the_settings_they_were_shown() -> None:
    rules = _ServerRules(channel(ART), build_request(prompt="a cat"))  # type: ignore[arg-type]
    settings = GuildSettings(GUILD, allowed_channel_ids=(ART,))
    assert rules(settings) is None
    assert rules.settings == settings


def test_a_channel_outside_the_allowed_list_is_refused_with_where_to_go() -> None:
    rules = _ServerRules(channel(OTHER), build_request(prompt="a cat"))  # type: ignore[arg-type]
    refusal = rules(GuildSettings(GUILD, allowed_channel_ids=(ART,)))
    assert refusal == f"Image generation is turned off in this channel. Try <#{ART}>."


def test_a_thread_counts_as_its_channel() -> None:
    rules = _ServerRules(channel(THREAD, ART), build_request(prompt="a cat"))  # type: ignore[arg-type]
    assert rules(GuildSettings(GUILD, allowed_channel_ids=(ART,))) is None


def test_a_blocked_word_is_refused_saying_nothing_was_charged() -> None:
    rules = _ServerRules(channel(ART), build_request(prompt="so much gore"))  # type: ignore[arg-type]
    refusal = rules(GuildSettings(GUILD, blocked_words=("gore",)))
    assert refusal is not None
    assert "“gore”" in refusal and "Nothing was charged" in refusal
