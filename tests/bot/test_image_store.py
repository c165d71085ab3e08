"""bot/image_store.py: images in memory up to a budget, in temporary files beyond it."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from bot.image_store import ImageStore
from bot.segmind import GeneratedImage


def listing(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def image(size: int, seed: int = 1) -> GeneratedImage:
    return GeneratedImage(bytes([seed % 256]) * size, "JPEG", 512, 512, seed)


async def test_images_stay_in_memory_within_the_budget(tmp_path: Path) -> None:
    store = ImageStore(memory_budget=1000, directory=tmp_path)
    first = await store.hold(image(600))
    second = await store.hold(image(400, seed=2))
    assert not first.on_disk and not second.on_disk
    assert store.bytes_in_memory == 1000
    assert listing(tmp_path) == []
    assert await second.read() == bytes([2]) * 400
    first.release()
    second.release()
    assert store.bytes_in_memory == 0


async def test_beyond_the_budget_images_go_to_files_and_come_back_intact(tmp_path: Path) -> None:
    store = ImageStore(memory_budget=1000, directory=tmp_path)
    kept = await store.hold(image(800))
    spilled = await store.hold(image(300, seed=7))
    assert not kept.on_disk and spilled.on_disk
    assert store.files == 1 and store.bytes_in_memory == 800
    assert spilled.size == 300 and spilled.seed == 7 and spilled.format == "JPEG"
    assert await spilled.read() == bytes([7]) * 300
    with spilled.open() as file:
        assert file.read() == bytes([7]) * 300
    [folder] = listing(tmp_path)
    assert [f.suffix for f in listing(folder)] == ["", ".img"]  # the lock file, the image
    spilled.release()
    spilled.release()  # idempotent
    assert store.files == 0 and [f.name for f in listing(folder)] == [".lock"]
    kept.release()
    store.close()
    assert listing(tmp_path) == []


async def test_released_memory_makes_room_again(tmp_path: Path) -> None:
    store = ImageStore(memory_budget=500, directory=tmp_path)
    first = await store.hold(image(500))
    first.release()
    again = await store.hold(image(500))
    assert not again.on_disk


async def test_a_budget_of_zero_keeps_every_image_in_a_file(tmp_path: Path) -> None:
    store = ImageStore(memory_budget=0, directory=tmp_path)
    held = [await store.hold(image(10, seed=n)) for n in range(3)]
    assert all(item.on_disk for item in held)
    store.close()  # leftovers go with the folder
    assert listing(tmp_path) == []


async def test_an_image_in_memory_is_handed_over_to_its_upload(tmp_path: Path) -> None:
    # The upload's BytesIO must own the bytes alone, or aiohttp copies them.
    store = ImageStore(memory_budget=1000, directory=tmp_path)
    held = await store.hold(image(100))
    with held.open() as file:
        assert file.read() == bytes([1]) * 100
    with pytest.raises(RuntimeError, match="already handed"):
        held.open()
    held.release()
    assert store.bytes_in_memory == 0


async def test_a_disk_that_refuses_the_file_keeps_the_image_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full_disk(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    store = ImageStore(memory_budget=0, directory=tmp_path)
    held = await store.hold(image(50))
    assert not held.on_disk
    assert await held.read() == bytes([1]) * 50
    assert "keeping it in memory" in caplog.text
    held.release()
    assert store.bytes_in_memory == 0


def test_a_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        ImageStore(memory_budget=-1)


async def test_folders_left_by_a_crashed_process_are_swept_live_ones_kept(tmp_path: Path) -> None:
    # A crashed store: its folder and lock file remain, but nobody holds the lock.
    crashed = tmp_path / "imagine-bot-images-crashed"
    crashed.mkdir()
    (crashed / ".lock").touch()
    (crashed / "1.img").write_bytes(b"left over")
    # A live store in another process: it holds its lock.
    live = ImageStore(memory_budget=0, directory=tmp_path)
    await live.hold(image(10))
    [live_folder] = [f for f in listing(tmp_path) if f != crashed]
    unrelated = tmp_path / "someone-elses"
    unrelated.mkdir()

    newcomer = ImageStore(memory_budget=0, directory=tmp_path)
    await newcomer.hold(image(10))

    folders = listing(tmp_path)
    assert crashed not in folders  # swept
    assert live_folder in folders and unrelated in folders  # kept
    assert len(folders) == 3  # the live one, the unrelated one, the newcomer's
    live.close()
    newcomer.close()
    assert listing(tmp_path) == [unrelated]


async def test_a_folder_without_a_lock_file_is_not_swept(tmp_path: Path) -> None:
    foreign = tmp_path / "imagine-bot-images-foreign"
    foreign.mkdir()
    store = ImageStore(memory_budget=0, directory=tmp_path)
    await store.hold(image(10))
    assert foreign in listing(tmp_path)
    store.close()


async def test_images_arriving_together_share_one_folder(tmp_path: Path) -> None:
    store = ImageStore(memory_budget=0, directory=tmp_path)
    held = await asyncio.gather(*(store.hold(image(10, seed=n)) for n in range(5)))
    assert all(item.on_disk for item in held)
    [folder] = listing(tmp_path)
    assert len([f for f in listing(folder) if f.suffix == ".img"]) == 5
    store.close()


async def test_a_folder_that_cannot_be_made_keeps_the_image_in_memory(tmp_path: Path) -> None:
    store = ImageStore(memory_budget=0, directory=tmp_path / "missing" / "parent")
    held = await store.hold(image(20))
    assert not held.on_disk
    assert await held.read() == bytes([1]) * 20
