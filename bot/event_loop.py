"""Which event loop the bot runs on (``EVENT_LOOP``): uvloop when it is installed, else asyncio's.

uvloop runs the same asyncio code with less CPU per socket read, write and callback.
``auto`` (the default) falls back to asyncio's loop where uvloop is not installed (it has no
Windows build); ``asyncio`` forces that loop; ``uvloop`` stops start-up if it is missing.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal, TypeVar

__all__ = [
    "EventLoopChoice",
    "LoopFactory",
    "describe",
    "loop_factories",
    "resolve",
    "run",
    "uvloop_installed",
]

EventLoopChoice = Literal["auto", "uvloop", "asyncio"]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

T = TypeVar("T")


def uvloop_installed() -> bool:
    """Whether uvloop can be imported here (checked without importing it)."""
    return importlib.util.find_spec("uvloop") is not None


def loop_factories() -> dict[str, LoopFactory]:
    """Every loop this interpreter can run the bot on, by its ``EVENT_LOOP`` name."""
    factories: dict[str, LoopFactory] = {"asyncio": asyncio.new_event_loop}
    if uvloop_installed():
        import uvloop  # noqa: PLC0415 - optional, and only wanted when it is installed

        factories["uvloop"] = uvloop.new_event_loop
    return factories


def resolve(choice: EventLoopChoice) -> str:
    """The loop ``choice`` means here: ``auto`` is uvloop when installed, else asyncio.

    Raises :class:`RuntimeError` for ``uvloop`` when it is not installed (the
    settings refuse that combination before this is reached).
    """
    if choice == "auto":
        return "uvloop" if uvloop_installed() else "asyncio"
    if choice == "uvloop" and not uvloop_installed():
        raise RuntimeError("EVENT_LOOP=uvloop but uvloop is not installed")
    return choice


def describe(choice: EventLoopChoice) -> str:
    """``uvloop 0.23.0`` or ``asyncio``: the loop ``choice`` gives, for logs and reports."""
    name = resolve(choice)
    if name == "asyncio":
        return name
    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:  # imported from a source tree rather than installed
        return name


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice) -> T:
    """Run ``main`` to completion on the loop ``choice`` gives, like :func:`asyncio.run`."""
    name = resolve(choice)
    # asyncio's loop through the Runner's default path, so that it is also set as
    # the thread's current loop exactly as asyncio.run does.
    factory = None if name == "asyncio" else loop_factories()[name]
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
