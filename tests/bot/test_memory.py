"""bot/memory.py: freed image-sized blocks go back to the OS instead of staying in glibc's heap."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import bot.__main__ as entry
from bot import memory
from bot.config import Settings

ROOT = Path(__file__).resolve().parents[2]

# In a fresh interpreter: free a 4 MiB block (glibc then raises its mmap threshold to
# 4 MiB), then allocate an image-sized 300 KiB body and print how many mapped blocks
# that added: 1 if it was mapped (freed straight back to the OS), 0 if it came from the heap.
PROBE = """
import ctypes, sys
from bot.memory import keep_large_blocks_mapped

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "fixed":
    assert keep_large_blocks_mapped()
big = bytearray(4 << 20)
del big
before = libc.mallinfo2().hblks
body = bytearray(300 << 10)
print(libc.mallinfo2().hblks - before)
"""


def has_mallinfo2() -> bool:
    try:
        ctypes.CDLL(None).mallinfo2  # noqa: B018 - glibc 2.33+
    except (OSError, AttributeError):
        return False
    return memory._glibc()


def mapped_blocks_added(mode: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True
    )
    return int(result.stdout)


@pytest.mark.skipif(not has_mallinfo2(), reason="needs glibc 2.33+ (mallinfo2)")
def test_image_sized_blocks_stay_mapped_after_a_larger_one_was_freed() -> None:
    assert mapped_blocks_added("default") == 0  # glibc's adjustment: from the heap
    assert mapped_blocks_added("fixed") == 1


def test_nothing_is_tried_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert memory.keep_large_blocks_mapped() is False


def test_python_m_bot_fixes_the_threshold_before_serving(
    start_main: Callable[[Callable[[Settings], Awaitable[int]]], int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(entry, "keep_large_blocks_mapped", lambda: calls.append("mallopt"))

    async def serve(settings: Settings) -> int:
        calls.append("serve")
        return 0

    assert start_main(serve) == 0
    assert calls == ["mallopt", "serve"]
