"""EVENT_LOOP: which loop ``python -m bot`` runs on, with and without uvloop installed."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Awaitable, Callable
from importlib.machinery import ModuleSpec

import pytest

from bot import event_loop
from bot.config import ConfigError, Settings, load_settings

uvloop = pytest.importorskip("uvloop", reason="uvloop is a dependency except on Windows")


def without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this interpreter look like one where uvloop is not installed (e.g. Windows)."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        return None if name == "uvloop" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


async def loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_auto_means_uvloop_where_it_is_installed() -> None:
    assert event_loop.resolve("auto") == "uvloop"
    assert event_loop.describe("auto") == f"uvloop {uvloop.__version__}"
    assert event_loop.run(loop_type(), "auto") is uvloop.Loop
    assert set(event_loop.loop_factories()) == {"asyncio", "uvloop"}


def test_auto_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    without_uvloop(monkeypatch)
    assert event_loop.resolve("auto") == "asyncio"
    assert event_loop.describe("auto") == "asyncio"
    assert set(event_loop.loop_factories()) == {"asyncio"}
    ran_on = event_loop.run(loop_type(), "auto")
    assert issubclass(ran_on, asyncio.BaseEventLoop)
    assert not issubclass(ran_on, uvloop.Loop)


def test_asyncio_can_be_forced_and_is_the_thread_s_loop_as_with_asyncio_run() -> None:
    async def current_is_running() -> bool:
        return asyncio.get_event_loop() is asyncio.get_running_loop()

    assert event_loop.resolve("asyncio") == "asyncio"
    assert not issubclass(event_loop.run(loop_type(), "asyncio"), uvloop.Loop)
    assert event_loop.run(current_is_running(), "asyncio")


def test_uvloop_without_uvloop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    without_uvloop(monkeypatch)
    with pytest.raises(RuntimeError, match="not installed"):
        event_loop.resolve("uvloop")


def test_the_setting_defaults_to_auto_and_reads_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "t")
    monkeypatch.setenv("SEGMIND_API_KEY", "k")
    monkeypatch.delenv("EVENT_LOOP", raising=False)
    assert load_settings(None).event_loop == "auto"
    for written, meant in (("UVLOOP", "uvloop"), (" asyncio ", "asyncio"), ("", "auto")):
        monkeypatch.setenv("EVENT_LOOP", written)
        assert load_settings(None).event_loop == meant


def test_a_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "t")
    monkeypatch.setenv("SEGMIND_API_KEY", "k")
    monkeypatch.setenv("EVENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="EVENT_LOOP is invalid"):
        load_settings(None)


def test_uvloop_asked_for_but_missing_stops_start_up_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without_uvloop(monkeypatch)
    monkeypatch.setenv("DISCORD_TOKEN", "t")
    monkeypatch.setenv("SEGMIND_API_KEY", "k")
    monkeypatch.setenv("EVENT_LOOP", "uvloop")
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert str(caught.value) == (
        "EVENT_LOOP is invalid: uvloop is not installed here; install it, or use auto or asyncio."
    )
    monkeypatch.setenv("EVENT_LOOP", "auto")
    assert load_settings(None).event_loop == "auto"


@pytest.mark.parametrize(("setting", "expected"), [("auto", "uvloop"), ("asyncio", "asyncio")])
def test_python_m_bot_serves_on_the_configured_loop(
    setting: str,
    expected: str,
    start_main: Callable[[Callable[[Settings], Awaitable[int]]], int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EVENT_LOOP", setting)
    served_on: list[type[asyncio.AbstractEventLoop]] = []

    async def serve(settings: Settings) -> int:
        served_on.append(type(asyncio.get_running_loop()))
        return 7

    assert start_main(serve) == 7
    assert issubclass(served_on[0], uvloop.Loop) is (expected == "uvloop")
